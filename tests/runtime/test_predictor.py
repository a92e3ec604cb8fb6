"""Predictor: cross-backend parity, strategies, chunking, statistics and errors."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from illia_export.errors import ArtifactError, IlliaExportError, ManifestError, ShapeError
from illia_export.runtime import DeviceUnavailableError, StrategyError, load
from illia_export.runtime.noise import reference, standard_normal
from tests.runtime.conftest import MULTI_MANIFEST, write_multi_output_onnx

X = np.random.default_rng(0).normal(size=(5, 6)).astype(np.float32)


# ------------------------------------------------------------------------------- parity
@pytest.mark.parametrize("strategy", ["fresh", "local"])
def test_onnx_and_torchscript_give_the_same_samples(artifacts, strategy):
    a = load(artifacts["mlp_onnx_vectorized"]).predict(X, num_samples=7, seed=42, strategy=strategy)
    b = load(artifacts["mlp_torchscript_vectorized"]).predict(X, num_samples=7, seed=42, strategy=strategy)
    assert a.samples.shape == (7, 5, 3)
    np.testing.assert_allclose(a.samples, b.samples, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(a.probabilities, b.probabilities, atol=1e-6)


@pytest.mark.parametrize("fmt", ["onnx", "torchscript"])
def test_per_call_and_vectorized_artifacts_agree(artifacts, fmt):
    vec = load(artifacts[f"mlp_{fmt}_vectorized"]).predict(X, num_samples=5, seed=3)
    one = load(artifacts[f"mlp_{fmt}_per-call"]).predict(X, num_samples=5, seed=3)
    np.testing.assert_allclose(vec.samples, one.samples, rtol=1e-5, atol=1e-5)


def test_samples_follow_the_documented_noise(artifacts, single_model):
    """Sample s of stream k is sample s of the manifest's generator for noise input k."""
    predictor = load(artifacts["single_onnx"])
    pred = predictor.predict(X[:, :3], num_samples=4, seed=5)
    normal = reference(predictor.generator)
    eps_w = normal(5, 0, (2, 3), 0, 4)  # stream 0: fc.weights_distribution
    eps_b = normal(5, 1, (2,), 0, 4)  # stream 1: fc.bias_distribution
    wd, bd = single_model.fc.weights_distribution, single_model.fc.bias_distribution
    w = wd.mu.detach().numpy() + wd.sigma().detach().numpy() * eps_w
    b = bd.mu.detach().numpy() + bd.sigma().detach().numpy() * eps_b
    expected = np.einsum("bi,soi->sbo", X[:, :3], w) + b[:, None, :]
    np.testing.assert_allclose(pred.samples, expected, rtol=1e-5, atol=1e-5)


def test_numpy_and_torch_noise_give_the_same_predictions(artifacts):
    a = load(artifacts["mlp_onnx_vectorized"], noise_impl="numpy").predict(X, num_samples=6, seed=8)
    b = load(artifacts["mlp_onnx_vectorized"], noise_impl="torch").predict(X, num_samples=6, seed=8)
    np.testing.assert_allclose(a.samples, b.samples, rtol=1e-5, atol=1e-5)


# --------------------------------------------------------------------------- strategies
@pytest.mark.parametrize("key", ["mlp_onnx_vectorized", "mlp_torchscript_per-call"])
@pytest.mark.parametrize("strategy", ["fresh", "bank"])
def test_chunk_size_does_not_change_results(artifacts, key, strategy):
    p = load(artifacts[key])
    ref = p.predict(X, num_samples=7, seed=1, strategy=strategy).samples
    for chunk in (1, 3, 7, 100):
        np.testing.assert_array_equal(
            p.predict(X, num_samples=7, seed=1, strategy=strategy, chunk_size=chunk).samples, ref
        )


def test_local_chunk_size_does_not_change_results(artifacts):
    p = load(artifacts["mlp_onnx_vectorized"])
    ref = p.predict(X, num_samples=6, seed=2, strategy="local").samples
    np.testing.assert_allclose(
        p.predict(X, num_samples=6, seed=2, strategy="local", chunk_size=4).samples, ref, atol=1e-6
    )


