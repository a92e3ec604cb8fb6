"""The CLI's JAX model convention: ``pkg.module:factory --weights state.npz``."""

from __future__ import annotations

import numpy as np

from illia_export.artifact.manifest import read_manifest
from illia_export.cli import main
from illia_export.exporters.jax.export import save_jax_weights
from tests.artifact.recorded import assert_validation_recorded  # noqa: E402
from tests.exporters.jax import _runners, models


def test_cli_exports_a_jax_factory_with_weights(tmp_path, capsys):
    trained = models.make_mlp(seed=5)
    weights = save_jax_weights(trained, tmp_path / "w.npz")
    out = tmp_path / "mlp.onnx"
    code = main(
        [
            "tests.exporters.jax.models:make_mlp",
            "--weights", str(weights),
            "--format", "onnx",
            "--samples", "per-call",
            "--input-shape", "2,12",
            "-o", str(out),
        ]
    )
    assert code == 0
    assert "output: max diff" in capsys.readouterr().out
    manifest = read_manifest(out)
    assert manifest.source == "jax"
    assert_validation_recorded(manifest)
    # the artifact carries the *loaded* weights: zero noise gives the trained model's mean network
    x = np.random.default_rng(0).standard_normal((3, 12)).astype(np.float32)
    zero = {n.name: np.zeros(n.event_shape, np.float32) for n in manifest.noise}
    (got,) = _runners.run("onnx", out, {"input": x, **zero}, ["output"])
    for layer in trained.layers:
        layer.weights_distribution.set_noise(np.zeros(layer.weights_distribution.shape, np.float32))
        layer.bias_distribution.set_noise(np.zeros(layer.bias_distribution.shape, np.float32))
    np.testing.assert_allclose(got, np.asarray(trained(x)), atol=1e-5)


def test_cli_token_model_gets_in_range_tokens_and_a_dynamic_sequence(tmp_path, capsys):
    weights = save_jax_weights(models.make_seq(seed=2), tmp_path / "seq.npz")
    out = tmp_path / "seq.onnx"
    code = main(
        [
            "tests.exporters.jax.models:make_seq",
            "--weights", str(weights),
            "--input-shape", "2,5",
            "--dtype", "int64",
            "-o", str(out),
        ]
    )  # fmt: skip
    assert code == 0, capsys.readouterr().err
    manifest = read_manifest(out)
    assert manifest.inputs[0].shape == ["batch", "seq_len"]
    tokens = np.random.default_rng(0).integers(0, 20, (3, 9)).astype(manifest.inputs[0].dtype)
    noise = {n.name: np.zeros([2] + n.event_shape, np.float32) for n in manifest.noise}
    outs = _runners.run("onnx", out, {"input": tokens, **noise}, [o.name for o in manifest.outputs])
    assert outs[0].shape == (2, 3, 3)


def test_cli_mc_dropout_samples_an_nnx_dropout(tmp_path, capsys):
    weights = save_jax_weights(models.make_drop_mlp(seed=1), tmp_path / "drop.npz")
    out = tmp_path / "drop.onnx"
    args = ["tests.exporters.jax.models:make_drop_mlp", "--weights", str(weights), "--input-shape", "2,12"]
    # without --mc-dropout nothing is random: refused, pointing at the flag's API twin
    assert main([*args, "-o", str(out)]) != 0
    assert "mc_dropout=True" in capsys.readouterr().err and not out.exists()
    assert main([*args, "--mc-dropout", "-o", str(out)]) == 0, capsys.readouterr().err
    manifest = read_manifest(out)
    assert [(n.name, n.shape, n.kind) for n in manifest.noise] == [("eps_drop_dropout", ["samples", "batch", 16], "dropout")]
    assert 0.8 <= manifest.validation.distribution["output"]["std_ratio"] <= 1.25


def test_cli_deterministic_exports_a_model_without_noise(tmp_path, capsys):
    """An nnx model whose dropout stays off has no noise input: refused by default, written with
    --deterministic (the user says the artifact is meant to be deterministic)."""
    weights = save_jax_weights(models.make_drop_mlp(seed=1), tmp_path / "drop.npz")
    out = tmp_path / "det.onnx"
    args = ["tests.exporters.jax.models:make_drop_mlp", "--weights", str(weights), "--input-shape", "2,12",
            "--samples", "per-call", "-o", str(out)]
    assert main(args) != 0 and not out.exists()
    capsys.readouterr()
    assert main([*args, "--deterministic"]) == 0, capsys.readouterr().err
    assert read_manifest(out).noise == []
