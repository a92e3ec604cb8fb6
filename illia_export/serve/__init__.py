"""Online serving of an artifact over the KServe open inference protocol (v2, REST).

``illia-export serve ARTIFACT`` serves one :class:`~illia_export.serve.model.IlliaModel`.
Modules, one job each: ``protocol`` (v2 JSON <-> checked numpy, pure), ``binary`` (the binary
tensor data extension), ``batching`` (merging concurrent requests), ``model`` (decode, batch,
encode around a Predictor), ``wire`` (responses and JSON), ``http`` (connections, limits,
timeouts), ``app`` (the route table), ``server`` (wiring, event loop, graceful shutdown).
Only ``http``/``wire`` need the ``serve`` extra (httptools, orjson), and only when serving.
"""
