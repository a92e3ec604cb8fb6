"""``illia-export serve ARTIFACT``: online predictions over the KServe open inference protocol (v2)."""

from __future__ import annotations

import re
from pathlib import Path

from illia_export.cli.options import trust_options
from illia_export.errors import InputError

#: Model names go into URLs (/v2/models/NAME/infer).
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


def register(sub) -> None:
    p = sub.add_parser(
        "serve",
        help="serve an artifact over HTTP (KServe open inference protocol v2)",
        description="Serve Monte Carlo predictions of an artifact over HTTP (KServe open inference "
        "protocol v2, REST, with the binary tensor data extension): POST /v2/models/NAME/infer with the inputs and optional "
        "parameters num_samples, seed, strategy; the response holds the summaries (mean, std, "
        "probabilities, entropies, ...) and the seed used. Concurrent requests that share "
        "(num_samples, seed, strategy) are merged into one predict call. SIGTERM/SIGINT finish "
        "in-flight requests, then exit 0. Only the documented v2 routes are served; bodies, "
        "headers and idle connections are bounded (see the limit options). Needs the 'serve' extra.",
    )
    p.add_argument("artifact", metavar="ARTIFACT", help="exported file (.onnx, .pt, .pt2, .tflite) or SavedModel folder")
    p.add_argument("--port", type=int, default=8000, help="HTTP port (default 8000)")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1; 0.0.0.0 in a container)")
    p.add_argument("--name", default=None, help="model name in the URLs (default: the artifact's file stem)")
    from illia_export.cli.options import add_sampling_arguments

    add_sampling_arguments(
        p, samples=32, samples_help="default Monte Carlo samples per request", chunk_size=False,
        seed_help="default seed of requests without one (default: a new seed per request; one bank seed per server)",
    )
    p.add_argument("--max-samples", type=int, default=1024, metavar="N", help="largest num_samples a request may ask for (default 1024)")
    p.add_argument("--max-batch-size", type=int, default=256, metavar="ROWS", help="most rows merged into one predict call (default 256)")
    p.add_argument(
        "--max-latency-ms", type=float, default=0.0, metavar="MS",
        help="longest a request waits for others to merge with (default 0: merge only what queued meanwhile)",
    )
    p.add_argument("--threads", type=int, default=None, metavar="N", help="backend CPU threads (default: the usable cores)")
    from illia_export.cli.options import add_trust_arguments

    add_trust_arguments(p)
    p.add_argument(
        "--log-requests", choices=("off", "one-line"), default="one-line",
        help="access log on stderr: one line per answered request (default) or none",
    )
    p.add_argument("--max-body-mb", type=float, default=64.0, metavar="MB",
                   help="largest request body; larger ones get 413 before they are read (default 64)")
    p.add_argument("--max-connections", type=int, default=1000, metavar="N",
                   help="open connections; beyond it the longest-idle one is closed (default 1000)")
    p.add_argument("--idle-timeout", type=float, default=5.0, metavar="S",
                   help="seconds a connection may stay idle between requests (default 5)")
    p.add_argument("--header-timeout", type=float, default=10.0, metavar="S",
                   help="seconds from a request's first byte to the end of its headers (default 10)")
    p.add_argument("--body-timeout", type=float, default=60.0, metavar="S",
                   help="seconds from the end of the headers to the end of the body (default 60)")
    p.set_defaults(func=run)


def options_from_args(args):
    """Check the arguments and build the server's options."""
    from illia_export.cli.options import check_sampling_arguments
    from illia_export.serve.http import HttpLimits
    from illia_export.serve.server import ServeOptions

    if not 0 < args.port < 65536:
        raise InputError(f"--port (={args.port}) must lie in [1, 65535]")
    check_sampling_arguments(args)
    if args.max_samples < args.samples:
        raise InputError(f"--max-samples (={args.max_samples}) must be at least --samples (={args.samples})")
    if args.max_batch_size < 1:
        raise InputError(f"--max-batch-size (={args.max_batch_size}) must be a positive integer")
    if not 0 <= args.max_latency_ms <= 60_000:
        raise InputError(f"--max-latency-ms (={args.max_latency_ms}) must lie in [0, 60000]")
    for flag in ("max_body_mb", "idle_timeout", "header_timeout", "body_timeout"):
        value = getattr(args, flag)
        if not 0 < value <= 86400:
            raise InputError(f"--{flag.replace('_', '-')} (={value}) must lie in (0, 86400]")
    if not 1 <= args.max_connections <= 1_000_000:
        raise InputError(f"--max-connections (={args.max_connections}) must lie in [1, 1000000]")
    name = args.name if args.name is not None else Path(args.artifact.rstrip("/")).stem
    if not _NAME.match(name):
        raise InputError(
            f"model name {name!r} must start with a letter or digit and hold only letters, digits, '_', '.', '-' "
            "(pass --name)"
        )
    return ServeOptions(
        artifact=args.artifact,
        name=name,
        host=args.host,
        port=args.port,
        samples=args.samples,
        max_samples=args.max_samples,
        strategy=args.strategy,
        seed=args.seed,
        max_batch_size=args.max_batch_size,
        max_latency_ms=args.max_latency_ms,
        threads=args.threads,
        device=args.device,
        backend_options=trust_options(args),
        log_requests=args.log_requests,
        http=HttpLimits(
            max_body_bytes=int(args.max_body_mb * 2**20),
            idle_timeout=args.idle_timeout,
            header_timeout=args.header_timeout,
            body_timeout=args.body_timeout,
            max_connections=args.max_connections,
        ),
    )


def run(args) -> int:
    from illia_export.serve.server import serve

    return serve(options_from_args(args))
