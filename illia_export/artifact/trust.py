"""What the caller trusts, and what loading an artifact is allowed to run (docs/formats.md, "Trust").

An artifact is data from a file. Its own digest only proves that the file was not damaged after
export: anyone who writes a file can write a matching digest. Trust therefore comes from the
caller, in one of two ways:

* ``expected_digest=`` (CLI ``--expect-digest``; a list is accepted): the artifact's recorded
  digest must be one of these, and the file must match it. A known artifact is trusted.
* ``trust_native_code=True`` (CLI ``--trust-native-code``): the caller vouches for the file.

A TFLite file without a matching digest is first opened by the interpreter in a child process
(a corrupt file can crash the interpreter); a file the caller vouches for skips that probe (the
exporter vouches for its own temporary file when it runs the distribution check).

Formats whose loading runs code from the file -- AOTInductor packages (a compiled shared library
whose constructors run when it is opened) -- are refused unless one of the two is given.
Artifacts without a digest that covers their manifest (none, or a scheme-1 digest of the graph
only) are refused unless ``allow_unverified=True`` (CLI ``--allow-unverified``), since nothing
then ties their noise list, generator or dims to the graph.

:func:`check_trust` runs after the manifest is parsed and before any backend is opened.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from illia_export.artifact.digest import DIGEST_PATTERN, verify_digest
from illia_export.errors import ArtifactError, InputError

#: Formats whose loading executes native code from the file.
NATIVE_CODE_FORMATS = ("aoti",)
#: Keyword options of ``runtime.load`` that this module owns (removed before the backend sees them).
TRUST_OPTIONS = ("trust_native_code", "expected_digest", "allow_unverified")
_HEX = re.compile(r"^[0-9a-f]{64}$")


@dataclass(frozen=True)
class TrustPolicy:
    """The caller's trust choices for one load (see the module docstring)."""

    trust_native_code: bool = False
    expected_digests: tuple[str, ...] = ()
    allow_unverified: bool = False

    @classmethod
    def from_options(cls, options: dict[str, Any]) -> TrustPolicy:
        """Pop :data:`TRUST_OPTIONS` from `options` (``load``'s keyword options) and check them.

        Raises:
            InputError: a non-boolean flag or a malformed expected digest.
        """
        trust = options.pop("trust_native_code", False)
        allow = options.pop("allow_unverified", False)
        for name, value in (("trust_native_code", trust), ("allow_unverified", allow)):
            if not isinstance(value, bool):
                raise InputError(f"`{name}` (={value!r}) must be True or False")
        return cls(trust, normalize_digests(options.pop("expected_digest", None)), allow)


def normalize_digests(value: str | Iterable[str] | None) -> tuple[str, ...]:
    """``"sha256:<hex>"`` (or the bare 64 hex digits), or a list of them, as a tuple of ``sha256:<hex>``.

    Raises:
        InputError: naming the malformed entry.
    """
    if value is None:
        return ()
    items = [value] if isinstance(value, str) else list(value)
    out = []
    for item in items:
        text = item.strip().lower() if isinstance(item, str) else item
        if isinstance(text, str) and _HEX.match(text):
            text = "sha256:" + text
        if not isinstance(text, str) or not DIGEST_PATTERN.match(text):
            raise InputError(
                f"expected digest {item!r} must look like 'sha256:<64 hex digits>' (as `illia-export inspect` prints it)"
            )
        out.append(text)
    return tuple(out)


@dataclass(frozen=True)
class TrustVerdict:
    """What :func:`check_trust` established: the digest scheme checked (None: no digest) and
    whether the caller vouched for the file (trust flag, or a matching expected digest)."""

    scheme: int | None
    vouched: bool

    def describe(self, manifest) -> str:
        if self.scheme == 2:
            text = f"digest {manifest.digest[:19]}... verified (graph, weights and sampling fields)"
        elif self.scheme == 1:
            text = f"digest {manifest.digest[:19]}... verified (graph bytes only: an older artifact)"
        else:
            text = "no digest checked"
        return text + ("; trusted by the caller" if self.vouched else "")


def check_trust(path: str | os.PathLike, manifest, policy: TrustPolicy, *, opening: bool = True) -> TrustVerdict:
    """Verify the digest and apply `policy`; raise before anything from the file is run.

    `opening`: the caller is about to open the graph (``load``); ``inspect`` passes False to
    check the digest of a native-code package it will not open.

    Raises:
        ArtifactError: a digest mismatch; an expected digest that the artifact does not carry;
            a native-code format without an opt-in; an artifact whose manifest no digest covers
            without ``allow_unverified``.
    """
    p = Path(path)
    if policy.expected_digests and manifest.digest not in policy.expected_digests:
        raise ArtifactError(
            f"{p}: its digest {manifest.digest or '(none recorded)'} is not the expected "
            f"{' or '.join(policy.expected_digests)}; refusing to load it (re-export it, or check which file this is)"
        )
    scheme = verify_digest(p, manifest)
    vouched = policy.trust_native_code or bool(policy.expected_digests)
    if opening and manifest.format in NATIVE_CODE_FORMATS and not vouched:
        raise ArtifactError(
            f"{p} is an AOTInductor package: loading it runs compiled code from the file, and its own digest "
            "only shows it was not damaged, not who wrote it. Load it only if you trust its origin: pass "
            "trust_native_code=True (CLI --trust-native-code), or expected_digest='sha256:...' "
            "(CLI --expect-digest) with the digest you recorded when you exported it"
        )
    ort_conversion = manifest.format == "onnx" and p.suffix.lower() == ".ort" and manifest.digest is not None
    if scheme != 2 and not policy.allow_unverified and not ort_conversion:
        # (an ORT-format conversion keeps the .onnx file's manifest and digest, not its bytes: it is
        # loaded as before, unverified; docs/formats.md says so)
        what = (
            "records no digest"
            if scheme is None
            else "records an older (scheme 1) digest that covers the graph but not its manifest"
        )
        raise ArtifactError(
            f"{p} {what}, so nothing ties its noise list, generator and dims to the graph (an edited "
            "manifest silently gives other numbers). Re-export it with this illia-export, or pass "
            "allow_unverified=True (CLI --allow-unverified) if you trust the file"
        )
    return TrustVerdict(scheme, vouched)
