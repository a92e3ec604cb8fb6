"""Frozen-bank ONNX artifacts: the bank of (seed, S) baked in, summary outputs, one input."""

from __future__ import annotations

import numpy as np
import pytest

from illia_export.artifact.manifest import read_manifest
from illia_export.errors import ArtifactError, IlliaExportError, InputError, StrategyError
from illia_export.runtime import freeze_bank, load

ort = pytest.importorskip("onnxruntime")

SEED = 77
S = 9


def _run(path, x) -> dict[str, np.ndarray]:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert len(session.get_inputs()) == 1  # the model's input only: the noise is baked in
    return dict(zip([o.name for o in session.get_outputs()], session.run(None, {session.get_inputs()[0].name: x})))


def _x(rows: int, cols: int) -> np.ndarray:
    return np.random.default_rng(3).normal(size=(rows, cols)).astype(np.float32)


def test_classification_matches_bank(artifacts, tmp_path):
    out = freeze_bank(artifacts["mlp_onnx_vectorized"], tmp_path / "frozen.onnx", num_samples=S, seed=SEED)
    x = _x(6, 6)
    got = _run(out, x)
    assert sorted(got) == sorted(["probabilities", "predicted_class", "predictive_entropy", "mutual_information"])
    ref = load(artifacts["mlp_onnx_vectorized"]).predict(x, num_samples=S, seed=SEED, strategy="bank")
    for name in ("probabilities", "predictive_entropy", "mutual_information"):
        assert got[name].shape == getattr(ref, name).shape
        np.testing.assert_allclose(got[name], getattr(ref, name), atol=1e-5, rtol=0)
    np.testing.assert_array_equal(got["predicted_class"], ref.predicted_class)
    # another seed gives other numbers: the noise really is the seed's bank
    other = load(artifacts["mlp_onnx_vectorized"]).predict(x, num_samples=S, seed=SEED + 1, strategy="bank")
    assert np.abs(got["probabilities"] - other.probabilities).max() > 1e-4


def test_regression_matches_bank(artifacts, tmp_path):
    out = freeze_bank(artifacts["single_onnx"], tmp_path / "frozen.onnx", num_samples=S, seed=SEED)
    x = _x(5, 3)
    got = _run(out, x)
    assert sorted(got) == ["mean", "std"]
    ref = load(artifacts["single_onnx"]).predict(x, num_samples=S, seed=SEED, strategy="bank")
    np.testing.assert_allclose(got["mean"], ref.mean, atol=1e-5, rtol=0)
    np.testing.assert_allclose(got["std"], ref.std, atol=1e-5, rtol=0)  # population std (ddof=0)
    assert got["mean"].shape == (5, 2)


def test_rows_are_independent(artifacts, tmp_path):
    out = freeze_bank(artifacts["mlp_onnx_vectorized"], tmp_path / "frozen.onnx", num_samples=S, seed=SEED)
    x = _x(6, 6)
    batch = _run(out, x)
    for row in (0, 4):
        alone = _run(out, x[row : row + 1])
        for name, value in batch.items():
            assert alone[name].shape[0] == 1
            np.testing.assert_allclose(alone[name][0], value[row], atol=1e-6, rtol=0)


def test_manifest_and_load_refusal(artifacts, tmp_path):
    import onnx

    out = freeze_bank(artifacts["mlp_onnx_vectorized"], tmp_path / "frozen.onnx", num_samples=S, seed=SEED)
    assert onnx.load(str(out)).ir_version <= 10
    m = read_manifest(out)
    assert m.contract == 2 and m.noise == [] and m.sample_axis is None
    assert [t.name for t in m.outputs] == ["probabilities", "predicted_class", "predictive_entropy", "mutual_information"]
    info = m.extra["frozen_bank"]
    assert info["samples"] == S and info["seed"] == SEED
    assert info["noise_generator"] == read_manifest(artifacts["mlp_onnx_vectorized"]).noise_generator
    with pytest.raises(ArtifactError, match="frozen-bank"):
        load(out)
    with pytest.raises(ArtifactError, match="frozen-bank"):  # not frozen twice either
        freeze_bank(out, tmp_path / "twice.onnx", num_samples=S, seed=SEED)


def test_bad_inputs(artifacts, tmp_path):
    with pytest.raises(StrategyError, match="per-call"):
        freeze_bank(artifacts["mlp_onnx_per-call"], tmp_path / "f.onnx", num_samples=S, seed=SEED)
    for bad in (0, -1, 2.5, True):
        with pytest.raises(InputError, match="num_samples"):
            freeze_bank(artifacts["mlp_onnx_vectorized"], tmp_path / "f.onnx", num_samples=bad, seed=SEED)
    with pytest.raises(InputError, match="seed"):
        freeze_bank(artifacts["mlp_onnx_vectorized"], tmp_path / "f.onnx", num_samples=S, seed=-1)
    with pytest.raises(ArtifactError, match="ONNX"):
        freeze_bank(artifacts["mlp_torchscript_vectorized"], tmp_path / "f.onnx", num_samples=S, seed=SEED)
    with pytest.raises(IlliaExportError):  # never over its own input
        freeze_bank(artifacts["mlp_onnx_vectorized"], artifacts["mlp_onnx_vectorized"], num_samples=S, seed=SEED)
    assert not (tmp_path / "f.onnx").exists()


def test_cli_freeze_writes_the_bank_of_that_seed(artifacts, tmp_path, capsys):
    from illia_export.cli import main

    out = tmp_path / "frozen.onnx"
    assert main(["freeze", str(artifacts["mlp_onnx_vectorized"]), "-o", str(out), "-S", str(S), "--seed", str(SEED)]) == 0
    assert "9 samples of seed 77" in capsys.readouterr().out
    x = _x(4, 6)
    ref = load(artifacts["mlp_onnx_vectorized"]).predict(x, num_samples=S, seed=SEED, strategy="bank")
    np.testing.assert_allclose(_run(out, x)["probabilities"], ref.probabilities, atol=1e-5, rtol=0)


@pytest.mark.parametrize("extra,message", [(["-S", "0", "--seed", "1"], "--samples"), (["-S", "2", "--seed", "-1"], "--seed")])
def test_cli_freeze_refuses_bad_counts(artifacts, tmp_path, capsys, extra, message):
    from illia_export.cli import main

    assert main(["freeze", str(artifacts["mlp_onnx_vectorized"]), "-o", str(tmp_path / "f.onnx"), *extra]) == 2
    err = capsys.readouterr().err
    assert message in err and "\n" not in err.strip()
    assert not (tmp_path / "f.onnx").exists()
