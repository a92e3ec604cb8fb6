"""The legacy (TorchScript) path's distribution check of the local-reparameterization variant.

Local reparameterization draws independent pre-activation noise per call; a Siamese model
applies one Linear to two inputs, whose exact outputs share the weight sample. The same-noise
check of the local graph passes (it compares against the local reference), so only the
distribution check against the exact model's sampling can tell: the variant's spread is a
fraction of the exact one, and it must not ship.
"""

from __future__ import annotations

import warnings

import torch
from torch import nn

import illia_export
from illia_export.nn.torch import Linear


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
