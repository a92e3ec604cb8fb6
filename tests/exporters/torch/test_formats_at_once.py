"""``illia_export.export(model, x, {format: path, ...})``: several formats from one torch.export
capture, each artifact validated on its own, every path checked before any work."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import illia_export
from illia_export import runtime
from illia_export.errors import ArtifactError, ExportError, ToleranceError
from illia_export.exporters.torch import pipeline, strategy_export
from illia_export.nn.torch import Linear


def _mlp() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(Linear(4, 6), torch.nn.ReLU(), Linear(6, 3))


def _count_calls(monkeypatch, module, name: str) -> list:
    calls = []
    real = getattr(module, name)

    def counted(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(module, name, counted)
    return calls


@pytest.fixture
def captures(monkeypatch):
    """How many torch.export captures (strategy_export.prepare) ran."""
    return _count_calls(monkeypatch, strategy_export, "prepare")


def test_one_capture_feeds_every_torch_export_format(tmp_path, captures):
    paths = {"onnx": tmp_path / "m.onnx", "pt2": tmp_path / "m.pt2", "torchscript": tmp_path / "m.pt"}
    manifests = illia_export.export(_mlp(), torch.zeros(2, 4), paths, samples="vectorized")
    assert list(manifests) == ["onnx", "pt2", "torchscript"]
    assert len(captures) == 1  # onnx and pt2 share it; torchscript takes its own strategy
    x = np.random.default_rng(0).standard_normal((3, 4)).astype(np.float32)
    outs = {}
    for fmt, path in paths.items():
        assert manifests[fmt].format == fmt and manifests[fmt].validation.max_abs_diff <= 1e-4
        outs[fmt] = runtime.load(path).predict(x, num_samples=5, seed=3).samples
    np.testing.assert_allclose(outs["pt2"], outs["onnx"], atol=1e-5)
    np.testing.assert_allclose(outs["torchscript"], outs["onnx"], atol=1e-5)


def test_the_source_is_sampled_once_for_every_distribution_check(tmp_path, monkeypatch):
    """ONNX with its local variant and .pt2: three distribution checks, one source sampling (a
    thousand eager forward passes); the TorchScript strategy does the same for its own two."""
    from illia_export.exporters.torch import strategy_script

    checks = _count_calls(monkeypatch, pipeline, "check_distribution")
    sampled = _count_calls(monkeypatch, strategy_export, "source_samples")
    manifests = illia_export.export(
        _mlp(), torch.zeros(2, 4), {"onnx": tmp_path / "m.onnx", "pt2": tmp_path / "m.pt2"}, samples="vectorized"
    )
    assert manifests["onnx"].local is not None
    assert all(m.validation.distribution for m in manifests.values())
    assert (len(checks), len(sampled)) == (3, 1)
    scripted = _count_calls(monkeypatch, strategy_script, "source_samples")
    manifest = illia_export.export(_mlp(), torch.zeros(2, 4), tmp_path / "m.pt", samples="vectorized")
    assert manifest.local is not None
    assert (len(checks), len(scripted)) == (5, 1)


def test_source_draws_are_kept_per_inputs_count_and_seed():
    from illia_export.exporters.torch.capture_result import sampled_once

    calls = []

    def sampling(xs, num, seed):
        calls.append((num, seed))
        return [np.full((num, 1), seed + sum(float(x.sum()) for x in xs))]

    sample = sampled_once(sampling)
    xs, same_values = [torch.ones(2)], [torch.ones(2)]
    first = sample(xs, 5, 1)
    assert sample(xs, 5, 1) is first and calls == [(5, 1)]
    assert sample(xs, 5, 2)[0][0, 0] == 4.0  # another seed: drawn again
    assert sample(xs, 6, 1)[0].shape == (6, 1)  # another count
    assert sample(same_values, 5, 1) is not first  # other tensors (equal values): drawn again
    assert sample(xs + xs, 5, 1)[0][0, 0] == 5.0  # more inputs
    assert calls == [(5, 1), (5, 2), (6, 1), (5, 1), (5, 1)]


def test_each_format_is_validated_on_its_own(tmp_path, monkeypatch):
    """A .pt2 artifact that gives other numbers fails on its own: the ONNX one written before it
    stays, and nothing is left at the .pt2 path."""
    real = pipeline.ArtifactRunner

    class ShiftedPt2(real):
        def __call__(self, arrays):
            outs = super().__call__(arrays)
            return [o + 1e-2 for o in outs] if self.fmt == "pt2" else outs

    monkeypatch.setattr(pipeline, "ArtifactRunner", ShiftedPt2)
    paths = {"onnx": tmp_path / "m.onnx", "pt2": tmp_path / "m.pt2"}
    with pytest.raises(ToleranceError):
        illia_export.export(_mlp(), torch.zeros(2, 4), paths, samples="per-call")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.onnx"]


@pytest.mark.parametrize(
    ("paths", "kwargs", "match"),
    [
        ({"onnx": "a.onnx", "pt2": "a.onnx"}, {}, "contradicts the path"),
        ({"onnx": "a.onnx"}, {"format": "onnx"}, "keys of the path mapping"),
        ({"tflite": "a.tflite"}, {}, "not available for PyTorch"),
        ({"onnx": "same.onnx", "torchscript": "sub/../same.onnx"}, {}, "contradicts the path"),
        ({1: "a.onnx"}, {}, "not the format of"),
        ({}, {}, "non-empty mapping"),
    ],
)
def test_bad_path_mappings_are_refused_before_any_capture(tmp_path, monkeypatch, captures, paths, kwargs, match):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ExportError, match=match):
        illia_export.export(_mlp(), torch.zeros(2, 4), paths, **kwargs)
    assert captures == [] and list(tmp_path.iterdir()) == []


def test_two_formats_cannot_share_one_path(tmp_path, captures):
    with pytest.raises(ExportError, match="its own output path"):
        illia_export.export(_mlp(), torch.zeros(2, 4), {"pt2": tmp_path / "m.pt2", "aoti": tmp_path / "m.pt2"})
    assert captures == [] and list(tmp_path.iterdir()) == []


def test_every_path_is_checked_before_the_capture(tmp_path, captures):
    (tmp_path / "taken.pt2").mkdir()
    with pytest.raises(ArtifactError, match="existing folder"):
        illia_export.export(_mlp(), torch.zeros(2, 4), {"onnx": tmp_path / "m.onnx", "pt2": tmp_path / "taken.pt2"})
    assert captures == [] and sorted(p.name for p in tmp_path.iterdir()) == ["taken.pt2"]


def test_a_jax_model_is_refused_clearly(tmp_path):
    nnx = pytest.importorskip("flax.nnx")
    from illia_export.nn.jax import Linear as JaxLinear

    class Net(nnx.Module):
        def __init__(self):
            self.fc = JaxLinear(4, 2, rngs=nnx.Rngs(params=0, sample=1))

        def __call__(self, x):
            return self.fc(x)

    with pytest.raises(ExportError, match="PyTorch models"):
        illia_export.export(Net(), np.zeros((2, 4), np.float32), {"onnx": tmp_path / "m.onnx"})
    assert list(tmp_path.iterdir()) == []
