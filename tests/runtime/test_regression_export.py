"""Heteroscedastic Bayesian regressors (PyTorch) exported with a likelihood: the runtime's
predictive variance equals a direct Monte Carlo computation on the source model for the same
noise, for every likelihood and scale parameterization; evaluate reports regression metrics."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("onnxruntime")
pytest.importorskip("scipy")

import illia_export  # noqa: E402
from illia_export.errors import ExportError  # noqa: E402
from illia_export.nn.torch import Linear  # noqa: E402
from illia_export.runtime import load  # noqa: E402

S = 24


class HeteroMLP(torch.nn.Module):
    """4 -> 12 -> (mean [B, 2], scale [B, 2]); the scale output is in the parameterization `kind`."""

    def __init__(self, kind: str) -> None:
        super().__init__()
        self.kind = kind
        self.fc1 = Linear(4, 12)
        self.mean = Linear(12, 2)
        self.scale = Linear(12, 2)
        torch.manual_seed(0)
        for layer in (self.fc1, self.mean, self.scale):
            for dist in (layer.weights_distribution, layer.bias_distribution):
                with torch.no_grad():
                    dist.mu.normal_(0.0, 0.4)
                    dist.rho.fill_(-2.0)  # sigma ~ 0.13: visible epistemic spread

    def forward(self, x):
        h = torch.tanh(self.fc1(x))
        raw = self.scale(h)
        if self.kind == "variance":
            raw = torch.exp(raw)
        elif self.kind == "std":
            raw = torch.nn.functional.softplus(raw)
        return self.mean(h), raw


class SingleOutput(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = Linear(4, 1)

    def forward(self, x):
        return self.fc(x)


def _scale_parameter(raw: np.ndarray, kind: str) -> np.ndarray:
    raw = raw.astype(np.float64)
    return {
        "std": lambda: raw,
        "variance": lambda: np.sqrt(raw),
        "log_variance": lambda: np.exp(raw / 2),
        "softplus_std": lambda: np.log1p(np.exp(raw)),
    }[kind]()


def _direct(model, x: np.ndarray, predictor, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-sample (loc, raw scale) of the eager source model with the runtime's noise."""
    noise = predictor.noise(S, seed)
    modules = dict(model.named_modules())
    locs, raws = [], []
    with torch.no_grad():
        for s in range(S):
            for spec in predictor.manifest.noise:
                modules[spec.parameter].set_noise(torch.from_numpy(noise[spec.name][s]))
            try:
                loc, raw = model(torch.from_numpy(x))
            finally:
                for spec in predictor.manifest.noise:
                    modules[spec.parameter].clear_noise()
            locs.append(loc.numpy())
            raws.append(raw.numpy())
    return np.stack(locs), np.stack(raws)


CASES = [
    ("gaussian", "log_variance", None, "onnx"),
    ("gaussian", "variance", None, "onnx"),
    ("laplace", "std", None, "onnx"),
    ("student_t", "softplus_std", 4.0, "onnx"),
    ("gaussian", "log_variance", None, "torchscript"),
]


