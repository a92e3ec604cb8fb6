"""``illia-export evaluate`` and ``illia_export.evaluation`` on ONNX, TorchScript and TFLite artifacts.

One small Bayesian MLP (weights with a visible posterior spread) is exported from PyTorch to ONNX
and TorchScript, and the same weights are loaded into the equivalent Flax-NNX model and exported
to TFLite by the JAX exporter. For the same seed the runtime feeds the same noise to all three, so
their metrics must agree; the metrics must also equal the ones computed by hand from the runtime's
predictions.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from illia_export import metrics
from illia_export.cli import main
from illia_export.errors import ArtifactError, ShapeError
from illia_export.evaluation import evaluate, summarize_predictions
from illia_export.nn.torch import Linear

ROOT = Path(__file__).resolve().parents[2]
IN, HIDDEN, CLASSES = 6, 16, 4
SEED, SAMPLES = 3, 32


class MLP(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc1 = Linear(IN, HIDDEN)
        self.fc2 = Linear(HIDDEN, CLASSES)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(torch.relu(self.fc1(x)))


def _make_mlp() -> MLP:
    torch.manual_seed(0)
    model = MLP()
    with torch.no_grad():
        for dist in (
            model.fc1.weights_distribution,
            model.fc1.bias_distribution,
            model.fc2.weights_distribution,
            model.fc2.bias_distribution,
        ):
            dist.mu.normal_(0.0, 1.0)
            dist.rho.fill_(math.log(math.expm1(0.5)))  # sigma = 0.5: a clearly random posterior
    return model


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(60, IN)).astype(np.float32)
    y = rng.integers(0, CLASSES, size=60)
    x_ood = (rng.normal(size=(40, IN)) * 4).astype(np.float32)
    return x, y, x_ood


_EXPORT_SCRIPT = """
import sys, warnings
import torch
import illia_export
from tests.cli.test_evaluate import IN, _make_mlp

out = sys.argv[1]
model = _make_mlp()
with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    for name, fmt, task in (("mlp.onnx", "onnx", "classification"), ("mlp.pt", "torchscript", "classification"),
                            ("raw.onnx", "onnx", "raw")):
        illia_export.export(model, torch.zeros(2, IN), f"{out}/{name}", format=fmt, task=task)
