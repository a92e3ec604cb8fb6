"""The reference data of the examples and tests: scikit-learn's 8x8 digits with held-out classes.

Digits 0-7 are split at random into train and test; all 8s and 9s form the out-of-distribution
set (DESIGN.md's reference workload for uncertainty checks). Needs scikit-learn (the
``examples`` extra).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

#: Digits the classifiers are trained on; the others (8, 9) are the OOD set.
IN_DISTRIBUTION_CLASSES = tuple(range(8))


@dataclass
class DigitsData:
    """The digits split: train/test of the in-distribution classes, and the held-out digits as OOD."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    x_ood: np.ndarray
    y_ood: np.ndarray


def load_digits_split(
    seed: int = 0, test_fraction: float = 0.25, in_distribution: Sequence[int] = IN_DISTRIBUTION_CLASSES
) -> DigitsData:
    """Digits as float32 ``[N, 1, 8, 8]`` in [0, 1] (pixels / 16), split by class and at random."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    x = (digits.images / 16.0).astype(np.float32)[:, None]
    y = digits.target.astype(np.int64)
    ind = np.isin(y, in_distribution)
    order = np.random.default_rng(seed).permutation(np.flatnonzero(ind))
    num_test = int(round(len(order) * test_fraction))
    test, train = np.sort(order[:num_test]), np.sort(order[num_test:])
    return DigitsData(x[train], y[train], x[test], y[test], x[~ind], y[~ind])