@pytest.mark.parametrize("key", ["mlp_onnx_vectorized", "mlp_torchscript_vectorized", "cnn_onnx"])
def test_fresh_and_bank_with_one_seed_give_the_same_samples(artifacts, key):
    p = load(artifacts[key])
    x = np.random.default_rng(0).normal(size=(3, 1, 6, 6)).astype(np.float32) if key == "cnn_onnx" else X
    fresh = p.predict(x, num_samples=5, seed=11).samples
    np.testing.assert_allclose(
        p.predict(x, num_samples=5, seed=11, strategy="bank").samples, fresh, rtol=1e-6, atol=1e-6
    )
    np.testing.assert_allclose(
        p.predict(x, num_samples=5, seed=11, strategy="bank", chunk_size=2).samples,
        fresh,
        rtol=1e-6,
        atol=1e-6,
    )


def test_onnx_bank_precomputes_the_noise_only_subgraph(artifacts):
    split = load(artifacts["mlp_onnx_vectorized"])
    plain = load(artifacts["mlp_onnx_vectorized"], split_bank=False)
    a = split.predict(X, num_samples=4, seed=6, strategy="bank")
    b = plain.predict(X, num_samples=4, seed=6, strategy="bank")
    assert split.backend._split and plain.backend._split is False
    (bank,) = split._sources["bank"]._banks.values()
    assert len(bank.tokens) == 1
    np.testing.assert_allclose(a.samples, b.samples, rtol=1e-6, atol=1e-6)


def test_bank_is_drawn_once_and_reused(artifacts):
    p = load(artifacts["mlp_onnx_vectorized"])
    first = p.predict(X, num_samples=6, strategy="bank")  # seed drawn once per predictor
    (bank,) = p._sources["bank"]._banks.values()
    second = p.predict(X[:2], num_samples=6, strategy="bank")
    assert list(p._sources["bank"]._banks.values()) == [bank] and first.seed == second.seed
    np.testing.assert_array_equal(first.samples[:, :2], second.samples)
    p.clear_bank()
    third = p.predict(X, num_samples=6, strategy="bank")
    assert third.seed != first.seed and not np.allclose(third.samples, first.samples)


def test_fresh_without_seed_differs_per_call_and_reports_its_seed(artifacts):
    p = load(artifacts["mlp_onnx_vectorized"])
    a = p.predict(X, num_samples=4)
    b = p.predict(X, num_samples=4)
    assert a.seed != b.seed and not np.allclose(a.samples, b.samples)
    np.testing.assert_array_equal(p.predict(X, num_samples=4, seed=a.seed).samples, a.samples)


def test_predictor_noise_is_what_the_graph_gets(artifacts):
    p = load(artifacts["single_onnx"])
    eps = p.noise(3, seed=4)
    assert list(eps) == ["eps_fc_weights_distribution", "eps_fc_bias_distribution"]
    np.testing.assert_allclose(
        eps["eps_fc_bias_distribution"], reference(p.generator)(4, 1, (2,), 0, 3), atol=1e-6
    )
    local = p.noise(3, seed=4, strategy="local", batch_size=5)
    assert local["eps_local_fc"].shape == (3, 5, 2)


