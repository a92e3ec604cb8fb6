"""Online serving of an artifact over the KServe open inference protocol (v2).

``illia-export serve ARTIFACT`` runs kserve's ModelServer with one :class:`~illia_export.serve.model.IlliaModel`.
Modules, one job each: ``protocol`` (v2 JSON <-> checked numpy, pure), ``batching`` (merging
concurrent requests), ``model`` (the kserve Model around a Predictor), ``server`` (building and
running the ModelServer). Only ``model`` and ``server`` import kserve, and only when serving.
"""