@pytest.mark.parametrize(("name", "kind", "df", "fmt"), CASES)
def test_runtime_variance_matches_direct_mc_on_the_source_model(tmp_path, name, kind, df, fmt):
    model = HeteroMLP(kind).eval()
    path = tmp_path / ("reg.onnx" if fmt == "onnx" else "reg.pt")
    manifest = illia_export.export(
        model,
        torch.zeros(3, 4),
        path,
        format=fmt,
        task="regression",
        likelihood=name,
        scale=kind,
        df=df,
        local_variant=False,
    )
    lk = manifest.likelihood
    assert (lk.name, lk.mean, lk.scale, lk.scale_kind, lk.df) == (name, "output_0", "output_1", kind, df)
    predictor = load(path)
    assert predictor.manifest.likelihood == lk  # read back from the artifact
    x = np.random.default_rng(0).normal(size=(7, 4)).astype(np.float32)
    pred = predictor.predict(x, num_samples=S, seed=11)
    loc, raw = _direct(model, x, predictor, seed=11)
    scale = _scale_parameter(raw, kind)
    factor = {"gaussian": 1.0, "laplace": 2.0, "student_t": (df or 0) / ((df or 0) - 2)}[name]
    aleatoric = (factor * scale**2).mean(axis=0)
    epistemic = loc.astype(np.float64).var(axis=0)
    # same noise, float32 graph vs float32 eager: agreement to float rounding
    np.testing.assert_allclose(pred.mean, loc.mean(axis=0), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(pred.aleatoric_variance, aleatoric, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(pred.epistemic_variance, epistemic, rtol=1e-3, atol=1e-6)
    np.testing.assert_allclose(pred.predictive_variance, aleatoric + epistemic, rtol=1e-4, atol=1e-6)
    assert np.all(epistemic > 1e-4)  # the weight posterior really adds spread
    assert pred.log_likelihood(loc.mean(axis=0)).shape == (7,)


def test_bad_likelihood_arguments_fail_before_writing(tmp_path):
    path = tmp_path / "reg.onnx"
    with pytest.raises(ExportError, match="task='regression'"):
        illia_export.export(HeteroMLP("std"), torch.zeros(2, 4), path, likelihood="gaussian", scale="std")
    with pytest.raises(ExportError, match="two outputs"):
        illia_export.export(
            SingleOutput(), torch.zeros(2, 4), path, task="regression", likelihood="gaussian", scale="std"
        )
    with pytest.raises(ExportError, match="scale="):
        illia_export.export(
            HeteroMLP("std"), torch.zeros(2, 4), path, task="regression", likelihood="gaussian"
        )
    with pytest.raises(ExportError, match="degrees of freedom"):
        illia_export.export(
            HeteroMLP("std"), torch.zeros(2, 4), path, task="regression", likelihood="student_t", scale="std"
        )
    assert not path.exists()


@pytest.fixture(scope="module")
def regression_files(tmp_path_factory):
    out = tmp_path_factory.mktemp("reg_eval")
    model = HeteroMLP("log_variance").eval()
    illia_export.export(
        model,
        torch.zeros(3, 4),
        out / "reg.onnx",
        task="regression",
        likelihood="gaussian",
        scale="log_variance",
        local_variant=False,
    )
    illia_export.export(model, torch.zeros(3, 4), out / "plain.onnx", task="regression", local_variant=False)
    rng = np.random.default_rng(5)
    x = rng.normal(size=(40, 4)).astype(np.float32)
    np.save(out / "x.npy", x)
    np.save(out / "y.npy", rng.normal(size=(40, 2)))
    return out


def _strict(text: str):
    def refuse(token):
        raise AssertionError(f"non-standard JSON token {token}")

    return json.loads(text, parse_constant=refuse)


def test_evaluate_reports_regression_metrics(regression_files, capsys):
    from illia_export.cli import main
    from illia_export.evaluation import evaluate_regression

    d = regression_files
    args = ["evaluate", str(d / "reg.onnx"), "--input", str(d / "x.npy"), "--labels", str(d / "y.npy")]
    assert main([*args, "--samples", "16", "--json", "--levels", "0.5,0.9"]) == 0
    report = _strict(capsys.readouterr().out)
    assert report["nll_method"] == "mixture" and report["likelihood"]["scale_kind"] == "log_variance"
    assert [c["level"] for c in report["coverage"]] == [0.5, 0.9]
    # the report's numbers are the runtime's
    pred = load(d / "reg.onnx").predict(np.load(d / "x.npy"), num_samples=16, seed=0)
    y = np.load(d / "y.npy")
    assert report["nll"] == pytest.approx(-pred.log_likelihood(y).mean(), rel=1e-9)
    assert report["rmse"] == pytest.approx(math.sqrt(np.mean((pred.mean - y) ** 2)), rel=1e-9)
    lo, hi = pred.interval(0.9)
    assert report["coverage"][1]["coverage"] == pytest.approx(np.mean((lo <= y) & (y <= hi)))
    assert report["calibration_error"] == pytest.approx(
        np.mean([abs(c["coverage"] - c["level"]) for c in report["coverage"]])
    )
    # text table
    assert main([*args, "--samples", "16"]) == 0
    out = capsys.readouterr().out
    for label in ("NLL (mixture)", "RMSE", "coverage of 0.95 interval", "mean epistemic variance"):
        assert label in out, label
    # without a likelihood: sample summaries and a moment-matched Gaussian NLL
    plain = evaluate_regression(d / "plain.onnx", np.load(d / "x.npy"), y, num_samples=16)
    assert plain["nll_method"] == "gaussian_moment_match" and plain["likelihood"] is None
    assert "mean_aleatoric_variance" not in plain


def test_export_cli_records_the_likelihood(tmp_path, capsys):
    from illia_export.cli import main

    archive = tmp_path / "reg.pt"
    torch.jit.save(torch.jit.script(HeteroMLP("std").eval()), str(archive))
    out = tmp_path / "reg.onnx"
    common = [str(archive), "-o", str(out), "--input-shape", "2,4"]
    assert (
        main(
            [
                *common,
                "--task",
                "regression",
                "--likelihood",
                "student_t",
                "--scale",
                "std",
                "--df",
                "3",
                "--json",
            ]
        )
        == 0
    )
    manifest = _strict(capsys.readouterr().out)
    assert manifest["likelihood"] == {
        "name": "student_t",
        "mean": "output_0",
        "scale": "output_1",
        "scale_kind": "std",
        "df": 3.0,
    }
    assert load(out).manifest.likelihood.df == 3.0
    # the summary line names the likelihood
    assert main([*common, "--task", "regression", "--likelihood", "gaussian", "--scale", "std"]) == 0
    assert "likelihood: gaussian (mean 'output_0', scale 'output_1' as std)" in capsys.readouterr().out
    # a likelihood without --task regression is a one-line error (exit 2)
    assert main([*common, "--likelihood", "gaussian", "--scale", "std"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "task='regression'" in err[0]
