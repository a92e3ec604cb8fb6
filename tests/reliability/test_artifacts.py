"""Corrupted artifacts and lying manifests: a clear ArtifactError/ManifestError, never a crash,
a traceback or a silent wrong answer."""

from __future__ import annotations

import json
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

from illia_export.artifact.digest import compute_digest, onnx_graph_bytes, verify_digest
from illia_export.artifact.manifest import read_manifest
from illia_export.errors import ArtifactError, IlliaExportError, ManifestError
from illia_export.runtime import load

from .conftest import assert_one_line_error, cli, copy_artifact, read_raw_manifest, stamp, write_raw_manifest

X = np.ones((3, 6), np.float32)


def _flip(path: Path, offset_from_end: int) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) - offset_from_end] ^= 0xFF
    path.write_bytes(bytes(data))


def _onnx_weight_offset(path: Path) -> int:
    """Offset from the end of the file of a byte inside the first initializer's raw data."""
    import onnx

    model = onnx.load(str(path))
    raw = (
        model.graph.initializer[0].raw_data
        or np.asarray(onnx.numpy_helper.to_array(model.graph.initializer[0])).tobytes()
    )
    data = path.read_bytes()
    pos = data.find(raw)
    assert pos > 0
    return len(data) - (pos + len(raw) // 2)


# ------------------------------------------------------------------------------- digest
def test_digest_excludes_the_manifest_and_detects_graph_changes(art, tmp_path):
    p = copy_artifact(art["mlp_onnx_vectorized"], tmp_path / "m.onnx")
    before = compute_digest(p, "onnx")
    obj = read_raw_manifest(p)
    obj["task"] = "raw"
    write_raw_manifest(p, "onnx", obj)
    assert compute_digest(p, "onnx") == before  # the manifest is not hashed
    _flip(p, _onnx_weight_offset(p))
    assert compute_digest(p, "onnx") != before


def test_flipped_onnx_weight_byte_is_refused_at_load(art, tmp_path):
    p = copy_artifact(art["mlp_onnx_vectorized"], tmp_path / "m.onnx")
    load(p).predict(X, num_samples=2, seed=0)
    _flip(p, _onnx_weight_offset(p))
    with pytest.raises(ArtifactError, match="do not match the digest"):
        load(p)
    assert_one_line_error(cli("predict", str(p), "--input", _npy(tmp_path, X)), "digest")


def test_artifact_without_digest_is_refused_unless_allowed(art, tmp_path):
    p = copy_artifact(art["mlp_onnx_vectorized"], tmp_path / "m.onnx")
    obj = read_raw_manifest(p)
    obj.pop("digest")
    write_raw_manifest(p, "onnx", obj)
    assert read_manifest(p).digest is None
    with pytest.raises(ArtifactError, match="records no digest.*allow_unverified=True"):
        load(p)
    load(p, allow_unverified=True).predict(X, num_samples=2, seed=0)
    x = _npy(tmp_path, X)
    assert_one_line_error(cli("predict", str(p), "--input", x), "records no digest", "--allow-unverified")
    assert cli("predict", str(p), "--input", x, "--allow-unverified").returncode == 0


def test_flipped_torchscript_member_is_refused(art, tmp_path):
    p = copy_artifact(art["mlp_torchscript_vectorized"], tmp_path / "m.pt")
    with zipfile.ZipFile(p) as zf:
        names = [n for n in zf.namelist() if "/data/" in n]
        members = {n: zf.read(n) for n in zf.namelist()}
        infos = {i.filename: i for i in zf.infolist()}
    victim = names[0]
    data = bytearray(members[victim])
    data[len(data) // 2] ^= 0x01
    members[victim] = bytes(data)
    with zipfile.ZipFile(p, "w", zipfile.ZIP_STORED) as zf:
        for n, d in members.items():
            zf.writestr(infos[n], d)
    with pytest.raises(ArtifactError, match="digest"):
        load(p)


def test_truncated_onnx_and_torchscript_are_refused(art, tmp_path):
    for key, ext in (("mlp_onnx_vectorized", "onnx"), ("mlp_torchscript_vectorized", "pt")):
        p = copy_artifact(art[key], tmp_path / f"t.{ext}")
        data = p.read_bytes()
        p.write_bytes(data[: len(data) * 2 // 3])
        with pytest.raises(IlliaExportError):
            load(p)
        assert cli("inspect", str(p)).returncode == 2


def test_onnx_wire_parser_refuses_garbage():
    with pytest.raises(ArtifactError):
        onnx_graph_bytes(b"\x0a\xff\xff\xff\xff\x0f")  # a field longer than the file
    with pytest.raises(ArtifactError):
        onnx_graph_bytes(b"\x0f")  # wire type 7


def test_verify_digest_ignores_manifests_without_one(art):
    m = read_manifest(art["mlp_onnx_vectorized"])
    m.digest = None
    verify_digest(art["mlp_onnx_vectorized"], m)


# ---------------------------------------------------------------- manifest vs graph signature
@pytest.mark.parametrize("fmt, ext", [("onnx", "onnx"), ("torchscript", "pt")])
@pytest.mark.parametrize(
    "edit, words",
    [
        (lambda o: o["noise"][0].update(shape=["samples", 30000, 30000]), "noise"),
        (lambda o: o.update(noise=o["noise"][:1]), "does not (list|belong)"),
        (lambda o: o["inputs"][0].update(shape=["batch", 7]), "input"),
        (lambda o: o["inputs"][0].update(shape=["batch", 6, 1]), "input"),
        (lambda o: o["inputs"][0].update(dtype="int64"), "input"),
        (lambda o: o["noise"][0].update(name="eps_nothing"), "eps_nothing"),
    ],
)
def test_manifest_that_disagrees_with_the_graph_is_refused_at_load(art, tmp_path, fmt, ext, edit, words):
    p = copy_artifact(art[f"mlp_{fmt}_vectorized"], tmp_path / f"m.{ext}")
    obj = read_raw_manifest(p)
    obj.pop("digest", None)
    edit(obj)
    write_raw_manifest(p, fmt, obj)
    with pytest.raises(ArtifactError, match=words):
        load(p, allow_unverified=True)  # the graph signature check, behind the digest


def test_emptied_noise_list_and_bogus_dtype_are_one_line_errors(art, tmp_path):
    x = _npy(tmp_path, X)
    for edit, words in (
        (lambda o: o.update(noise=[]), "does not list"),
        (lambda o: o["inputs"][0].update(dtype="float99"), "unsupported dtype"),
        (lambda o: o["validation"].update(max_abs_diff="tiny"), "max_abs_diff"),
    ):
        p = copy_artifact(art["mlp_onnx_vectorized"], tmp_path / f"e{len(list(tmp_path.iterdir()))}.onnx")
        obj = read_raw_manifest(p)
        edit(obj)
        write_raw_manifest(p, "onnx", obj)
        if words == "does not list":  # an attacker who also rewrites the digest: the graph check catches it
            stamp(p, "onnx")
        with pytest.raises((ManifestError, ArtifactError), match=words):
            load(p)
        assert_one_line_error(cli("predict", str(p), "--input", x), words)
        assert_one_line_error(cli("inspect", str(p)), words)


# --------------------------------------------------------------------------------- TFLite
_LOAD_IN_CHILD = """
import sys
from illia_export.errors import IlliaExportError
from illia_export.runtime import load
try:
    load(sys.argv[1], allow_unverified=len(sys.argv) > 2)
except IlliaExportError as exc:
    print("REFUSED:", exc)
    sys.exit(3)
print("LOADED")
"""


def _load_in_child(path: Path, allow_unverified: bool = False) -> subprocess.CompletedProcess:
    """Load in a child process, so that a segfault fails this test instead of killing pytest."""
    from .conftest import ROOT

    return subprocess.run(
        [sys.executable, "-c", _LOAD_IN_CHILD, str(path)] + (["allow"] if allow_unverified else []),
        capture_output=True,
        text=True,
        timeout=300,
        env={"PYTHONPATH": str(ROOT), "TF_CPP_MIN_LOG_LEVEL": "3", "PATH": "/usr/bin:/bin"},
    )


@pytest.mark.parametrize("digest", [True, False])
@pytest.mark.parametrize("damage", ["truncate", "flip_header", "flip_middle"])
def test_corrupt_tflite_is_refused_not_a_segfault(tf_art, tmp_path, damage, digest):
    p = copy_artifact(tf_art["tflite"], tmp_path / "m.tflite")
    if not digest:
        obj = read_raw_manifest(p)
        obj.pop("digest")
        write_raw_manifest(p, "tflite", obj)
    data = bytearray(p.read_bytes())
    if damage == "truncate":
        data = data[: len(data) // 2]
    elif damage == "flip_header":
        for i in range(8, 40):
            data[i] ^= 0xFF
    else:
        for i in range(len(data) // 2, len(data) // 2 + 64):
            data[i] ^= 0xA5
    p.write_bytes(bytes(data))
    result = _load_in_child(p, allow_unverified=not digest)
    assert result.returncode == 3, (result.returncode, result.stdout[-500:], result.stderr[-2000:])
    assert "REFUSED" in result.stdout
    assert_one_line_error(cli("inspect", str(p)))


def test_intact_tflite_and_savedmodel_load_and_inspect(tf_art):
    for fmt in ("tflite", "savedmodel"):
        r = cli("inspect", str(tf_art[fmt]))
        assert r.returncode == 0, r.stderr
        assert "digest" in r.stdout and "verified" in r.stdout
        pred = load(tf_art[fmt]).predict(np.ones((2, 12), np.float32), num_samples=3, seed=0)
        assert pred.samples.shape[:2] == (3, 2)


def test_savedmodel_with_changed_variables_is_refused(tf_art, tmp_path):
    p = copy_artifact(tf_art["savedmodel"], tmp_path / "sm")
    var = sorted((p / "variables").glob("variables.data-*"))[0]
    data = bytearray(var.read_bytes())
    data[len(data) // 2] ^= 0x01
    var.write_bytes(bytes(data))
    with pytest.raises(ArtifactError, match="digest"):
        load(p)


@pytest.mark.parametrize("fmt, name", [("tflite", "m.tflite"), ("savedmodel", "sm")])
@pytest.mark.parametrize(
    "edit, words",
    [
        (lambda o: o["inputs"][0].update(shape=["batch", 13]), "input"),
        (lambda o: o["noise"][0].update(shape=["samples", 30000, 30000]), "noise"),
        (lambda o: o.update(noise=o["noise"][1:]), "does not list"),
        (lambda o: o["inputs"][0].update(dtype="float64"), "float64"),
    ],
)
def test_tf_manifest_disagreeing_with_the_graph_is_refused(tf_art, tmp_path, fmt, name, edit, words):
    p = copy_artifact(tf_art[fmt], tmp_path / name)
    obj = read_raw_manifest(p)
    edit(obj)
    write_raw_manifest(p, fmt, obj)
    with pytest.raises(ArtifactError, match="do not match the digest"):
        load(p)  # the digest covers the manifest
    obj.pop("digest")
    write_raw_manifest(p, fmt, obj)
    with pytest.raises(ArtifactError, match=words):
        # and behind it, the graph signature check (vouched for: no child-process probe, a TF start-up)
        load(p, allow_unverified=True, trust_native_code=True)


def _npy(tmp_path: Path, arr: np.ndarray, name: str = "x.npy") -> str:
    path = tmp_path / name
    np.save(path, arr)
    return str(path)


def test_json_manifest_file_is_strict(art):
    text = read_manifest(art["mlp_onnx_vectorized"]).to_json()
    json.loads(text, parse_constant=lambda c: pytest.fail(f"non-standard JSON constant {c}"))


@pytest.mark.parametrize("vouched", [False, True])
def test_tflite_probe_runs_unless_the_caller_vouches(tf_art, tmp_path, monkeypatch, vouched):
    """A TFLite file without a digest is opened in a child process first, unless the caller
    vouches for it (the exporter does, for its own temporary file)."""
    from illia_export.runtime.backends import tflite_verify

    p = copy_artifact(tf_art["tflite"], tmp_path / "m.tflite")
    obj = read_raw_manifest(p)
    obj.pop("digest")
    write_raw_manifest(p, "tflite", obj)
    probed = []
    monkeypatch.setattr(tflite_verify, "probe_in_subprocess", lambda path, **kw: probed.append(path))
    load(p, allow_unverified=True, trust_native_code=vouched)
    assert bool(probed) is not vouched
