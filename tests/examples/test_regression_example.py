"""The regression example (``examples/regression_uncertainty.py``) trains, exports with a
likelihood, and its held-out intervals are calibrated.

It runs as a subprocess, like the digits demo (its exports must not touch TorchScript's
compilation cache of the layer classes in the pytest process)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    for module in ("sklearn", "matplotlib", "onnxruntime", "scipy"):
        pytest.importorskip(module)
    out = tmp_path_factory.mktemp("regression")
    env = dict(
        os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    )
    res = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "regression_uncertainty.py"), "--out", str(out)],
        cwd=out,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert res.returncode == 0, f"example failed:\n{res.stdout[-3000:]}\n{res.stderr[-3000:]}"
    return out, json.loads((out / "metrics.json").read_text()), res.stdout


def test_held_out_coverage_is_close_to_nominal(run):
    _, report, _ = run
    assert report["num_examples"] == 110  # 25 % of 442 patients
    coverage = {c["level"]: c["coverage"] for c in report["coverage"]}
    # 110 held-out targets: the standard error of a coverage near 0.9 is ~0.03
    assert abs(coverage[0.9] - 0.9) <= 0.1, coverage
    assert abs(coverage[0.95] - 0.95) <= 0.1, coverage
    assert abs(coverage[0.5] - 0.5) <= 0.15, coverage
    assert report["calibration_error"] < 0.1
    assert report["likelihood"]["scale_kind"] == "log_variance" and report["nll_method"] == "mixture"


def test_uncertainty_combines_both_parts_and_the_fit_is_useful(run):
    _, report, _ = run
    # a constant prediction of the training mean has RMSE ~1 (standardized target)
    assert report["rmse"] < 0.85
    assert report["nll"] < 1.3
    assert report["mean_epistemic_variance"] > 0.005
    assert report["mean_aleatoric_variance"] > report["mean_epistemic_variance"]
    assert 0 < report["mean_aleatoric_share"] < 1


def test_figures_and_artifact(run):
    out, _, stdout = run
    for name in ("regression_predictions.png", "regression_calibration.png"):
        assert (out / name).read_bytes()[:8] == PNG_MAGIC
    assert (out / "diabetes_regressor.onnx").exists()
    assert "90% interval covers" in stdout


def test_jax_example_onnx_and_tflite_agree_and_are_calibrated(tmp_path):
    for module in ("sklearn", "onnxruntime", "scipy", "optax", "jax2onnx", "tensorflow"):
        pytest.importorskip(module)
    env = dict(
        os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    )
    res = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "regression_uncertainty_jax.py"), "--out", str(tmp_path)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert res.returncode == 0, f"example failed:\n{res.stdout[-3000:]}\n{res.stderr[-3000:]}"
    report = json.loads((tmp_path / "metrics.json").read_text())
    assert report["onnx_tflite_max_diff"] <= 1e-4
    assert report["likelihood"] == {
        "name": "gaussian",
        "mean": "mean",
        "scale": "log_variance",
        "scale_kind": "log_variance",
        "df": None,
    }
    coverage = {c["level"]: c["coverage"] for c in report["coverage"]}
    assert abs(coverage[0.9] - 0.9) <= 0.1, coverage
    assert report["rmse"] < 0.85 and report["nll"] < 1.3
    assert report["mean_epistemic_variance"] > 0.005
