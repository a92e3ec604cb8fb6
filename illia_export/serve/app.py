"""The v2 REST routes of ``illia-export serve``, and nothing else.

Why a fixed route table: a server reachable by anyone must answer only what is documented
(docs/scaling.md, "Online serving"). There is no model repository API (no load/unload over
HTTP: one request could otherwise take the model down), no v1 protocol and no metrics
endpoint; anything else is a 404 (405 for a known path with the wrong method) with the
documented ``{"error": ...}`` body.

Routes: ``GET /v2``, ``GET /v2/health/live``, ``GET /v2/health/ready``,
``GET /v2/models/NAME``, ``GET /v2/models/NAME/ready``, ``POST /v2/models/NAME/infer``.
Readiness is false (503) while the server stops, or when the model is not ready.
"""

from __future__ import annotations

from http import HTTPStatus

from illia_export import __version__
from illia_export.errors import IlliaExportError
from illia_export.serve import binary, wire
from illia_export.serve.http import Request
from illia_export.serve.model import ClientError, IlliaModel
from illia_export.serve.wire import Response, error_response, json_response

#: What ``GET /v2`` lists: the binary tensor data extension is implemented (``binary``).
EXTENSIONS = ["binary_tensor_data"]


class V2App:
    """Dispatches requests to one :class:`IlliaModel`.

    Args:
        model: the loaded, ready model.
        stopping: a callable saying whether the server is shutting down (readiness false).
    """

    def __init__(self, model: IlliaModel, stopping=lambda: False) -> None:
        self.model = model
        self.stopping = stopping
        prefix = f"/v2/models/{model.name}"
        self._routes = {
            ("GET", "/v2"): self._server_metadata,
            ("GET", "/v2/health/live"): self._live,
            ("GET", "/v2/health/ready"): self._ready,
            ("GET", prefix): self._model_metadata,
            ("GET", prefix + "/ready"): self._model_ready,
            ("POST", prefix + "/infer"): self._infer,
        }
        self._paths: dict[str, list[str]] = {}
        for method, path in self._routes:
            self._paths.setdefault(path, []).append(method)

    def is_ready(self) -> bool:
        return bool(self.model.ready) and not self.stopping()

    async def __call__(self, request: Request) -> Response:
        method = "GET" if request.method == "HEAD" else request.method
        handler = self._routes.get((method, request.path))
        if handler is None:
            return self._not_found(request)
        return await handler(request)

    # ------------------------------------------------------------- routes
    async def _server_metadata(self, request: Request) -> Response:
        return json_response({"name": "illia-export", "version": __version__, "extensions": EXTENSIONS})

    async def _live(self, request: Request) -> Response:
        return json_response({"live": True})

    async def _ready(self, request: Request) -> Response:
        ready = self.is_ready()
        return json_response({"ready": ready}, 200 if ready else 503)

    async def _model_ready(self, request: Request) -> Response:
        ready = self.is_ready()
        return json_response({"name": self.model.name, "ready": ready}, 200 if ready else 503)

    async def _model_metadata(self, request: Request) -> Response:
        m = self.model
        return json_response({
            "name": m.name,
            "versions": [],
            "platform": f"illia-export_{m.predictor.manifest.format}",
            "inputs": m.get_input_types(),
            "outputs": m.get_output_types(),
            "parameters": m.metadata_parameters(),
        })

    async def _infer(self, request: Request) -> Response:
        if not self.model.ready:  # while stopping, requests in flight are still answered
            return error_response(HTTPStatus.SERVICE_UNAVAILABLE, f"model {self.model.name!r} is not ready")
        if request.headers.get("content-encoding", "identity").lower() not in ("identity", ""):
            return error_response(HTTPStatus.UNSUPPORTED_MEDIA_TYPE,
                                  f"Content-Encoding {request.headers['content-encoding']!r} is not supported; "
                                  "send an uncompressed body")
        try:
            json_part, raw = binary.split_body(request.body, request.headers.get(binary.HEADER))
        except IlliaExportError as exc:
            return error_response(400, " ".join(str(exc).split()))
        try:
            document = wire.loads(json_part)
        except ValueError as exc:
            return error_response(400, f"malformed JSON in the request body: {' '.join(str(exc).split())}")
        try:
            response, raw_out = await self.model.infer(document, raw)
        except ClientError as exc:
            return error_response(exc.status, exc.message)
        body = wire.dumps(response)
        if not raw_out and not any("parameters" in o for o in response["outputs"]):
            return Response(200, body)
        headers = {"inference-header-content-length": str(len(body))}
        return Response(200, body + raw_out, "application/octet-stream", headers)

    # ------------------------------------------------------------ errors
    def _not_found(self, request: Request) -> Response:
        path = request.path
        if path in self._paths:
            allowed = ", ".join(self._paths[path])
            return error_response(HTTPStatus.METHOD_NOT_ALLOWED, f"{request.method} is not allowed on {path} (use {allowed})",
                                  {"allow": allowed})
        name = self.model.name
        if path.startswith("/v1/"):
            why = f"the v1 protocol is not served; send v2 requests: POST /v2/models/{name}/infer"
        elif path.startswith("/v2/repository"):
            why = "the model repository API (load/unload) is not served; the model is fixed at start-up"
        elif path.startswith("/v2/models/") and "/versions/" in path:
            why = f"this server has no model versions; use /v2/models/{name}/..."
        elif path.startswith("/v2/models/"):
            other = path[len("/v2/models/"):].split("/", 1)[0]
            why = (f"model {other!r} is not served here (this server serves {name!r})" if other != name
                   else f"no such route; the model's routes are GET /v2/models/{name}, "
                        f"GET /v2/models/{name}/ready, POST /v2/models/{name}/infer")
        else:
            why = ("no such route; this server answers GET /v2, /v2/health/live, /v2/health/ready, "
                   f"/v2/models/{name}, /v2/models/{name}/ready and POST /v2/models/{name}/infer")
        return error_response(HTTPStatus.NOT_FOUND, why)


def access_line(request: Request, response: Response) -> str:
    """One log line per answered request: peer, method, path, status, body sizes."""
    return (f"illia-export: {request.peer} {request.method} {request.path} {response.status} "
            f"in={len(request.body)} out={len(response.body)}")

