"""Guards of the same-noise comparison (issue #21 item 5; mutants in tests/mutants/verify.json).

Each test feeds the comparison a defect that one weakened guard would let through: the
recorded worst difference, the output shape and count checks, the zero-noise draw, the
default relative tolerance, the reference's draw count.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from illia_export.errors import ExportError, ToleranceError
from illia_export.exporters.torch.capture import inference_modes
from illia_export.exporters.torch.pipeline import prepare, reference_outputs, same_noise
from illia_export.exporters.verify.same_noise import (
    DEFAULT_RTOL,
    DEFAULT_TOLERANCE,
    Comparison,
    noise_draws,
)
from illia_export.nn.torch import Linear


def test_recorded_max_abs_diff_is_the_worst_draw_not_the_last():
    cmp = Comparison(["y"], tolerance=1.0)
    cmp.add([np.array([1.5])], [np.array([1.0])])  # 0.5, within tolerance
    cmp.add([np.array([1.1])], [np.array([1.0])])  # 0.1
    result = cmp.result(2)
    assert result.max_abs_diff == pytest.approx(0.5) and result.per_output["y"] == pytest.approx(0.5)


def test_output_shape_mismatch_fails_even_when_broadcasting_agrees():
    cmp = Comparison(["y"], tolerance=1e-3)
    with pytest.raises(ToleranceError, match="shape"):
        cmp.add([np.ones((2, 3, 1), np.float32)], [np.ones((2, 3, 4), np.float32)])


def test_a_missing_output_fails_instead_of_being_truncated():
    cmp = Comparison(["a", "b"], tolerance=1e-3)
    with pytest.raises(ToleranceError, match="expected 2 outputs"):
        cmp.add([np.ones(3)], [np.ones(3), np.ones(3)])


def test_noise_draws_end_with_the_zero_noise_set():
    sets = noise_draws([(2, 3), (4,)], num_draws=2, num_samples=5, seed=0)
    assert len(sets) == 3
    assert all(not z.any() for z in sets[-1]) and all(z.any() for s in sets[:-1] for z in s)
    assert [z.shape for z in sets[-1]] == [(5, 2, 3), (5, 4)]


def test_default_rtol_catches_a_one_percent_relative_error():
    cmp = Comparison(["y"], DEFAULT_TOLERANCE, DEFAULT_RTOL)
    cmp.add([np.array([101.0])], [np.array([100.0])])
    with pytest.raises(ToleranceError):
        cmp.result(1)


@pytest.fixture(scope="module")
def cap():
    torch.manual_seed(0)
    model = nn.Sequential(Linear(4, 6), nn.ReLU(), Linear(6, 2))
    with torch.random.fork_rng(devices=[]), inference_modes(model, []):
        yield prepare(model, torch.randn(2, 4), None, None, None, "vectorized")


def test_an_artifact_wrong_only_at_zero_noise_fails(cap):
    """The mean-weight network (zero noise) is a draw the random sets almost never hit."""
    n_in = len(cap.inputs)

    def run(arrays):
        xs = [torch.from_numpy(a) for a in arrays[:n_in]]
        noise = list(arrays[n_in:])
        out = reference_outputs(cap.model, xs, noise, cap.vectorized)
        if not any(z.any() for z in noise):
            out = [o + 1.0 for o in out]
        return out

    with pytest.raises(ToleranceError):
        same_noise(cap, run, 1e-5, 0.0, 2)


class DrawsOnlyForPositiveSums(nn.Module):
    def forward(self, x):
        out = x + torch.randn_like(x)
        if float(x.sum()) > 0:
            out = out + torch.randn_like(x)
        return out


def test_reference_refuses_a_different_number_of_draws():
    model = DrawsOnlyForPositiveSums()
    noise = [np.zeros((2, 3), np.float32), np.zeros((2, 3), np.float32)]
    with pytest.raises(ExportError, match="made 1 random draws during validation, 2 when first run"):
        reference_outputs(model, [-torch.ones(2, 3)], noise, vectorized=False)