# --------------------------------------------------------------------------- statistics
@pytest.mark.parametrize("fmt", ["onnx", "torchscript"])
@pytest.mark.parametrize("strategy", ["fresh", "local"])
def test_single_linear_matches_the_analytic_gaussian(artifacts, single_model, fmt, strategy):
    x = np.array([[1.0, 2.0, -1.0], [0.5, -0.5, 3.0], [0.0, 0.0, 0.0]], dtype=np.float32)
    num = 4000
    pred = load(artifacts[f"single_{fmt}"]).predict(x, num_samples=num, seed=2024, strategy=strategy)
    mean, var = single_model.analytic(x)
    sd = np.sqrt(var)
    # 5 standard errors: the mean's SE is sd/sqrt(S); the variance's is var*sqrt(2/(S-1)).
    assert np.all(np.abs(pred.mean - mean) < 5 * sd / np.sqrt(num))
    assert np.all(np.abs(pred.std**2 - var) < 5 * var * np.sqrt(2 / (num - 1)))
    # Weight-space MC shares the weights across the batch; local noise is independent per row.
    corr = np.corrcoef(pred.samples[:, 0, 0], pred.samples[:, 1, 0])[0, 1]
    if strategy == "local":
        assert abs(corr) < 0.1
    else:
        assert abs(corr) > 0.1


# ------------------------------------------------------------------------- multi-output
def test_multi_output_graph_keeps_all_outputs(tmp_path):
    path = tmp_path / "multi.onnx"
    write_multi_output_onnx(path, MULTI_MANIFEST)
    pred = load(path).predict(X[:, :2], num_samples=3, seed=0)
    eps = standard_normal(0, 0, (2,), 0, 3)
    np.testing.assert_allclose(pred.outputs["y"], X[None, :, :2] * eps[:, None, :], atol=1e-6)
    np.testing.assert_allclose(pred.outputs["z"], pred.outputs["y"] + 1, atol=1e-6)
    assert pred.output_name == "y" and pred.samples is pred.outputs["y"]


# ------------------------------------------------------------------------------- errors
def test_missing_manifest_is_a_manifest_error(tmp_path):
    path = tmp_path / "bare.onnx"
    write_multi_output_onnx(path, None)
    with pytest.raises(ManifestError, match="carries no illia-export manifest"):
        load(path)


def test_malformed_manifest_is_a_manifest_error(tmp_path):
    bad = dict(MULTI_MANIFEST)
    del bad["noise"]
    path = tmp_path / "bad.onnx"
    write_multi_output_onnx(path, bad)
    with pytest.raises(ManifestError, match="noise"):
        load(path)
    side = tmp_path / "side.onnx"
    write_multi_output_onnx(side, None)
    (tmp_path / "side.onnx.manifest.json").write_text("{not json")
    with pytest.raises(ManifestError, match="not valid JSON"):
        load(side)


def test_manifest_naming_absent_graph_inputs_is_an_artifact_error(tmp_path):
    m = json.loads(json.dumps(MULTI_MANIFEST))
    m["noise"][0]["name"] = "eps_other"
    path = tmp_path / "mismatch.onnx"
    write_multi_output_onnx(path, m)
    with pytest.raises(ArtifactError, match="eps_other"):
        load(path)


def test_missing_artifact(tmp_path):
    with pytest.raises(ArtifactError, match="not found"):
        load(tmp_path / "nothing.onnx")


def test_wrong_input_shape_names_the_expected_shape(artifacts):
    p = load(artifacts["mlp_onnx_vectorized"])
    with pytest.raises(ShapeError, match=r"\[batch, 6\] float32.*\[5, 7\]"):
        p.predict(np.zeros((5, 7), np.float32), num_samples=2, seed=0)
    with pytest.raises(ShapeError, match=r"\[batch, 6\]"):
        p.predict(np.zeros((6,), np.float32), num_samples=2, seed=0)
    with pytest.raises(ShapeError, match="dtype int64"):
        p.predict(np.zeros((2, 6), np.int64), num_samples=2, seed=0)
    with pytest.raises(ShapeError, match="takes 1 inputs"):
        p.predict([X, X], num_samples=2, seed=0)
    with pytest.raises(ShapeError, match="missing"):
        p.predict({"other": X}, num_samples=2, seed=0)


def test_float64_inputs_are_cast(artifacts):
    p = load(artifacts["mlp_onnx_vectorized"])
    np.testing.assert_array_equal(
        p.predict(X.astype(np.float64), num_samples=2, seed=0).samples,
        p.predict(X, num_samples=2, seed=0).samples,
    )
    np.testing.assert_array_equal(
        p.predict({"input": X}, num_samples=2, seed=0).samples, p.predict([X], num_samples=2, seed=0).samples
    )


