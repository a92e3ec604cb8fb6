"""The options several commands share, defined once: sampling and trust.

Sampling (``predict``, ``evaluate``, ``serve``): ``--samples/-S``, ``--seed``, ``--strategy``,
``--chunk-size``, ``--device``; :func:`check_sampling_arguments` refuses bad values with one line
naming the flag (the CLI's user-error contract), before any artifact is opened.

Trust (every command that loads an artifact; docs/formats.md, "Trust"): ``--trust-native-code``,
``--expect-digest sha256:...`` (repeatable) and ``--allow-unverified`` map to ``runtime.load``'s
``trust_native_code``, ``expected_digest`` and ``allow_unverified``.
"""

from __future__ import annotations

from typing import Any

from illia_export.errors import InputError

STRATEGIES = ("fresh", "bank", "local")


def add_sampling_arguments(
    p, *, samples: int = 64, samples_help: str = "Monte Carlo samples", seed_default: int | None = None,
    seed_help: str = "noise seed (default: a random one, printed)", chunk_size: bool = True,
) -> None:
    """Add ``--samples/-S``, ``--seed``, ``--strategy``, ``--chunk-size`` (optional) and ``--device``."""
    p.add_argument("--samples", "-S", type=int, default=samples, metavar="S", help=f"{samples_help} (default {samples})")
    p.add_argument("--seed", type=int, default=seed_default, help=seed_help)
    p.add_argument("--strategy", choices=STRATEGIES, default="fresh", help="noise strategy (default fresh)")
    if chunk_size:
        p.add_argument(
            "--chunk-size", type=int, default=None, metavar="N", help="samples per graph call (bounds memory)"
        )
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu", help="where to run (default cpu)")


def check_sampling_arguments(args) -> None:
    """One-line InputErrors naming the flag: counts positive, seeds in ``[0, 2**64)``."""
    if args.samples < 1:
        raise InputError(f"--samples (={args.samples}) must be a positive integer")
    if args.seed is not None and not 0 <= args.seed < 2**64:
        raise InputError(f"--seed (={args.seed}) must be an integer in [0, 2**64)")
    for flag in ("chunk_size", "threads"):
        value = getattr(args, flag, None)
        if value is not None and value < 1:
            raise InputError(f"--{flag.replace('_', '-')} (={value}) must be a positive integer")


def add_trust_arguments(p) -> None:
    """Add the three trust flags to the argparse parser `p`."""
    g = p.add_argument_group("trust (what loading the artifact may run; docs/formats.md)")
    g.add_argument(
        "--trust-native-code", action="store_true",
        help="load formats that run code from the file (AOTInductor packages, .pt2 archives with pickles); "
        "only for files whose origin you trust",
    )  # fmt: skip
    g.add_argument(
        "--expect-digest", action="append", default=None, metavar="sha256:HEX",
        help="load only if the artifact's digest is this one (as printed by inspect; repeatable); a matching "
        "digest also trusts the file's code",
    )  # fmt: skip
    g.add_argument(
        "--allow-unverified", action="store_true",
        help="load an artifact whose manifest no digest covers (older exports, hand-made files)",
    )


def trust_options(args) -> dict[str, Any]:
    """The ``runtime.load`` keyword options for the parsed trust flags (only those given)."""
    out: dict[str, Any] = {}
    if getattr(args, "trust_native_code", False):
        out["trust_native_code"] = True
    if getattr(args, "expect_digest", None):
        out["expected_digest"] = list(args.expect_digest)
    if getattr(args, "allow_unverified", False):
        out["allow_unverified"] = True
    return out
