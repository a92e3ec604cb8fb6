"""Guards of the distribution check (issue #21 item 5; mutants in tests/mutants/verify.json)."""

from __future__ import annotations

import numpy as np
import pytest

from illia_export.errors import ToleranceError
from illia_export.exporters.verify.distribution import compare


def test_output_deterministic_in_the_source_but_random_in_the_artifact_fails():
    rng = np.random.default_rng(0)
    source = np.ones((500, 4, 2))
    artifact = 1.0 + 0.1 * rng.standard_normal((500, 4, 2))
    with pytest.raises(ToleranceError, match="adds spread"):
        compare(["y"], [source], [artifact])


def test_deterministic_on_both_sides_passes():
    record = compare(["y"], [np.ones((200, 3))], [np.ones((200, 3))])
    assert record["y"]["std_ratio"] == 1.0