def test_local_is_refused_without_a_local_variant(artifacts):
    for key in ("cnn_onnx", "mlp_onnx_per-call"):
        p = load(artifacts[key])
        x = np.zeros((2, 1, 6, 6), np.float32) if key == "cnn_onnx" else X
        with pytest.raises(StrategyError, match="exact only for Linear layers"):
            p.predict(x, num_samples=2, seed=0, strategy="local")
        assert p.predict(x, num_samples=2, seed=0).samples.shape[0] == 2


def test_missing_local_file_is_an_artifact_error(artifacts, tmp_path):
    src = artifacts["single_onnx"]
    shutil.copy(src, tmp_path / src.name)
    with pytest.raises(ArtifactError, match="local variant"):
        load(tmp_path / src.name).predict(X[:, :3], num_samples=2, seed=0, strategy="local")


def test_bad_arguments(artifacts):
    p = load(artifacts["mlp_onnx_vectorized"])
    with pytest.raises(StrategyError, match="strategy"):
        p.predict(X, strategy="ensemble")
    for kwargs in ({"num_samples": 0}, {"seed": -1}, {"chunk_size": 0}, {"task": "ranking"}):
        with pytest.raises(ValueError):
            p.predict(X, **kwargs)


@pytest.mark.parametrize("key", ["mlp_onnx_vectorized", "mlp_torchscript_vectorized"])
def test_cuda_without_cuda_is_a_clear_error(artifacts, key):
    import onnxruntime
    import torch

    has_cuda = (
        "CUDAExecutionProvider" in onnxruntime.get_available_providers()
        if key.startswith("mlp_onnx")
        else torch.cuda.is_available()
    )
    if has_cuda:
        pytest.skip("a CUDA device is available here; the GPU tests cover it")
    with pytest.raises(DeviceUnavailableError, match="cuda") as info:
        load(artifacts[key], device="cuda")
    assert isinstance(info.value, IlliaExportError)


def test_unknown_device(artifacts):
    with pytest.raises(DeviceUnavailableError, match="'cpu' or 'cuda'"):
        load(artifacts["mlp_onnx_vectorized"], device="tpu")


def test_repr_and_task_override(artifacts):
    p = load(artifacts["mlp_onnx_vectorized"])
    assert "vectorized" in repr(p) and "local variant" in repr(p)
    pred = p.predict(X, num_samples=3, seed=0, task="raw")
    assert pred.task == "raw"
    pred.interval(0.8)


def test_local_noise_is_kept_for_an_explicit_seed_and_drawn_per_call_otherwise(artifacts):
    p = load(artifacts["mlp_onnx_vectorized"])
    a = p.predict(X, num_samples=5, seed=3, strategy="local")
    cached = p._sources["local"]._cache[1]
    b = p.predict(X, num_samples=5, seed=3, strategy="local")
    assert p._sources["local"]._cache[1] is cached
    np.testing.assert_array_equal(a.samples, b.samples)
    # the same numbers as a predictor that never cached anything
    fresh = load(artifacts["mlp_onnx_vectorized"]).predict(
        X, num_samples=5, seed=3, strategy="local", chunk_size=2
    )
    np.testing.assert_allclose(fresh.samples, a.samples, atol=1e-6)
    c = p.predict(X, num_samples=5, strategy="local")
    d = p.predict(X, num_samples=5, strategy="local")
    assert c.seed != d.seed and not np.allclose(c.samples, d.samples)


