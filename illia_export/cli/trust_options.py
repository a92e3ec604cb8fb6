"""The trust flags of every command that loads an artifact (docs/formats.md, "Trust").

``--trust-native-code``, ``--expect-digest sha256:...`` (repeatable) and ``--allow-unverified``
map to ``runtime.load``'s ``trust_native_code``, ``expected_digest`` and ``allow_unverified``.
"""

from __future__ import annotations

from typing import Any


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
