"""Integrity digest of an artifact (manifest fields ``digest`` and ``digest_scheme``).

Scheme 2 (written since contract 2 artifacts carry ``digest_scheme: 2``) covers everything that
changes the numbers an artifact gives for a seed: the graph bytes, the local variant's graph
bytes (through ``local.digest``) and every manifest field except ``digest``, ``validation`` and
``extra`` -- the noise list and its order, the generator, the dims, the transforms,
``sample_axis``, ``task``, ``likelihood``, the inputs and outputs. docs/formats.md ("Integrity
digest") states the algorithm byte for byte for other runtimes (the C++ one):

``graph_digest(path, format)`` -- the scheme-1 digest, ``sha256:<hex>`` of the graph bytes without
the embedded manifest:

* ``onnx``: the ``ModelProto`` bytes without its ``metadata_props`` (field 14), read from the
  protobuf wire format directly: every other top-level field is hashed as written, in file order.
* ``torchscript``, ``pt2``, ``aoti``: every member of the zip archive except
  ``extra/illia_manifest.json``, ``.data/serialization_id`` (random per save) and ``*.debug_pkl``,
  sorted by name without the archive's top-level folder, each hashed as
  ``u64le(len(name)) name u64le(len(data)) data``; an AOTInductor package's ``*_metadata.json`` is
  hashed as ``json.dumps(meta minus the manifest entry, sort_keys=True)``. Members are read
  streaming (CRC checked), and compressed members expanding more than :data:`MAX_EXPANSION`
  times are refused before they are read (a zip bomb).
* ``tflite``: the whole file. ``savedmodel``: ``saved_model.pb`` and every file under
  ``variables/``, as relative path and content, sorted.

``compute_digest(path, format, manifest)`` -- scheme 2: ``"sha256:" + sha256(b"illia-digest-v2\n"
+ graph_digest + b"\n" + canonical_manifest(manifest))``, where ``graph_digest`` is the
scheme-1 string in ASCII and ``canonical_manifest`` is the manifest's JSON object without
``digest``, ``validation`` and ``extra``, written with sorted keys, no whitespace and ASCII
escapes (``json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True)``).

Reading rule: a scheme-2 digest is checked as above; a scheme-1 digest (``digest_scheme`` absent
or 1) vouches for the graph only, so the runtime treats its manifest as unverified (see
:mod:`illia_export.artifact.trust`); an ORT-format (``.ort``) conversion keeps the ``.onnx``
file's manifest, not its bytes, and is checked by the caller's trust choices alone.

Exporters stamp it last (:func:`stamp_digest`): write the graph (and the local variant), stamp,
embed the manifest, :func:`verify_digest`, then the atomic rename.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import zipfile
import zlib
from pathlib import Path

from illia_export.errors import ArtifactError, ManifestError

ALGORITHM = "sha256"
DIGEST_PATTERN = re.compile(r"^sha256:[0-9a-f]{64}$")
#: Field number of ``ModelProto.metadata_props`` (where the ONNX manifest lives).
_ONNX_METADATA_FIELD = 14
_CHUNK = 1 << 20
#: The digest scheme new artifacts record (``manifest.digest_scheme``).
SCHEME = 2
#: Manifest fields the scheme-2 digest leaves out (export figures, exporter details, itself).
UNCOVERED_FIELDS = ("digest", "validation", "extra")
_V2_TAG = b"illia-digest-v2\n"
#: A compressed zip member may expand at most this many times (torch stores members uncompressed).
MAX_EXPANSION = 64
#: Members that are parsed in memory (AOTInductor metadata JSON) may be at most this large.
MAX_PARSED_MEMBER = 16 << 20
#: Errors a damaged zip archive raises from the standard library while it is read.
ZIP_ERRORS = (zipfile.BadZipFile, zipfile.LargeZipFile, zlib.error, EOFError, ValueError, NotImplementedError,
              RuntimeError)


def _varint(data: memoryview, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= len(data):
            raise ArtifactError("truncated protobuf (varint runs past the end of the file)")
        byte = data[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7
        if shift > 63:
            raise ArtifactError("corrupt protobuf (varint longer than 10 bytes)")


def onnx_graph_bytes(data: bytes) -> list[memoryview]:
    """The top-level fields of a serialized ONNX ``ModelProto`` except ``metadata_props``.

    Raises:
        ArtifactError: when the bytes are not a well-formed protobuf message (truncated, a
            field running past the end, an unknown wire type).
    """
    view = memoryview(data)
    pos, parts = 0, []
    while pos < len(view):
        start = pos
        tag, pos = _varint(view, pos)
        field, wire = tag >> 3, tag & 7
        if field == 0:
            raise ArtifactError("corrupt protobuf (field number 0)")
        if wire == 0:
            _, pos = _varint(view, pos)
        elif wire == 1:
            pos += 8
        elif wire == 2:
            length, pos = _varint(view, pos)
            pos += length
        elif wire == 5:
            pos += 4
        else:
            raise ArtifactError(f"corrupt protobuf (wire type {wire} at byte {start})")
        if pos > len(view):
            raise ArtifactError(
                f"truncated protobuf (field {field} at byte {start} runs past the end of the file)"
            )
        if field != _ONNX_METADATA_FIELD:
            parts.append(view[start:pos])
    return parts


def _hash_file(h, path: Path) -> None:
    with open(path, "rb") as fh:
        while chunk := fh.read(_CHUNK):
            h.update(chunk)


def _update_named(h, name: str, data: bytes) -> None:
    encoded = name.encode()
    h.update(len(encoded).to_bytes(8, "little") + encoded + len(data).to_bytes(8, "little"))
    h.update(data)


def _without_manifest(data: bytes, path: Path) -> bytes:
    """An AOTInductor metadata file minus the manifest entry (the manifest lives there)."""
    from illia_export.artifact.manifest import ONNX_METADATA_KEY

    try:
        meta = json.loads(data)
    except (ValueError, RecursionError) as exc:
        raise ArtifactError(f"{path}: the AOTInductor metadata is not valid JSON") from exc
    if isinstance(meta, dict):
        meta.pop(ONNX_METADATA_KEY, None)
    return json.dumps(meta, sort_keys=True).encode()


def check_member_sizes(zf: zipfile.ZipFile, path: Path) -> None:
    """Refuse a zip whose compressed members claim to expand more than :data:`MAX_EXPANSION` times.

    Raises:
        ArtifactError: naming the member, its sizes and the file.
    """
    for info in zf.infolist():
        if info.compress_type != zipfile.ZIP_STORED and info.file_size > MAX_EXPANSION * max(info.compress_size, 1 << 16):
            raise ArtifactError(
                f"{path}: zip member {info.filename!r} expands from {info.compress_size} to {info.file_size} bytes "
                f"(more than {MAX_EXPANSION}x); illia-export archives store their members uncompressed, so this is "
                "not an artifact it wrote (refused before reading it)"
            )


def _hash_member(h, zf: zipfile.ZipFile, name: str, short: str) -> None:
    info = zf.getinfo(name)
    encoded = short.encode()
    h.update(len(encoded).to_bytes(8, "little") + encoded + info.file_size.to_bytes(8, "little"))
    with zf.open(info) as fh:
        while chunk := fh.read(_CHUNK):
            h.update(chunk)


def _hashed_members(zf: zipfile.ZipFile) -> list[tuple[str, str]]:
    """``(name without the top-level folder, archive name)`` of the members the digest covers, sorted."""
    from illia_export.artifact.manifest import EMBEDDED_NAME

    names = []
    for name in zf.namelist():
        parts = name.split("/")
        if len(parts) >= 2 and parts[-2] == "extra" and parts[-1] == EMBEDDED_NAME:
            continue
        if parts[-2:] == [".data", "serialization_id"]:  # random per save
            continue
        if name.endswith(".debug_pkl"):  # source-range debug info, rewritten per save
            continue
        names.append((name.partition("/")[2] or name, name))
    return sorted(names)


def graph_digest(path: str | os.PathLike, format: str) -> str:
    """The scheme-1 digest: ``"sha256:<hex>"`` of the graph bytes of the artifact at `path`.

    Raises:
        ArtifactError: when the file cannot be read as that format (naming the file and the cause).
    """
    p = Path(path)
    h = hashlib.sha256()
    try:
        if format == "onnx":
            for part in onnx_graph_bytes(p.read_bytes()):
                h.update(part)
        elif format in ("torchscript", "pt2", "aoti"):
            try:
                with zipfile.ZipFile(p) as zf:
                    check_member_sizes(zf, p)
                    for short, name in _hashed_members(zf):
                        if format == "aoti" and name.endswith("_metadata.json"):
                            if zf.getinfo(name).file_size > MAX_PARSED_MEMBER:
                                raise ArtifactError(f"{p}: the AOTInductor metadata {name!r} is larger than 16 MiB")
                            _update_named(h, short, _without_manifest(zf.read(name), p))
                        else:
                            _hash_member(h, zf, name, short)
            except ZIP_ERRORS as exc:
                raise ArtifactError(f"{p} is not a readable {format} archive: {type(exc).__name__}: {exc}") from exc
        elif format == "tflite":
            _hash_file(h, p)
        elif format == "savedmodel":
            files = [p / "saved_model.pb"]
            variables = p / "variables"
            if variables.is_dir():
                files += sorted(f for f in variables.rglob("*") if f.is_file())
            for f in files:
                _update_named(h, f.relative_to(p).as_posix(), f.read_bytes())
        else:
            raise ArtifactError(f"no digest is defined for format {format!r}")
    except OSError as exc:
        raise ArtifactError(f"cannot read {p} to check its digest: {exc}") from exc
    return f"{ALGORITHM}:{h.hexdigest()}"


def canonical_manifest(manifest) -> bytes:
    """The manifest fields the scheme-2 digest covers, as canonical JSON bytes."""
    obj = {k: v for k, v in manifest.to_dict().items() if k not in UNCOVERED_FIELDS}
    try:
        text = json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False)
    except ValueError as exc:
        raise ManifestError(f"the manifest holds a non-finite number: {exc}") from exc
    return text.encode("ascii")


def compute_digest(path: str | os.PathLike, format: str, manifest=None) -> str:
    """The scheme-2 digest of the artifact at `path` with `manifest` (scheme 1 when `manifest` is None).

    Raises:
        ArtifactError: when the file cannot be read as that format.
    """
    graph = graph_digest(path, format)
    if manifest is None:
        return graph
    h = hashlib.sha256(_V2_TAG + graph.encode("ascii") + b"\n" + canonical_manifest(manifest))
    return f"{ALGORITHM}:{h.hexdigest()}"


def scheme_of(manifest) -> int | None:
    """The digest scheme of `manifest`: 2, 1 (a digest of the graph only), or None (no digest)."""
    if getattr(manifest, "digest", None) is None:
        return None
    return getattr(manifest, "digest_scheme", None) or 1


def verify_digest(path: str | os.PathLike, manifest) -> int | None:
    """Check the artifact at `path` against ``manifest.digest``; return the scheme checked.

    Returns:
        2 (graph, local variant and sampling fields checked), 1 (graph bytes only, an older
        artifact) or None (no digest recorded, or an ORT-format conversion, which keeps the
        ``.onnx`` file's manifest and not its bytes). What the runtime accepts of these is
        decided in :mod:`illia_export.artifact.trust`.

    Raises:
        ManifestError: the recorded digest is malformed.
        ArtifactError: the bytes or the manifest differ from what the exporter wrote (corrupted
            or modified file), or the file cannot be read.
    """
    want = getattr(manifest, "digest", None)
    if want is None:
        return None
    if manifest.format == "onnx" and Path(path).suffix.lower() == ".ort":
        return None
    if not isinstance(want, str) or not DIGEST_PATTERN.match(want):
        raise ManifestError(f"manifest.digest must look like 'sha256:<64 hex digits>', got {want!r}")
    scheme = scheme_of(manifest)
    got = compute_digest(path, manifest.format, manifest if scheme == 2 else None)
    if got != want:
        covered = "the graph bytes or the manifest's sampling fields" if scheme == 2 else "the graph bytes"
        raise ArtifactError(
            f"{path}: {covered} do not match the digest in the manifest (recorded {want[:19]}..., "
            f"file has {got[:19]}...): the artifact was corrupted or modified after export; re-export it"
        )
    return scheme


def verify_local_digest(path: str | os.PathLike, manifest) -> None:
    """Check the local variant at `path` against ``manifest.local.digest`` (when recorded).

    Raises:
        ArtifactError: the local graph's bytes differ from what the exporter wrote.
    """
    local = getattr(manifest, "local", None)
    want = getattr(local, "digest", None)
    if want is None:
        return
    got = graph_digest(path, manifest.format)
    if got != want:
        raise ArtifactError(
            f"{path}: the local variant's graph bytes do not match the digest in the manifest (recorded "
            f"{want[:19]}..., file has {got[:19]}...): it was corrupted or replaced after export; re-export it"
        )


def stamp_digest(path: str | os.PathLike, manifest) -> str:
    """Stamp the scheme-2 digest of the (not yet renamed) artifact at `path` into `manifest`.

    The local variant (``manifest.local.file``, already beside `path`) gets its graph digest in
    ``manifest.local.digest`` first, so the main digest covers it.
    """
    if manifest.local is not None:
        local_file = Path(path).parent / manifest.local.file
        manifest.local.digest = graph_digest(local_file, manifest.format) if local_file.exists() else None
    manifest.digest_scheme = SCHEME
    manifest.digest = None
    manifest.digest = compute_digest(path, manifest.format, manifest)
    return manifest.digest
