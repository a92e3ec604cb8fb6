"""Exports from TorchScript archives: scripted (every format/mode) and traced (ONNX per-call)."""

from __future__ import annotations

import warnings

import numpy as np
import onnxruntime as ort
import pytest
import torch
from torch import nn

import illia_export
from illia_export.errors import ExportError
from illia_export.nn.torch import LSTM, Conv2d, Linear


class Small(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = Conv2d(1, 3, 3)
        self.fc = Linear(3 * 4 * 4, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.relu(self.conv(x)).flatten(1))


def _save(module, path, traced: bool, example):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        saved = torch.jit.trace(module, example, check_trace=False) if traced else torch.jit.script(module)
        torch.jit.save(saved, str(path))


@pytest.mark.parametrize("fmt", ["onnx", "torchscript"])
def test_scripted_archive_vectorized(tmp_path, fmt):
    torch.manual_seed(0)
    model = Small().eval()
    archive = tmp_path / "small.pt"
    _save(model, archive, False, None)
    out = tmp_path / ("out.onnx" if fmt == "onnx" else "out.pt")
    manifest = illia_export.export(str(archive), torch.randn(2, 1, 6, 6), out, format=fmt)
    assert manifest.source == "torchscript" and manifest.vectorized
    assert manifest.validation.max_abs_diff <= 1e-4


def test_traced_archive_to_onnx_per_call(tmp_path):
    torch.manual_seed(0)
    model = Small().eval()
    archive = tmp_path / "traced.pt"
    _save(model, archive, True, torch.randn(2, 1, 6, 6))
    out = tmp_path / "traced.onnx"
    manifest = illia_export.export(str(archive), torch.randn(2, 1, 6, 6), out, samples="per-call")
    assert manifest.sample_axis is None and manifest.extra.get("traced_archive")
    assert [n.parameter for n in manifest.noise] == [
        "conv.weights_distribution",
        "conv.bias_distribution",
        "fc.weights_distribution",
        "fc.bias_distribution",
    ]
    # same noise -> same numbers as the eager model with that eps injected
    sess = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(1)
    x = torch.randn(5, 1, 6, 6)
    modules = dict(model.named_modules())
    for _ in range(3):
        eps = {n.name: rng.standard_normal(n.shape).astype(np.float32) for n in manifest.noise}
        for n in manifest.noise:
            modules[n.parameter].set_noise(torch.from_numpy(eps[n.name]))
        with torch.no_grad():
            want = model(x).numpy()
        for n in manifest.noise:
            modules[n.parameter].clear_noise()
        (got,) = sess.run(None, {"input": x.numpy(), **eps})
        np.testing.assert_allclose(got, want, atol=1e-5)


def test_traced_archive_refuses_vectorized_and_lstm(tmp_path):
    archive = tmp_path / "traced.pt"
    _save(Small().eval(), archive, True, torch.randn(2, 1, 6, 6))
    with pytest.raises(ExportError, match="traced"):
        illia_export.export(str(archive), torch.randn(2, 1, 6, 6), tmp_path / "v.onnx")
    with pytest.raises(ExportError, match="traced"):
        illia_export.export(str(archive), torch.randn(2, 1, 6, 6), tmp_path / "v.pt", format="torchscript", samples="per-call")
    lstm_archive = tmp_path / "lstm.pt"
    _save(LSTM(10, 4, 5, 2).eval(), lstm_archive, True, torch.randint(0, 10, (2, 4)))
    with pytest.raises(ExportError, match="unrolled"):
        illia_export.export(str(lstm_archive), torch.randint(0, 10, (2, 4)), tmp_path / "l.onnx", samples="per-call")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["lstm.pt", "traced.pt"]


def test_scripted_archive_after_an_onnx_export_in_the_same_process(tmp_path):
    """The legacy ONNX exporter inlines the layer classes' shared graphs in place; a scripted
    archive exported afterwards must still be recognised as scripted, not traced."""
    torch.manual_seed(0)
    model = Small().eval()
    illia_export.export(model, torch.randn(2, 1, 6, 6), tmp_path / "first.onnx")
    archive = tmp_path / "small.pt"
    _save(model, archive, False, None)
    manifest = illia_export.export(str(archive), torch.randn(2, 1, 6, 6), tmp_path / "second.onnx")
    assert manifest.vectorized and not manifest.extra.get("traced_archive")
