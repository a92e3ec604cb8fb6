"""Build and run the kserve ModelServer for one artifact (``illia-export serve``).

Everything HTTP is kserve's: its FastAPI app, its v2 routes, health and readiness, its
uvicorn server and its graceful shutdown (SIGTERM/SIGINT: stop accepting, let in-flight
requests finish, then exit). Three small extensions of kserve's app, each because kserve
cannot do it as is:

* the listening address: kserve's REST server always binds ``0.0.0.0``; ``--host``
  (default ``127.0.0.1``) keeps a development server off the network, so :class:`_ModelServer`
  sets it on kserve's uvicorn config before serving;
* ``GET /v2/models/NAME`` adds ``parameters`` (task, limits, the manifest as a JSON string):
  kserve's metadata response model has no such field and drops it;
* a body that is not a valid v2 request (malformed JSON, missing ``inputs``, wrong types) is
  a 400 naming the problem, where FastAPI would answer 422.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from typing import Any

from illia_export.serve.protocol import Limits


@dataclass
class ServeOptions:
    """What ``illia-export serve`` was asked for."""

    artifact: str
    name: str
    host: str = "127.0.0.1"
    port: int = 8000
    samples: int = 32
    max_samples: int = 1024
    strategy: str = "fresh"
    seed: int | None = None
    max_batch_size: int = 256
    max_latency_ms: float = 0.0
    threads: int | None = None
    device: str = "cpu"
    backend_options: dict[str, Any] = field(default_factory=dict)


def build_model(options: ServeOptions):
    """Load the artifact (with warmup) and wrap it in a ready :class:`IlliaModel`."""
    from illia_export.errors import StrategyError
    from illia_export.runtime import load

    load_options: dict[str, Any] = dict(options.backend_options, warmup=True)
    if options.threads is not None:
        load_options["threads"] = options.threads
    predictor = load(options.artifact, device=options.device, **load_options)
    strategies = ("fresh", "bank") + (("local",) if predictor.manifest.local is not None else ())
    if options.strategy not in strategies:
        raise StrategyError(
            f"--strategy {options.strategy} is not available for {options.artifact} (it supports {list(strategies)})"
        )
    limits = Limits(options.samples, options.max_samples, options.strategy, strategies)
    from illia_export.serve.model import IlliaModel

    model = IlliaModel(
        options.name,
        predictor,
        limits,
        seed=options.seed,
        max_batch_size=options.max_batch_size,
        max_latency_ms=options.max_latency_ms,
    )
    model.load()
    return model


def _extend_app(app, model) -> None:
    """Our metadata route and the 400 for undecodable bodies, on kserve's app (registered
    before kserve's own routes, so this metadata route is the one that matches)."""
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import JSONResponse
    from kserve.errors import ModelNotFound

    async def model_metadata(model_name: str) -> dict[str, Any]:
        if model_name != model.name:
            raise ModelNotFound(model_name)
        return {
            "name": model.name,
            "versions": [],
            "platform": f"illia-export_{model.predictor.manifest.format}",
            "inputs": model.get_input_types(),
            "outputs": model.get_output_types(),
            "parameters": model.metadata_parameters(),
        }

    async def bad_body(_request, exc: RequestValidationError) -> JSONResponse:
        problems = []
        for err in exc.errors():
            loc = [str(p) for p in err.get("loc", ()) if p != "body"]
            if err.get("type") == "json_invalid":
                detail = (err.get("ctx") or {}).get("error", "")
                problems.append(f"malformed JSON at character {loc[-1] if loc else '?'}" + (f" ({detail})" if detail else ""))
            elif loc and loc[0] == "bytes":  # the raw-bytes alternative of kserve's body type; not for JSON
                continue
            else:
                where = ".".join(p for p in loc if p != "InferenceRequest")
                problems.append(f"{where or 'body'}: {err.get('msg', 'invalid')}")
        return JSONResponse(status_code=400, content={"error": "invalid v2 inference request: " + "; ".join(problems[:5])})

    app.add_api_route("/v2/models/{model_name}", model_metadata, methods=["GET"])
    app.add_exception_handler(RequestValidationError, bad_body)
    app.add_middleware(JsonUnlessBinary)


class JsonUnlessBinary:
    """ASGI middleware: an inference request without the binary-data extension's
    ``inference-header-content-length`` header is JSON, whatever its content type.

    FastAPI picks kserve's raw-bytes body type for any non-JSON content type, so a plain
    ``curl -d '{...}'`` (``application/x-www-form-urlencoded``) would be refused with a message
    about binary tensors.
    """

    def __init__(self, app) -> None:
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope.get("type") == "http" and scope.get("method") == "POST" and scope.get("path", "").endswith("/infer"):
            headers = [(k, v) for k, v in scope.get("headers", [])]
            names = {k.lower() for k, _ in headers}
            if b"inference-header-content-length" not in names:
                kept = [(k, v) for k, v in headers if k.lower() != b"content-type"]
                scope = dict(scope, headers=[*kept, (b"content-type", b"application/json")])
        await self.app(scope, receive, send)


def _model_server_class():
    from illia_export.serve._kserve import import_kserve

    kserve = import_kserve()
    import asyncio

    from kserve.constants.constants import FASTAPI_APP_IMPORT_STRING
    from kserve.protocol.rest.server import RESTServer

    class _ModelServer(kserve.ModelServer):
        """kserve's ModelServer, REST only, bound to ``host`` (kserve's always binds 0.0.0.0).

        ``start`` is kserve's single-worker path with the host set on the uvicorn config;
        signal handling and shutdown are kserve's and uvicorn's."""

        def __init__(self, host: str, **kwargs: Any) -> None:
            super().__init__(**kwargs)
            self.host = host

        def start(self, models) -> None:
            self._register_and_check_atleast_one_model_is_ready(models)
            self._rest_server = RESTServer(
                FASTAPI_APP_IMPORT_STRING,
                self.dataplane,
                self.model_repository_extension,
                self.http_port,
                access_log_format=self.access_log_format,
                workers=1,
                grace_period=self.grace_period,
                event_loop=self.event_loop,
                timeout_keep_alive=self.timeout_keep_alive,
            )
            self._rest_server.config.host = self.host
            self.servers.append(self._rest_server.start())
            self.setup_event_loop()
            self.register_signal_handler()
            asyncio.run(self._serve())

    return _ModelServer


def serve(options: ServeOptions) -> int:
    """Load, then serve until SIGTERM/SIGINT; returns 0 after a graceful stop."""
    model = build_model(options)
    server_class = _model_server_class()
    from kserve import model_server

    _extend_app(model_server.app, model)
    server = server_class(
        host=options.host,
        http_port=options.port,
        enable_grpc=False,
        enable_latency_logging=False,
        grace_period=30,
    )
    print(
        f"illia-export: serving {options.name!r} ({model.predictor!r}) on http://{options.host}:{options.port} "
        f"(KServe v2: POST /v2/models/{options.name}/infer)",
        file=sys.stderr,
        flush=True,
    )
    server.start([model])
    stats = model.batcher.stats
    print(
        f"illia-export: stopped after {stats.requests} requests in {stats.calls} calls "
        f"({stats.merged_calls} merged)",
        file=sys.stderr,
        flush=True,
    )
    return 0