def test_cuda_provider_listed_but_not_active_is_refused(artifacts, monkeypatch):
    """onnxruntime may list CUDAExecutionProvider yet fall back to the CPU (missing CUDA libs):
    the runtime must refuse instead of running on the CPU silently."""
    import onnxruntime

    real_session = onnxruntime.InferenceSession

    def cpu_only_session(path, sess_options=None, providers=None):
        return real_session(path, sess_options=sess_options, providers=["CPUExecutionProvider"])

    monkeypatch.setattr(
        onnxruntime, "get_available_providers", lambda: ["CUDAExecutionProvider", "CPUExecutionProvider"]
    )
    monkeypatch.setattr(onnxruntime, "InferenceSession", cpu_only_session)
    with pytest.raises(DeviceUnavailableError, match="did not activate CUDAExecutionProvider"):
        load(artifacts["mlp_onnx_vectorized"], device="cuda")


def test_importing_the_runtime_loads_no_heavy_backend():
    import subprocess
    import sys

    code = (
        "import sys, illia_export.runtime\n"
        "heavy = [m for m in ('tensorflow', 'torch', 'onnxruntime', 'jax') if m in sys.modules]\n"
        "print(','.join(heavy))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


def test_lstm_onnx_and_torchscript_agree_on_every_output(artifacts):
    tokens = np.random.default_rng(3).integers(0, 50, size=(4, 9))  # exported at T=5
    a = load(artifacts["lstm_onnx"]).predict(tokens, num_samples=4, seed=12, chunk_size=3)
    b = load(artifacts["lstm_torchscript"]).predict(tokens.astype(np.int32), num_samples=4, seed=12)
    assert list(a.outputs) == list(b.outputs) and len(a.outputs) == 3
    assert a.samples.shape == (4, 4, 3) and a.outputs[list(a.outputs)[1]].shape == (4, 4, 16)
    for name in a.outputs:
        np.testing.assert_allclose(a.outputs[name], b.outputs[name], rtol=1e-5, atol=1e-5)
    assert a.probabilities.shape == (4, 3)
    with pytest.raises(StrategyError, match="exact only for Linear"):
        load(artifacts["lstm_onnx"]).predict(tokens, num_samples=2, seed=0, strategy="local")
    with pytest.raises(ShapeError, match="dtype float32"):
        load(artifacts["lstm_onnx"]).predict(tokens.astype(np.float32), num_samples=2, seed=0)


def test_bank_runs_the_full_graph_when_the_split_fails(artifacts, monkeypatch):
    from illia_export.runtime.backends import ort_split

    def broken(*args, **kwargs):
        raise RuntimeError("unexpected graph")

    monkeypatch.setattr(ort_split, "split_noise_prefix", broken)
    p = load(artifacts["mlp_onnx_vectorized"])
    bank = p.predict(X, num_samples=4, seed=2, strategy="bank")
    assert p.backend._split is False
    np.testing.assert_allclose(bank.samples, p.predict(X, num_samples=4, seed=2).samples, atol=1e-6)


def test_auto_is_local_for_one_row_with_an_exact_variant_else_fresh(artifacts):
    """strategy='auto': one row of a Linear-only artifact (exact local variant) runs `local`;
    larger batches, and artifacts without a variant, run `fresh`. The default stays `fresh`, so a
    row gets the same numbers alone or in a batch, as on the CLI, the server and illia-mc."""
    p = load(artifacts["mlp_onnx_vectorized"])
    one = p.predict(X[:1], num_samples=6, seed=3, strategy="auto")
    assert one.strategy == "local"
    np.testing.assert_array_equal(one.samples, p.predict(X[:1], num_samples=6, seed=3, strategy="local").samples)
    many = p.predict(X, num_samples=6, seed=3, strategy="auto")
    assert many.strategy == "fresh"
    np.testing.assert_array_equal(many.samples, p.predict(X, num_samples=6, seed=3, strategy="fresh").samples)
    default = p.predict(X[:1], num_samples=6, seed=3)
    assert default.strategy == "fresh"
    np.testing.assert_allclose(default.samples[:, 0], many.samples[:, 0], rtol=0, atol=1e-6)  # same draw
    cnn = load(artifacts["cnn_onnx"])
    assert cnn.manifest.local is None and cnn.resolve_strategy("auto", 1) == "fresh"