"""


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory):
    """The MLP exported to ONNX (classification and raw) and TorchScript, in a separate process.

    A separate process keeps this suite's ONNX exports from touching TorchScript's per-class
    compilation cache of the layers in the pytest process (the legacy ONNX exporter inlines the
    cached graphs in place, which later archive exports in the same process misread as traced).
    """
    out = tmp_path_factory.mktemp("evaluate")
    env = dict(
        os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    )
    res = subprocess.run(
        [sys.executable, "-c", _EXPORT_SCRIPT, str(out)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert res.returncode == 0, res.stderr[-3000:]
    paths = {"onnx": out / "mlp.onnx", "torchscript": out / "mlp.pt", "raw": out / "raw.onnx"}
    return _make_mlp(), paths


@pytest.fixture(scope="module")
def npy_files(tmp_path_factory, data):
    x, y, x_ood = data
    d = tmp_path_factory.mktemp("npy")
    np.save(d / "x.npy", x)
    np.save(d / "y.npy", y)
    np.save(d / "ood.npy", x_ood)
    np.save(d / "y_short.npy", y[:-1])
    np.save(d / "y_2d.npy", y.reshape(-1, 1))
    return d


def _run_json(*args: str, capsys) -> dict:
    capsys.readouterr()
    code = main(["evaluate", *args, "--json"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    lines = [line for line in captured.out.splitlines() if line.strip()]
    assert len(lines) == 1, f"--json must print exactly one JSON object, got:\n{captured.out}"
    return json.loads(lines[0])


def _cli_args(path: Path, d: Path, ood: bool = True) -> list[str]:
    args = [str(path), "--input", str(d / "x.npy"), "--labels", str(d / "y.npy")]
    if ood:
        args += ["--ood", str(d / "ood.npy")]
    return args + ["--samples", str(SAMPLES), "--seed", str(SEED)]


def test_evaluate_matches_metrics_computed_from_the_runtime(artifacts, data):
    from illia_export import runtime

    _, paths = artifacts
    x, y, x_ood = data
    report = evaluate(paths["onnx"], x, y, x_ood=x_ood, num_samples=SAMPLES, seed=SEED)
    predictor = runtime.load(paths["onnx"])
    p_in = predictor.predict(x, num_samples=SAMPLES, seed=SEED)
    p_out = predictor.predict(x_ood, num_samples=SAMPLES, seed=SEED)
    probs = np.asarray(p_in.probabilities, dtype=np.float64)
    assert report["accuracy"] == pytest.approx(metrics.accuracy(probs, y))
    assert report["nll"] == pytest.approx(metrics.negative_log_likelihood(probs, y))
    assert report["brier"] == pytest.approx(metrics.brier_score(probs, y))
    assert report["ece"] == pytest.approx(metrics.expected_calibration_error(probs, y).ece)
    assert report["ood"]["auroc_mutual_information"] == pytest.approx(
        metrics.ood_auroc(p_in.mutual_information, p_out.mutual_information)
    )
    assert report["ood"]["auroc_predictive_entropy"] == pytest.approx(
        metrics.ood_auroc(p_in.predictive_entropy, p_out.predictive_entropy)
    )
    assert (report["num_examples"], report["num_classes"], report["ood"]["num_examples"]) == (60, CLASSES, 40)
    assert (report["num_samples"], report["seed"], report["strategy"]) == (SAMPLES, SEED, "fresh")
    # Independent check of the probabilities themselves: softmax of the eager model under the same noise.
    from illia_export.artifact.manifest import read_manifest

    model, _ = artifacts
    reference = _reference_probabilities(model, read_manifest(paths["onnx"]), x, SEED, SAMPLES)
    np.testing.assert_allclose(probs, reference, atol=1e-5)
    # A different seed gives different predictions (the noise really is used).
    other = evaluate(paths["onnx"], x, y, num_samples=SAMPLES, seed=SEED + 1)
    assert other["nll"] != report["nll"]


def test_evaluate_accepts_a_loaded_predictor(artifacts, data):
    from illia_export import runtime

    _, paths = artifacts
    x, y, _ = data
    by_path = evaluate(paths["onnx"], x, y, num_samples=SAMPLES, seed=SEED)
    by_predictor = evaluate(runtime.load(paths["onnx"]), x, y, num_samples=SAMPLES, seed=SEED)
    assert by_path == by_predictor
    assert "ood" not in by_path
    chunked = evaluate(paths["onnx"], x, y, num_samples=SAMPLES, seed=SEED, chunk_size=5)
    for key in ("accuracy", "nll", "brier", "ece"):
        assert chunked[key] == pytest.approx(by_path[key], abs=1e-6), key


def test_onnx_and_torchscript_agree_for_the_same_seed(artifacts, npy_files, capsys):
    _, paths = artifacts
    onnx_report = _run_json(*_cli_args(paths["onnx"], npy_files), capsys=capsys)
    ts_report = _run_json(*_cli_args(paths["torchscript"], npy_files), capsys=capsys)
    for key in ("accuracy", "nll", "brier", "ece", "mean_mutual_information"):
        assert ts_report[key] == pytest.approx(onnx_report[key], abs=1e-5), key
    for key in ("auroc_predictive_entropy", "auroc_mutual_information"):
        assert ts_report["ood"][key] == pytest.approx(onnx_report["ood"][key], abs=1e-3), key
    assert onnx_report["calibration"]["bin_count"] == ts_report["calibration"]["bin_count"]
    assert sum(onnx_report["calibration"]["bin_count"]) == 60


def _jax_twin(torch_model: MLP):
    """The Flax-NNX MLP with the torch model's mu/rho (same layout: weights [out, in])."""
    pytest.importorskip("flax")
    pytest.importorskip("illia_export.exporters.jax.export", reason="the JAX exporter has not landed")
    import jax
    import jax.numpy as jnp
    from flax import nnx

    from illia_export.nn.jax import Linear as JLinear

    class JaxMLP(nnx.Module):
        def __init__(self, rngs: nnx.Rngs) -> None:
            self.fc1 = JLinear(IN, HIDDEN, rngs=rngs)
            self.fc2 = JLinear(HIDDEN, CLASSES, rngs=rngs)

        def __call__(self, x):
            return self.fc2(jax.nn.relu(self.fc1(x)))

    jm = JaxMLP(nnx.Rngs(0))
    for name in ("fc1", "fc2"):
        for dist in ("weights_distribution", "bias_distribution"):
            src = getattr(getattr(torch_model, name), dist)
            dst = getattr(getattr(jm, name), dist)
            dst.mu.set_value(jnp.asarray(src.mu.detach().numpy()))
            dst.rho.set_value(jnp.asarray(src.rho.detach().numpy()))
    return jm


