"""Integrity digest of an artifact's graph bytes (manifest field ``digest``).

``compute_digest(path, format)`` returns ``"sha256:<hex>"`` of everything that defines the
graph and its weights, *excluding the embedded manifest* (so the manifest can carry the digest):

* ``onnx``: the ``ModelProto`` bytes without its ``metadata_props`` (field 14), read from the
  protobuf wire format directly: every other top-level field is hashed as written, in file
  order. No protobuf library is needed, so other runtimes can check it too.
* ``torchscript``: every member of the zip archive except ``extra/illia_manifest.json``,
  ``.data/serialization_id`` (a random id torch writes on every save) and the ``*.debug_pkl``
  source-range files (debug info that a re-save rewrites), as ``name`` (without
  the archive's top-level folder, which is the file name at save time) and content, sorted by
  name. Reading a member checks its CRC. Re-saving the loaded module with another manifest
  (``torch.jit.save(m, path, _extra_files=...)``) keeps the digest.
* ``pt2`` / ``aoti``: as TorchScript (zip members by name); an AOTInductor package's
  ``*_metadata.json`` is hashed without its manifest entry.
* ``tflite``: the whole file (the manifest is a sidecar).
* ``savedmodel``: ``saved_model.pb`` and every file under ``variables/``, as relative path and
  content, sorted (``assets/``, where the manifest lives, and ``fingerprint.pb`` are not hashed).

``verify_digest(path, manifest)`` recomputes it and raises :class:`ArtifactError` when it
differs. A manifest without ``digest`` (artifacts written before the field existed) is not
checked, nor are ORT-format (``.ort``) conversions, which keep the ``.onnx`` file's manifest. The
runtime calls it in :func:`illia_export.runtime.load`.

Exporters stamp it last: write the graph, ``manifest.digest = compute_digest(tmp, fmt)``, embed
the manifest, and (ideally) ``verify_digest(tmp, manifest)`` before the atomic rename.
"""

from __future__ import annotations

import hashlib
import os
import re
import zipfile
from pathlib import Path

from illia_export.errors import ArtifactError, ManifestError

ALGORITHM = "sha256"
DIGEST_PATTERN = re.compile(r"^sha256:[0-9a-f]{64}$")
#: Field number of ``ModelProto.metadata_props`` (where the ONNX manifest lives).
_ONNX_METADATA_FIELD = 14
_CHUNK = 1 << 20


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


def _without_manifest(data: bytes) -> bytes:
    """An AOTInductor metadata file minus the manifest entry (the manifest lives there)."""
    import json

    from illia_export.artifact.manifest import ONNX_METADATA_KEY

    meta = json.loads(data)
    if isinstance(meta, dict):
        meta.pop(ONNX_METADATA_KEY, None)
    return json.dumps(meta, sort_keys=True).encode()


def compute_digest(path: str | os.PathLike, format: str) -> str:
    """``"sha256:<hex>"`` of the graph bytes of the artifact at `path` (manifest excluded).

    Raises:
        ArtifactError: when the file cannot be read as that format.
    """
    from illia_export.artifact.manifest import EMBEDDED_NAME

    p = Path(path)
    h = hashlib.sha256()
    try:
        if format == "onnx":
            for part in onnx_graph_bytes(p.read_bytes()):
                h.update(part)
        elif format in ("torchscript", "pt2", "aoti"):
            try:
                with zipfile.ZipFile(p) as zf:
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
                    for short, name in sorted(names):
                        data = zf.read(name)
                        if format == "aoti" and name.endswith("_metadata.json"):
                            data = _without_manifest(data)
                        _update_named(h, short, data)
            except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, ValueError) as exc:
                raise ArtifactError(f"{p} is not a readable {format} archive: {exc}") from exc
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


def verify_digest(path: str | os.PathLike, manifest) -> None:
    """Check the artifact's graph bytes against ``manifest.digest`` (no-op when it has none).

    Raises:
        ManifestError: the recorded digest is malformed.
        ArtifactError: the graph bytes differ from what the exporter wrote (corrupted or
            modified file), or the file cannot be read.
    """
    want = getattr(manifest, "digest", None)
    if want is None:
        return
    if manifest.format == "onnx" and Path(path).suffix.lower() == ".ort":
        # An ORT-format conversion keeps the ONNX file's manifest (and its digest), not its bytes.
        return
    if not isinstance(want, str) or not DIGEST_PATTERN.match(want):
        raise ManifestError(f"manifest.digest must look like 'sha256:<64 hex digits>', got {want!r}")
    got = compute_digest(path, manifest.format)
    if got != want:
        raise ArtifactError(
            f"{path}: the graph bytes do not match the digest in the manifest (recorded {want[:19]}..., "
            f"file has {got[:19]}...): the artifact was corrupted or modified after export; re-export it"
        )


def stamp_digest(path: str | os.PathLike, manifest) -> str:
    """Compute the digest of the (not yet renamed) artifact at `path` and store it in `manifest`."""
    manifest.digest = compute_digest(path, manifest.format)
    return manifest.digest
