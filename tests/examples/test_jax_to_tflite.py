"""``examples/jax_to_tflite.py --quick``: Flax-NNX -> TFLite + ONNX, same targets as the torch demo."""

import json

import pytest

from tests.examples.conftest import load_example


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    for module in ("sklearn", "optax", "flax", "tensorflow", "onnxruntime"):
        pytest.importorskip(module)
    pytest.importorskip("illia_export.exporters.jax.export", reason="the JAX exporter has not landed")
    example = load_example("jax_to_tflite")
    out = tmp_path_factory.mktemp("jax_tflite")
    return example, out, example.main(["--quick", "--out", str(out)])


def test_quick_jax_example_reaches_targets_from_the_tflite_artifact(quick_run):
    _, _, report = quick_run
    assert (report["num_examples"], report["ood"]["num_examples"]) == (361, 354)
    assert report["accuracy"] >= 0.95
    assert report["ood"]["auroc_mutual_information"] >= 0.85
    assert report["ood"]["mean_mutual_information"] > report["mean_mutual_information"]


def test_quick_jax_example_tflite_and_onnx_agree(quick_run):
    example, out, report = quick_run
    assert report["tflite_onnx_max_abs_diff"] <= example.AGREEMENT_TOLERANCE
    for name in ("digits_mlp.tflite", "digits_mlp.onnx"):
        assert (out / name).is_file()
    assert (out / "uncertainty_hist.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    saved = json.loads((out / "metrics.json").read_text())
    assert saved["accuracy"] == pytest.approx(report["accuracy"])
