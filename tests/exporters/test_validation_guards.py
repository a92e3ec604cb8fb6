"""Guards of the same-noise validation: each test fails if its guard is weakened.

The runner under test is a stand-in artifact computed from the eager model itself, correct
except for one defect: it ignores the noise (a check on the zero-noise draw alone would pass it),
it is wrong only at the second batch size, it returns NaN, it draws hidden noise. A correct
stand-in passes (so the failures are the defects', not the harness').
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from illia_export.errors import ToleranceError
from illia_export.exporters.torch.capture import inference_modes
from illia_export.exporters.torch.pipeline import prepare, reference_outputs, same_noise, validation_batches
from illia_export.exporters.verify.same_noise import Comparison
from illia_export.nn.torch import Linear


@pytest.fixture(scope="module", params=["vectorized", "per-call"])
def cap(request):
    torch.manual_seed(0)
    model = torch.nn.Sequential(Linear(4, 6), torch.nn.ReLU(), Linear(6, 2))
    with torch.random.fork_rng(devices=[]), inference_modes(model, []):
        yield prepare(model, torch.randn(2, 4), None, None, None, request.param)


def _runner(cap, defect: str | None):
    n_in = len(cap.inputs)
    calls = {"n": 0}

    def run(arrays):
        xs = [torch.from_numpy(a) for a in arrays[:n_in]]
        noise = list(arrays[n_in:])
        if defect == "ignores_noise":
            noise = [np.zeros_like(z) for z in noise]
        out = reference_outputs(cap.model, xs, noise, cap.vectorized)
        batch = xs[0].shape[0]
        if defect == "wrong_at_second_batch" and batch == validation_batches(cap.batch)[1]:
            out = [o + 1.0 for o in out]
        if defect == "nan":
            out = [o.copy() for o in out]
            out[0].flat[0] = np.nan
        if defect == "hidden_noise":
            calls["n"] += 1
            out = [o + 1e-7 * calls["n"] for o in out]
        return out

    return run


def test_a_correct_artifact_passes(cap):
    result = same_noise(cap, _runner(cap, None), 1e-5, 0.0, 2)
    assert result.passed and result.includes_zero_noise
    assert result.batch_sizes == list(validation_batches(cap.batch))


@pytest.mark.parametrize("defect", ["ignores_noise", "wrong_at_second_batch", "nan", "hidden_noise"])
def test_each_defect_fails_validation(cap, defect):
    with pytest.raises(ToleranceError):
        same_noise(cap, _runner(cap, defect), 1e-5, 0.0, 2)


def test_nan_on_both_sides_is_still_a_failure():
    cmp = Comparison(["y"], tolerance=1.0)
    cmp.add([np.array([np.nan, 1.0])], [np.array([np.nan, 1.0])])
    with pytest.raises(ToleranceError):
        cmp.result(1)


def test_relative_tolerance_scales_with_the_value():
    cmp = Comparison(["y"], tolerance=1e-4, rtol=1e-4)
    cmp.add([np.array([10000.5])], [np.array([10000.0])])  # 0.5 <= 1e-4 + 1e-4 * 1e4
    assert cmp.result(1).passed
    strict = Comparison(["y"], tolerance=1e-4, rtol=0.0)
    strict.add([np.array([10000.5])], [np.array([10000.0])])
    with pytest.raises(ToleranceError):
        strict.result(1)