def _reference_probabilities(
    torch_model: MLP, manifest, x: np.ndarray, seed: int, num_samples: int
) -> np.ndarray:
    """Predictive probabilities of the eager torch model fed the runtime's noise for `manifest`.

    Stream k of the manifest's generator (``noise_generator``) feeds the k-th noise input of the
    manifest, which names the distribution it belongs to; the same numbers are injected into the
    torch model by that name.
    """
    from illia_export.runtime.noise import reference

    standard_normal = reference(manifest.noise_generator)

    modules = dict(torch_model.named_modules())
    try:
        for k, spec in enumerate(manifest.noise):
            shape = [d for d in spec.shape if d != "samples"]
            eps = standard_normal(seed, k, shape, 0, num_samples)
            modules[spec.parameter].set_noise(torch.from_numpy(eps))
        with torch.no_grad():
            xs = torch.from_numpy(np.tile(x, (num_samples, 1)))  # S sample-major copies of the batch
            logits = torch_model(xs).reshape(num_samples, x.shape[0], -1).double()
    finally:
        for spec in manifest.noise:
            modules[spec.parameter].clear_noise()
    return torch.softmax(logits, dim=-1).mean(dim=0).numpy()


def test_tflite_from_jax_agrees_with_onnx_and_with_the_torch_model(
    artifacts, data, npy_files, tmp_path, capsys
):
    """TFLite (JAX exporter) on the torch model's weights: same metrics as the JAX exporter's ONNX
    artifact for the same seed, and the same probabilities as the torch model fed the same noise.

    The JAX and torch manifests may list the noise inputs in different orders (stream k feeds
    the k-th entry), so the cross-framework check maps the noise by distribution name.
    """
    pytest.importorskip("tensorflow")
    import jax.numpy as jnp

    import illia_export
    from illia_export import runtime

    torch_model, paths = artifacts
    x, y, _ = data
    jm = _jax_twin(torch_model)
    tflite, jax_onnx = tmp_path / "mlp.tflite", tmp_path / "mlp_jax.onnx"
    example = jnp.zeros((2, IN), jnp.float32)
    manifest = illia_export.export(jm, example, tflite, format="tflite", task="classification")
    illia_export.export(jm, example, jax_onnx, format="onnx", task="classification")
    torch_manifest = illia_export.artifact.manifest.read_manifest(paths["onnx"])
    assert sorted(n.parameter for n in manifest.noise) == sorted(n.parameter for n in torch_manifest.noise)

    tfl_report = _run_json(*_cli_args(tflite, npy_files), capsys=capsys)
    onnx_report = _run_json(*_cli_args(jax_onnx, npy_files), capsys=capsys)
    for key in ("accuracy", "nll", "brier", "ece", "mean_mutual_information"):
        assert tfl_report[key] == pytest.approx(onnx_report[key], abs=1e-5), key
    for key in ("auroc_predictive_entropy", "auroc_mutual_information"):
        assert tfl_report["ood"][key] == pytest.approx(onnx_report["ood"][key], abs=1e-3), key

    probs = runtime.load(tflite).predict(x, num_samples=SAMPLES, seed=SEED).probabilities
    reference = _reference_probabilities(torch_model, manifest, x, SEED, SAMPLES)
    np.testing.assert_allclose(probs, reference, atol=1e-5)
    assert tfl_report["nll"] == pytest.approx(metrics.negative_log_likelihood(reference, y), abs=1e-5)
    assert tfl_report["accuracy"] == metrics.accuracy(reference, y)


