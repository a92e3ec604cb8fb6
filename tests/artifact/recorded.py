"""Assertions on what an export recorded in ``manifest.validation`` (they can fail on a correct
export's figures, unlike ``validation.passed``, which an export that raises otherwise always has)."""

from __future__ import annotations

import math


def assert_validation_recorded(manifest, min_batches: int = 2) -> None:
    """The recorded figures are complete and consistent: every output compared, the worst output's
    difference recorded as the maximum, zero noise and several batch sizes covered."""
    v = manifest.validation
    assert v is not None, "the export recorded no validation"
    assert v.within_tolerance is True, v
    outputs = {o.name for o in manifest.outputs}
    assert set(v.per_output) == outputs, (sorted(v.per_output), sorted(outputs))
    assert all(math.isfinite(d) and d >= 0 for d in v.per_output.values()), v.per_output
    assert v.max_abs_diff == max(v.per_output.values()), (v.max_abs_diff, v.per_output)
    assert v.num_noise_draws >= 1 and v.includes_zero_noise, v
    assert len(set(v.batch_sizes)) >= min_batches, v.batch_sizes
