"""ORT format for mobile (docs/mobile.md): an exported ONNX artifact converted with
``python -m onnxruntime.tools.convert_onnx_models_to_ort`` keeps its manifest, its dynamic
batch and its outputs for the same noise."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

ort = pytest.importorskip("onnxruntime")
torch = pytest.importorskip("torch")

from illia_export.artifact.manifest import ONNX_METADATA_KEY  # noqa: E402
from illia_export.runtime.noise import standard_normal  # noqa: E402


def _mlp():
    from illia_export.nn.torch import Linear

    class MLP(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc1 = Linear(784, 32)
            self.fc2 = Linear(32, 10)

        def forward(self, x):
            return self.fc2(torch.relu(self.fc1(x)))

    return MLP()


def _feeds(session, manifest: dict, x: np.ndarray, seed: int, num_samples: int) -> dict:
    feeds = {manifest["inputs"][0]["name"]: x}
    for k, spec in enumerate(manifest["noise"]):
        event = [d for d in spec["shape"] if isinstance(d, int)]
        eps = standard_normal(seed, k, event, 0, num_samples)
        feeds[spec["name"]] = eps if manifest["sample_axis"] == 0 else eps[0]
    assert sorted(feeds) == sorted(i.name for i in session.get_inputs())
    return feeds


@pytest.mark.parametrize("samples", ["vectorized", "per-call"])
def test_ort_format_conversion_keeps_manifest_and_outputs(tmp_path, samples):
    import illia_export

    torch.manual_seed(0)
    onnx_path = tmp_path / f"mlp_{samples}.onnx"
    illia_export.export(
        _mlp(), (torch.randn(4, 784),), onnx_path, format="onnx", samples=samples, task="classification"
    )

    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "onnxruntime.tools.convert_onnx_models_to_ort",
            str(onnx_path),
            "--output_dir",
            str(tmp_path / "ort"),
            "--optimization_style",
            "Fixed",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    ort_path = tmp_path / "ort" / f"mlp_{samples}.ort"
    assert ort_path.exists(), sorted(p.name for p in (tmp_path / "ort").iterdir())

    options = ort.SessionOptions()
    ref = ort.InferenceSession(str(onnx_path), options, providers=["CPUExecutionProvider"])
    mobile = ort.InferenceSession(str(ort_path), options, providers=["CPUExecutionProvider"])

    # The manifest travels in the model metadata, so an app reads it from the .ort itself.
    text = mobile.get_modelmeta().custom_metadata_map[ONNX_METADATA_KEY]
    assert json.loads(text) == json.loads(ref.get_modelmeta().custom_metadata_map[ONNX_METADATA_KEY])
    manifest = json.loads(text)

    # A batch other than the export's (4): the batch dim stays dynamic in the ORT format.
    x = np.random.default_rng(0).standard_normal((3, 784)).astype(np.float32)
    num_samples = 5 if samples == "vectorized" else 1
    feeds = _feeds(mobile, manifest, x, seed=11, num_samples=num_samples)
    (want,) = ref.run(None, feeds)
    (got,) = mobile.run(None, feeds)
    assert got.shape == ((num_samples, 3, 10) if samples == "vectorized" else (3, 10))
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-5)
    # Zero noise gives the mean-weight network, noise changes the output.
    zero = {k: (np.zeros_like(v) if k.startswith("eps_") else v) for k, v in feeds.items()}
    assert np.abs(mobile.run(None, zero)[0] - got).max() > 1e-4


def test_python_runtime_runs_the_ort_model(tmp_path):
    """illia_export.runtime reads a .ort's manifest from its metadata (kept by the conversion)
    and predicts as with the .onnx."""
    import illia_export
    from illia_export.artifact.manifest import read_manifest
    from illia_export.runtime import load

    torch.manual_seed(0)
    onnx_path = tmp_path / "mlp.onnx"
    illia_export.export(_mlp(), (torch.randn(4, 784),), onnx_path, format="onnx", task="classification")
    subprocess.run(
        [sys.executable, "-m", "onnxruntime.tools.convert_onnx_models_to_ort", str(onnx_path),
         "--output_dir", str(tmp_path), "--optimization_style", "Fixed"],
        capture_output=True, text=True, timeout=300, check=True,
    )  # fmt: skip
    ort_path = tmp_path / "mlp.ort"
    assert read_manifest(ort_path).to_dict() == read_manifest(onnx_path).to_dict()
    x = np.random.default_rng(1).standard_normal((6, 784)).astype(np.float32)
    want = load(onnx_path).predict(x, num_samples=8, seed=3)
    got = load(ort_path).predict(x, num_samples=8, seed=3)
    np.testing.assert_allclose(got.samples, want.samples, rtol=0, atol=1e-5)
