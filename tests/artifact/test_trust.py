"""The digest covers what changes numbers; trust comes from the caller, not from the file."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
import zipfile
from pathlib import Path

import numpy as np
import pytest

from illia_export.artifact import manifest as mf
from illia_export.artifact.digest import compute_digest, graph_digest, stamp_digest
from illia_export.artifact.trust import normalize_digests
from illia_export.errors import ArtifactError, InputError
from illia_export.runtime import load
from illia_export.runtime.backends.pt2 import AOTI_TMP_PREFIX
from tests.reliability.conftest import assert_one_line_error, cli

from .conftest import restamp, rewrite_zip

X = np.ones((3, 4), np.float32)


def _edit_manifest(path: Path, edit) -> None:
    """Edit the embedded manifest, keeping the recorded digest (what a silent edit does)."""
    obj = json.loads(mf.read_manifest(path).to_json())
    edit(obj)
    text = json.dumps(obj)
    if path.suffix == ".onnx":
        import onnx

        model = onnx.load(str(path))
        mf.embed_in_onnx(model, mf.Manifest.from_dict(obj))
        onnx.save(model, str(path))
    else:
        rewrite_zip(path, {f"extra/{mf.EMBEDDED_NAME}": text.encode()})


EDITS = {
    "noise_reversed": lambda o: o.update(noise=o["noise"][::-1]),
    "generator_swapped": lambda o: o.update(noise_generator="illia-noise-v1"),
    "transform_changed": lambda o: o["noise"][0].update(transform="uniform"),
    "task_changed": lambda o: o.update(task="classification"),
}


@pytest.mark.parametrize("fmt", ["onnx", "torchscript", "pt2"])
@pytest.mark.parametrize("edit", sorted(EDITS))
def test_editing_a_sampling_field_fails_the_digest(bare, tmp_path, fmt, edit):
    path = Path(shutil.copy(bare[fmt], tmp_path / bare[fmt].name))
    assert mf.read_manifest(path).digest_scheme == 2
    before = load(path).predict(X, num_samples=4, seed=0).samples
    _edit_manifest(path, EDITS[edit])
    with pytest.raises(ArtifactError, match="sampling fields do not match the digest"):
        load(path)
    if edit == "generator_swapped":  # what the digest prevents: other numbers for the same seed
        _edit_manifest(path, lambda o: (o.pop("digest"), o.pop("digest_scheme")))
        after = load(path, allow_unverified=True)
        assert after.trust.scheme is None
        assert not np.allclose(after.predict(X, num_samples=4, seed=0).samples, before)


def test_validation_and_extra_are_outside_the_digest(bare, tmp_path):
    path = Path(shutil.copy(bare["onnx"], tmp_path / "m.onnx"))
    _edit_manifest(path, lambda o: (o["extra"].update(note="x"), o["validation"].update(max_abs_diff=0.5)))
    load(path)


def test_scheme_one_digest_is_refused_unless_allowed(bare, tmp_path):
    path = Path(shutil.copy(bare["onnx"], tmp_path / "m.onnx"))
    _edit_manifest(path, lambda o: (o.pop("digest_scheme"), o.update(digest=graph_digest(path, "onnx"))))
    with pytest.raises(ArtifactError, match="scheme 1.*allow_unverified=True"):
        load(path)
    assert load(path, allow_unverified=True).trust.scheme == 1
    _edit_manifest(path, lambda o: o["noise"].reverse())
    assert load(path, allow_unverified=True).trust.scheme == 1  # the graph still matches


def test_v2_digest_is_the_documented_formula(bare):
    """docs/formats.md: sha256(b"illia-digest-v2\\n" + graph digest + b"\\n" + canonical JSON)."""
    import hashlib

    path = bare["onnx"]
    m = mf.read_manifest(path)
    obj = {k: v for k, v in m.to_dict().items() if k not in ("digest", "validation", "extra")}
    canon = json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()
    want = hashlib.sha256(b"illia-digest-v2\n" + graph_digest(path, "onnx").encode() + b"\n" + canon).hexdigest()
    assert m.digest == "sha256:" + want == compute_digest(path, "onnx", m)


def test_replaced_local_variant_is_refused(bare, tmp_path):
    path = Path(shutil.copy(bare["onnx"], tmp_path / "m.onnx"))
    local = mf.read_manifest(path).local
    assert local is not None and local.digest is not None
    shutil.copy(bare["onnx"].with_name(local.file), tmp_path / local.file)
    _edit_manifest(path, lambda o: o["local"].update(file=local.file))  # same name: digest still matches
    load(path).predict(X, num_samples=4, seed=0, strategy="local")
    data = bytearray((tmp_path / local.file).read_bytes())
    data[-40] ^= 0x01
    (tmp_path / local.file).write_bytes(bytes(data))
    with pytest.raises(ArtifactError, match="local variant"):
        load(path).predict(X, num_samples=4, seed=0, strategy="local")


def test_expected_digest(bare, tmp_path):
    path = bare["onnx"]
    digest = mf.read_manifest(path).digest
    assert load(path, expected_digest=digest).trust.vouched
    assert load(path, expected_digest=["sha256:" + "0" * 64, digest[len("sha256:"):]]).trust.vouched
    with pytest.raises(ArtifactError, match="is not the expected"):
        load(path, expected_digest="sha256:" + "0" * 64)
    with pytest.raises(InputError, match="sha256"):
        normalize_digests("md5:abc")
    np.save(tmp_path / "x.npy", X)
    assert_one_line_error(
        cli("predict", str(path), "--input", str(tmp_path / "x.npy"), "--expect-digest", "sha256:" + "1" * 64),
        "not the expected",
    )


def test_a_zip_bomb_member_is_refused_before_reading(bare, tmp_path):
    path = Path(shutil.copy(bare["torchscript"], tmp_path / "bomb.pt"))
    with zipfile.ZipFile(path, "a", zipfile.ZIP_DEFLATED) as zf:
        with zf.open("bare_torchscript/data/bomb", "w", force_zip64=True) as fh:
            block = bytes(1 << 20)
            for _ in range(256):  # 256 MiB of zeros, ~250 KB compressed
                fh.write(block)
    assert path.stat().st_size < 2 << 20
    with pytest.raises(ArtifactError, match="expands.*refused before reading"):
        load(path)


# ------------------------------------------------------------------------------ AOTInductor
def _fake_aoti(tmp_path: Path, marker: Path) -> Path:
    """A package whose shared library writes `marker` from its constructor when opened."""
    src = tmp_path / "evil.c"
    src.write_text(
        '#include <stdio.h>\n__attribute__((constructor)) static void boom(void) '
        f'{{ FILE *f = fopen("{marker}", "w"); if (f) fclose(f); }}\n'
    )
    so = tmp_path / "evil.so"
    if shutil.which("cc") is None:
        pytest.skip("no C compiler to build the hostile library")
    subprocess.run(["cc", "-shared", "-fPIC", "-o", str(so), str(src)], check=True)
    manifest = mf.Manifest(
        format="aoti", source="torch", inputs=[mf.TensorSpec("input", ["batch", 4])],
        noise=[], outputs=[mf.TensorSpec("output", ["batch", 3])], sample_axis=None,
    )  # fmt: skip
    meta = {"AOTI_DEVICE_KEY": "cpu", mf.ONNX_METADATA_KEY: manifest.to_json()}
    path = tmp_path / "evil.pt2"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("evil/archive_format", "pt2")
        zf.writestr("evil/data/aotinductor/model/cevil.so", so.read_bytes())
        zf.writestr("evil/data/aotinductor/model/cevil_metadata.json", json.dumps(meta))
    return path


def test_aoti_package_is_refused_without_trust(tmp_path):
    marker = tmp_path / "marker"
    path = _fake_aoti(tmp_path, marker)
    for options in ({}, {"allow_unverified": True}):
        with pytest.raises(ArtifactError, match="AOTInductor package.*trust_native_code=True.*expected_digest"):
            load(path, **options)
    r = cli("inspect", str(path))
    assert r.returncode == 0, r.stderr
    assert "graph not opened" in r.stdout
    np.save(tmp_path / "x.npy", X)
    assert_one_line_error(cli("predict", str(path), "--input", str(tmp_path / "x.npy")), "--trust-native-code")
    assert not marker.exists()


def test_failed_aoti_load_leaves_no_extracted_package(tmp_path):
    marker = tmp_path / "marker"
    path = _fake_aoti(tmp_path, marker)
    before = {p for p in os.listdir(tempfile.gettempdir()) if p.startswith(AOTI_TMP_PREFIX)}
    with pytest.raises(ArtifactError):
        load(path, trust_native_code=True, allow_unverified=True)
    after = {p for p in os.listdir(tempfile.gettempdir()) if p.startswith(AOTI_TMP_PREFIX)}
    assert after <= before


def test_bare_layer_aoti_loads_with_its_recorded_digest(bare_aoti):
    digest = mf.read_manifest(bare_aoti).digest
    with pytest.raises(ArtifactError, match="AOTInductor"):
        load(bare_aoti)
    a = load(bare_aoti, expected_digest=digest).predict(X, num_samples=3, seed=2).samples
    b = load(bare_aoti, trust_native_code=True).predict(X, num_samples=3, seed=2).samples
    assert a.shape == (3, 3, 3)
    np.testing.assert_array_equal(a, b)


# ------------------------------------------------------------------------------ bare layer
@pytest.mark.parametrize("fmt", ["onnx", "torchscript", "pt2"])
def test_a_bare_layer_round_trips(bare, fmt):
    pred = load(bare[fmt])
    out = pred.predict(X, num_samples=5, seed=0)
    assert out.samples.shape == (5, 3, 3)
    assert np.isfinite(out.samples).all() and out.samples.std(axis=0).min() > 0
    if pred.manifest.local is not None:
        assert pred.manifest.local.noise[0].parameter == ""
        local = pred.predict(X, num_samples=5, seed=0, strategy="local").samples
        assert local.shape == (5, 3, 3)


def test_bare_layer_formats_agree(bare):
    """The same layer in every format gives the same samples for the same seed."""
    ref = load(bare["onnx"]).predict(X, num_samples=4, seed=3).samples
    for fmt in ("torchscript", "pt2"):
        np.testing.assert_allclose(load(bare[fmt]).predict(X, num_samples=4, seed=3).samples, ref, atol=1e-5)


def test_stamp_digest_stamps_the_local_variant(bare, tmp_path):
    path = Path(shutil.copy(bare["onnx"], tmp_path / "m.onnx"))
    m = mf.read_manifest(path)
    shutil.copy(bare["onnx"].with_name(m.local.file), tmp_path / m.local.file)
    m.local.digest = None
    stamp_digest(path, m)
    assert m.local.digest == graph_digest(tmp_path / m.local.file, "onnx")
    restamp(path)
    load(path)


def test_trust_flags_reach_the_batch_scoring_path(bare, tmp_path):
    """predict with a Parquet output goes through scale.score_file: the trust flags must reach its
    load (a scheme-1 artifact is refused there too, and --allow-unverified loads it)."""
    from illia_export.cli import main

    pytest.importorskip("pyarrow")
    path = Path(shutil.copy(bare["onnx"], tmp_path / "m.onnx"))
    _edit_manifest(path, lambda o: (o.pop("digest_scheme"), o.update(digest=graph_digest(path, "onnx"))))
    np.save(tmp_path / "x.npy", X)
    args = ["predict", str(path), "-i", str(tmp_path / "x.npy"), "-o", str(tmp_path / "out.parquet"), "-S", "3"]
    assert main(args) == 2
    assert not (tmp_path / "out.parquet").exists()
    assert main(args + ["--allow-unverified"]) == 0
    assert (tmp_path / "out.parquet").is_file()
