"""Build and run the server for one artifact (``illia-export serve``).

The pieces: ``http`` (connections, limits, timeouts), ``app`` (the v2 routes), ``model``
(decode, batch, encode). This module loads the artifact, wires them together, runs the event
loop (uvloop when installed) and stops gracefully on SIGTERM/SIGINT: stop accepting, answer
the requests that have started (up to ``grace`` seconds), then exit 0.

Why not kserve's ModelServer (used up to 0.1): at S=32 a 30-line FastAPI app around the same
predictor served 1.2-2.0x its requests/s (kserve's FastAPI/pydantic request path, three log
lines per request), and its stack could not bound a connection's phases (issue #22: slow
bodies, idle sockets, no body limit, an unauthenticated unload route).
"""

from __future__ import annotations

import asyncio
import signal
import sys
from dataclasses import dataclass, field
from typing import Any

from illia_export.serve.http import HttpLimits
from illia_export.serve.protocol import Limits

LOG_MODES = ("off", "one-line")


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
    log_requests: str = "one-line"
    http: HttpLimits = field(default_factory=HttpLimits)
    grace: float = 30.0


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


def _request_logger(mode: str):
    if mode == "off":
        return None
    from illia_export.serve.app import access_line

    write = sys.stderr.write

    def log(request, response) -> None:
        write(access_line(request, response) + "\n")

    return log


async def _serve(options: ServeOptions, model) -> None:
    from illia_export.serve.app import V2App
    from illia_export.serve.http import HttpServer

    stop = asyncio.Event()
    state = {"stopping": False}
    app = V2App(model, stopping=lambda: state["stopping"])
    server = HttpServer(app, options.http, log=_request_logger(options.log_requests))
    try:
        await server.start(options.host, options.port)
    except OSError as exc:
        from illia_export.errors import InputError

        raise InputError(f"cannot listen on {options.host}:{options.port}: {exc.strerror or exc} (pick another --port)") from exc
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    print(
        f"illia-export: serving {options.name!r} ({model.predictor!r}) on http://{options.host}:{options.port} "
        f"(KServe v2: POST /v2/models/{options.name}/infer)",
        file=sys.stderr,
        flush=True,
    )
    await stop.wait()
    state["stopping"] = True
    print("illia-export: stopping (finishing requests in flight)", file=sys.stderr, flush=True)
    await server.shutdown(options.grace)
    model.stop()


def serve(options: ServeOptions) -> int:
    """Load, then serve until SIGTERM/SIGINT; returns 0 after a graceful stop."""
    model = build_model(options)
    try:
        import uvloop

        runner = uvloop.run
    except ImportError:  # plain asyncio works, a little slower
        runner = asyncio.run
    runner(_serve(options, model))
    stats = model.batcher.stats
    print(
        f"illia-export: stopped after {stats.requests} requests in {stats.calls} calls "
        f"({stats.merged_calls} merged)",
        file=sys.stderr,
        flush=True,
    )
    sys.stderr.flush()
    return 0
