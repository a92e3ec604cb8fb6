"""BatchEnsembleLinear beside Bayesian Linear layers, vectorized (issue #19 item 8).

The ensemble splits its batch into member groups, so every batch must be a multiple of the
member count; the export's own checks (same noise at two other batches, the distribution check
on a few rows) must respect that, and the artifact must match the eager model for the same
noise at any such batch.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

import illia_export
from illia_export.exporters.torch.capture import inference_modes
from illia_export.exporters.torch.pipeline import reference_outputs
from illia_export.exporters.torch.writers import ArtifactRunner
from illia_export.nn.torch import BatchEnsembleLinear, Linear


def _model():
    torch.manual_seed(0)
    return nn.Sequential(BatchEnsembleLinear(nn.Linear(4, 5), num_members=3), nn.ReLU(), Linear(5, 2)).eval()


@pytest.mark.parametrize("fmt", ["onnx", "pt2"])
def test_vectorized_batch_ensemble_matches_the_eager_model(tmp_path, fmt):
    model = _model()
    path = tmp_path / f"be.{fmt}"
    manifest = illia_export.export(model, torch.randn(6, 4), path, format=fmt, samples="vectorized")
    assert manifest.sample_axis == 0 and manifest.validation.max_abs_diff <= 1e-4
    runner = ArtifactRunner(fmt, path, ["input"] + [n.name for n in manifest.noise])
    rng = np.random.default_rng(0)
    for batch in (3, 9):
        x = torch.from_numpy(rng.standard_normal((batch, 4)).astype(np.float32))
        noise = [rng.standard_normal([4] + list(n.shape[1:])).astype(np.float32) for n in manifest.noise]
        with inference_modes(model, []):
            expected = reference_outputs(model, [x], noise, vectorized=True)
        got = runner([x.numpy()] + noise)
        assert np.abs(got[0] - expected[0]).max() <= 1e-4