def test_table_output_lists_every_metric(artifacts, npy_files, capsys):
    _, paths = artifacts
    capsys.readouterr()
    assert main(["evaluate", *_cli_args(paths["onnx"], npy_files)]) == 0
    out = capsys.readouterr().out
    for label in (
        "accuracy",
        "NLL",
        "Brier",
        "ECE (15 bins)",
        "OOD AUROC (predictive entropy)",
        "OOD AUROC (mutual information)",
    ):
        assert label in out, label
    report = evaluate(
        paths["onnx"],
        *[np.load(npy_files / n) for n in ("x.npy", "y.npy")],
        x_ood=np.load(npy_files / "ood.npy"),
        num_samples=SAMPLES,
        seed=SEED,
    )
    assert f"{report['accuracy']:.4f}" in out and f"{report['ood']['auroc_mutual_information']:.4f}" in out
    capsys.readouterr()
    assert main(["evaluate", *_cli_args(paths["onnx"], npy_files, ood=False)]) == 0
    assert "OOD" not in capsys.readouterr().out


@pytest.mark.parametrize(
    ("labels", "artifact", "message"),
    [
        ("y_short.npy", "onnx", "59"),
        ("y_2d.npy", "onnx", "shape (60, 1)"),
        ("y.npy", "raw", "task='raw'"),
        ("missing.npy", "onnx", "missing.npy"),
    ],
)
def test_bad_inputs_exit_2_with_one_line(artifacts, npy_files, labels, artifact, message):
    _, paths = artifacts
    args = [str(paths[artifact]), "--input", str(npy_files / "x.npy"), "--labels", str(npy_files / labels)]
    exe = Path(sys.executable).with_name("illia-export")
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "illia_export.cli"]
    res = subprocess.run(
        cmd + ["evaluate", *args, "--samples", "4"], capture_output=True, text=True, timeout=300
    )
    assert res.returncode == 2, res.stderr
    assert res.stdout == ""
    err = [line for line in res.stderr.splitlines() if line.strip()]
    assert len(err) == 1, res.stderr
    assert err[0].startswith("illia-export: error:") and message in err[0], err[0]


def test_bad_inputs_raise_typed_errors(artifacts, data):
    _, paths = artifacts
    x, y, _ = data
    with pytest.raises(ShapeError, match="59"):
        evaluate(paths["onnx"], x, y[:-1], num_samples=4)
    with pytest.raises(ArtifactError, match="classification"):
        evaluate(paths["raw"], x, y, num_samples=4)
    with pytest.raises(ShapeError, match="lie in"):
        evaluate(paths["onnx"], x, np.full(60, CLASSES), num_samples=4)
    with pytest.raises(ValueError, match="num_samples"):
        evaluate(paths["onnx"], x, y, num_samples=0)


def test_samples_must_be_positive(capsys):
    """Refused before any file is read, in one line naming the flag (the CLI's user-error rule)."""
    assert main(["evaluate", "a.onnx", "--input", "x.npy", "--labels", "y.npy", "--samples", "0"]) == 2
    err = capsys.readouterr().err.strip()
    assert "--samples (=0) must be a positive integer" in err and "\n" not in err


def test_summarize_predictions_rejects_non_classifier_predictions():
    class RegressionPrediction:
        probabilities = None

    with pytest.raises(ArtifactError, match="not a classifier"):
        summarize_predictions(RegressionPrediction(), np.zeros(3, dtype=int))
