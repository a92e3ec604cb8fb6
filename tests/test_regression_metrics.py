"""Regression metrics against hand-computed values."""

import math

import numpy as np
import pytest

from illia_export import metrics
from illia_export.errors import ShapeError


def test_rmse_by_hand():
    # errors 1, -2, 0, 3 -> mean square 14/4
    assert metrics.rmse(np.array([1.0, 0.0, 2.0, 3.0]), np.array([0.0, 2.0, 2.0, 0.0])) == pytest.approx(
        math.sqrt(3.5)
    )
    # [N] targets for [N, 1] predictions
    assert metrics.rmse(np.array([[1.0], [3.0]]), np.array([0.0, 0.0])) == pytest.approx(math.sqrt(5.0))
    with pytest.raises(ShapeError, match="shape"):
        metrics.rmse(np.zeros((3, 2)), np.zeros(3))


def test_gaussian_nll_by_hand():
    mean = np.array([[0.0], [1.0]])
    var = np.array([[1.0], [4.0]])
    y = np.array([[1.0], [1.0]])
    # row 0: 0.5 log(2 pi) + 0.5; row 1: 0.5 log(8 pi) + 0
    want = 0.5 * ((0.5 * math.log(2 * math.pi) + 0.5) + 0.5 * math.log(8 * math.pi))
    assert metrics.gaussian_nll(mean, var, y) == pytest.approx(want)
    # two outputs per row are summed within the row
    two = metrics.gaussian_nll(np.zeros((1, 2)), np.ones((1, 2)), np.zeros((1, 2)))
    assert two == pytest.approx(math.log(2 * math.pi))
    with pytest.raises(ShapeError, match="positive"):
        metrics.gaussian_nll(mean, np.zeros_like(var), y)


def test_interval_coverage_by_hand():
    lower = np.array([0.0, 0.0, 0.0, 0.0])
    upper = np.array([1.0, 1.0, 1.0, 1.0])
    y = np.array([0.0, 0.5, 1.0, 1.5])  # both ends count as inside
    assert metrics.interval_coverage(lower, upper, y) == 0.75
    with pytest.raises(ShapeError, match="exceed"):
        metrics.interval_coverage(upper, lower, y)


def test_coverage_calibration_error_by_hand():
    assert metrics.coverage_calibration_error([0.5, 0.9], [0.6, 0.7]) == pytest.approx(0.15)
    assert metrics.coverage_calibration_error([0.5], [0.5]) == 0.0
    with pytest.raises(ShapeError, match="strictly between"):
        metrics.coverage_calibration_error([1.0], [0.9])
    with pytest.raises(ShapeError, match="equal length"):
        metrics.coverage_calibration_error([0.5, 0.9], [0.5])
