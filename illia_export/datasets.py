"""The reference data of the examples and tests: scikit-learn's 8x8 digits with held-out classes,
and the diabetes regression data.

Digits 0-7 are split at random into train and test; all 8s and 9s form the out-of-distribution
set (DESIGN.md's reference workload for uncertainty checks). ``load_diabetes`` (442 patients,
10 features, a disease-progression score) is split at random and standardized for the regression
examples. Both ship with scikit-learn (the ``examples`` extra); nothing is downloaded.
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


@dataclass
class DiabetesData:
    """The diabetes split, standardized with the training split's statistics.

    ``x_*`` are float32 ``[N, 10]``, ``y_*`` float32 ``[N, 1]`` in standard units; a target in
    the original units is ``y * y_std + y_mean``.
    """

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    y_mean: float
    y_std: float


def load_diabetes_split(seed: int = 0, test_fraction: float = 0.25) -> DiabetesData:
    """scikit-learn's ``load_diabetes`` split at random (seeded) into train and test."""
    from sklearn.datasets import load_diabetes

    x, y = load_diabetes(return_X_y=True)
    order = np.random.default_rng(seed).permutation(len(y))
    num_test = int(round(test_fraction * len(y)))
    test, train = order[:num_test], order[num_test:]
    x_mean, x_std = x[train].mean(axis=0), x[train].std(axis=0)
    y_mean, y_std = float(y[train].mean()), float(y[train].std())

    def features(idx: np.ndarray) -> np.ndarray:
        return ((x[idx] - x_mean) / x_std).astype(np.float32)

    def targets(idx: np.ndarray) -> np.ndarray:
        return ((y[idx] - y_mean) / y_std).astype(np.float32)[:, None]

    return DiabetesData(features(train), targets(train), features(test), targets(test), y_mean, y_std)
