"""The TorchScript strategy's local-reparameterization variant, judged and checked by the shared tail.

Local reparameterization draws independent pre-activation noise per call; a Siamese model
applies one Linear to two inputs, whose exact outputs share the weight sample. The same-noise
check of the local graph passes (it compares against the local reference), so only the
distribution check against the exact model's sampling can tell: the variant's spread is a
fraction of the exact one, and it must not ship.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from torch import nn

import illia_export
from illia_export import runtime
from illia_export.errors import ExportError
from illia_export.nn.torch import Conv2d, Linear


class Siamese(nn.Module):
    """One Bayesian Linear applied to both halves of the input; the output is their difference.

    The halves use disjoint input columns and the bias is (almost) deterministic, so the exact
    artifact (one weight sample shared by both calls) has the source's spread; a local variant
    reuses one pre-activation noise for both calls and cancels most of it.
    """

    def __init__(self) -> None:
        super().__init__()
        self.shared = Linear(4, 3)
        with torch.no_grad():
            self.shared.weights_distribution.rho.fill_(0.0)  # weight std softplus(0) = 0.69
            self.shared.bias_distribution.rho.fill_(-14.0)  # bias std 8e-7

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.shared(x[:, :4]) - self.shared(x[:, 4:])


def test_scripted_siamese_ships_no_local_variant(tmp_path):
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        scripted = torch.jit.script(Siamese())
    archive = tmp_path / "siamese.pt"
    scripted.save(str(archive))
    out = tmp_path / "siamese.onnx"
    x = torch.randn(4, 8)
    x[:, [2, 3, 4, 5]] = 0.0  # first half uses columns 0-1 of the weight, second half 2-3
    manifest = illia_export.export(str(archive), x, out, samples="vectorized")
    assert manifest.local is None
    assert "the local variant failed its checks" in manifest.local_unavailable
    assert "distribution check failed: the local-reparameterization variant" in manifest.local_unavailable
    assert not (tmp_path / "siamese.local.onnx").exists()
    # the exact artifact itself matches the source's sampling
    assert 0.8 < manifest.validation.distribution["output"]["std_ratio"] < 1.25


def _archive(module, path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.jit.save(torch.jit.script(module), str(path))
    return str(path)


def test_one_guard_judges_the_torchscript_strategy(tmp_path):
    """A Linear-only archive gets an exact TorchScript local variant (checked, stamped, run by the
    runtime); an archive with a convolution gets none, and asking for one names the draw."""
    torch.manual_seed(0)
    mlp = nn.Sequential(Linear(6, 8), nn.ReLU(), Linear(8, 3)).eval()
    manifest = illia_export.export(_archive(mlp, tmp_path / "mlp.pt"), torch.randn(4, 6), tmp_path / "m.pt", format="torchscript")
    assert manifest.local is not None and manifest.local.file == "m.local.pt" and manifest.local.digest
    pred = runtime.load(tmp_path / "m.pt").predict(np.ones((3, 6), np.float32), num_samples=8, seed=0, strategy="local")
    assert pred.samples.shape == (8, 3, 3)

    conv = nn.Sequential(Conv2d(1, 2, 3), nn.Flatten(), Linear(2 * 4 * 4, 2)).eval()
    cnn = _archive(conv, tmp_path / "cnn.pt")
    manifest = illia_export.export(cnn, torch.randn(2, 1, 6, 6), tmp_path / "c.onnx")
    assert manifest.local is None and "'0.weights_distribution' does not belong to an illia Linear" in manifest.local_unavailable
    with pytest.raises(ExportError, match="was asked for, but the draw '0.weights_distribution'"):
        illia_export.export(cnn, torch.randn(2, 1, 6, 6), tmp_path / "c2.onnx", local_variant=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.onnx", "cnn.pt", "m.local.pt", "m.pt", "mlp.pt"]


def test_live_siamese_to_torchscript_is_refused_by_the_guard(tmp_path):
    """From a live module the TorchScript strategy observes the calls of each Linear, so the one
    guard refuses the shared Linear before any local graph is written."""
    torch.manual_seed(0)
    x = torch.randn(4, 8)
    manifest = illia_export.export(Siamese().eval(), x, tmp_path / "s.pt", format="torchscript")
    assert manifest.local is None and "Linear 'shared' is applied 2 times" in manifest.local_unavailable
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.pt"]
