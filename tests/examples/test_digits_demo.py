"""The README's main demo (``examples/digits_uncertainty.py --quick``) reaches its targets.

The demo runs as a subprocess, as ``scripts/demo.sh`` runs it (and so that its ONNX exports do
not touch TorchScript's compilation cache of the layer classes in the pytest process).
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.examples.conftest import load_example

ROOT = Path(__file__).resolve().parents[2]
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    pytest.importorskip("sklearn")
    pytest.importorskip("matplotlib")
    pytest.importorskip("onnxruntime")
    demo = load_example("digits_uncertainty")
    out = tmp_path_factory.mktemp("digits")
    env = dict(
        os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    )
    res = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "digits_uncertainty.py"), "--quick", "--out", str(out)],
        cwd=out,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert res.returncode == 0, f"demo failed:\n{res.stdout[-3000:]}\n{res.stderr[-3000:]}"
    report = json.loads((out / "metrics.json").read_text())
    return demo, out, report, res.stdout


def test_quick_demo_reaches_accuracy_and_ood_targets(quick_run):
    _, _, report, _ = quick_run
    assert report["num_examples"] == 361  # 25 % of the 1,443 digits 0-7
    assert report["ood"]["num_examples"] == 354  # every 8 and 9
    assert report["accuracy"] >= 0.95
    assert report["ood"]["auroc_mutual_information"] >= 0.85
    assert report["ood"]["auroc_predictive_entropy"] >= 0.85
    # OOD inputs carry more epistemic uncertainty on average.
    assert report["ood"]["mean_mutual_information"] > report["mean_mutual_information"]
    assert 0 <= report["ece"] < 0.15
    assert report["nll"] < 0.3
    assert report["brier"] < 0.1


def test_quick_demo_onnx_and_torchscript_agree(quick_run):
    demo, _, report, _ = quick_run
    assert 0 <= report["torchscript_onnx_max_abs_diff"] <= demo.AGREEMENT_TOLERANCE


def test_quick_demo_writes_artifacts_figures_and_metrics(quick_run):
    _, out, report, stdout = quick_run
    for name in ("digits_cnn.onnx", "digits_cnn.pt", "metrics.json"):
        assert (out / name).is_file(), name
    assert len(report["figures"]) == 3
    for path in report["figures"]:
        with open(path, "rb") as f:
            assert f.read(8) == PNG_MAGIC, path
    # The demo says where the figures are, and prints the metrics it saved.
    for path in report["figures"]:
        assert path in stdout, path
    assert f"{100 * report['accuracy']:.2f} %" in stdout
    assert f"{report['ood']['auroc_mutual_information']:.4f}" in stdout


def test_quick_demo_artifact_matches_cli_evaluate(quick_run, tmp_path, capsys):
    """`illia-export evaluate` on the demo's artifact reproduces the demo's numbers (same seed)."""
    demo, out, report, _ = quick_run
    from illia_export.cli import main as cli_main

    data = demo.load_data(seed=demo.QUICK.seed)
    np.save(tmp_path / "x.npy", data.x_test)
    np.save(tmp_path / "y.npy", data.y_test)
    np.save(tmp_path / "ood.npy", data.x_ood)
    capsys.readouterr()
    code = cli_main(
        [
            "evaluate",
            str(out / "digits_cnn.onnx"),
            "--input",
            str(tmp_path / "x.npy"),
            "--labels",
            str(tmp_path / "y.npy"),
            "--ood",
            str(tmp_path / "ood.npy"),
            "--samples",
            str(report["num_samples"]),
            "--seed",
            str(report["seed"]),
            "--json",
        ]
    )
    assert code == 0
    cli = json.loads(capsys.readouterr().out)
    for key in ("accuracy", "nll", "brier", "ece"):
        assert cli[key] == pytest.approx(report[key], abs=1e-9), key
    assert cli["ood"]["auroc_mutual_information"] == pytest.approx(report["ood"]["auroc_mutual_information"])
