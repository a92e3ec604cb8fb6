"""Tests of illia_export.metrics against hand-computed values and scikit-learn."""

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from illia_export import metrics
from illia_export.errors import IlliaExportError, ShapeError

P3 = np.array(
    [
        [0.7, 0.2, 0.1],  # label 0: correct, conf 0.7
        [0.1, 0.6, 0.3],  # label 2: wrong, conf 0.6
        [0.25, 0.25, 0.5],  # label 2: correct, conf 0.5
        [0.05, 0.9, 0.05],  # label 1: correct, conf 0.9
    ]
)
Y3 = np.array([0, 2, 2, 1])


def test_accuracy_hand_computed():
    assert metrics.accuracy(P3, Y3) == pytest.approx(0.75)
    assert metrics.accuracy(P3, np.array([1, 1, 1, 1])) == pytest.approx(0.5)  # rows 1 and 3 predict 1


def test_nll_hand_computed():
    expected = -(math.log(0.7) + math.log(0.3) + math.log(0.5) + math.log(0.9)) / 4
    assert metrics.negative_log_likelihood(P3, Y3) == pytest.approx(expected, rel=1e-12)


def test_nll_matches_sklearn_log_loss():
    sklearn_metrics = pytest.importorskip("sklearn.metrics")
    assert metrics.negative_log_likelihood(P3, Y3) == pytest.approx(
        sklearn_metrics.log_loss(Y3, P3, labels=[0, 1, 2]), rel=1e-12
    )


def test_nll_clips_zero_probability():
    p = np.array([[1.0, 0.0]])
    value = metrics.negative_log_likelihood(p, np.array([1]))
    assert np.isfinite(value)
    assert value == pytest.approx(-math.log(metrics.NLL_EPSILON))


def test_brier_hand_computed():
    rows = [
        0.3**2 + 0.2**2 + 0.1**2,
        0.1**2 + 0.6**2 + 0.7**2,
        0.25**2 + 0.25**2 + 0.5**2,
        0.05**2 + 0.1**2 + 0.05**2,
    ]
    assert metrics.brier_score(P3, Y3) == pytest.approx(sum(rows) / 4, rel=1e-12)


def test_brier_binary_is_twice_sklearn():
    sklearn_metrics = pytest.importorskip("sklearn.metrics")
    p1 = np.array([0.1, 0.8, 0.35, 0.6, 0.99])
    y = np.array([0, 1, 1, 0, 1])
    probs = np.stack([1 - p1, p1], axis=1)
    assert metrics.brier_score(probs, y) == pytest.approx(
        2 * sklearn_metrics.brier_score_loss(y, p1), rel=1e-12
    )


def test_perfect_classifier():
    p = np.eye(3)[[0, 1, 2, 1]]
    y = np.array([0, 1, 2, 1])
    assert metrics.accuracy(p, y) == 1.0
    assert metrics.brier_score(p, y) == 0.0
    assert metrics.negative_log_likelihood(p, y) == pytest.approx(0.0, abs=1e-12)
    assert metrics.expected_calibration_error(p, y).ece == pytest.approx(0.0)


def test_ece_hand_computed_with_bins():
    # 5 bins: (0,.2], (.2,.4], (.4,.6], (.6,.8], (.8,1]
    result = metrics.expected_calibration_error(P3, Y3, num_bins=5)
    # bin 2 (.4,.6]: conf 0.6 (wrong), 0.5 (right) -> conf 0.55, acc 0.5
    # bin 3 (.6,.8]: conf 0.7 (right) -> conf 0.7, acc 1.0
    # bin 4 (.8,1]: conf 0.9 (right) -> conf 0.9, acc 1.0
    expected = 2 / 4 * abs(0.5 - 0.55) + 1 / 4 * abs(1.0 - 0.7) + 1 / 4 * abs(1.0 - 0.9)
    assert result.ece == pytest.approx(expected, rel=1e-12)
    np.testing.assert_array_equal(result.bin_count, [0, 0, 2, 1, 1])
    np.testing.assert_allclose(result.bin_edges, [0, 0.2, 0.4, 0.6, 0.8, 1.0])
    np.testing.assert_allclose(result.bin_confidence[2:], [0.55, 0.7, 0.9])
    np.testing.assert_allclose(result.bin_accuracy[2:], [0.5, 1.0, 1.0])
    assert np.all(np.isnan(result.bin_confidence[:2])) and np.all(np.isnan(result.bin_accuracy[:2]))
    assert result.num_bins == 5
    as_dict = result.to_dict()
    assert as_dict["bin_confidence"][:2] == [None, None]
    assert as_dict["bin_count"] == [0, 0, 2, 1, 1]


def test_ece_bin_boundaries_are_right_closed():
    # Confidence exactly 0.6 belongs to (0.4, 0.6], not (0.6, 0.8].
    p = np.array([[0.6, 0.4], [0.8, 0.2]])
    result = metrics.expected_calibration_error(p, np.array([0, 1]), num_bins=5)
    np.testing.assert_array_equal(result.bin_count, [0, 0, 1, 1, 0])
    assert result.ece == pytest.approx(0.5 * 0.4 + 0.5 * 0.8)


def test_ece_default_15_bins():
    result = metrics.expected_calibration_error(P3, Y3)
    assert result.num_bins == 15
    assert result.bin_count.sum() == 4


@pytest.mark.parametrize("bad", [0, -1, 2.5, True])
def test_ece_rejects_bad_num_bins(bad):
    with pytest.raises(ValueError, match="num_bins"):
        metrics.expected_calibration_error(P3, Y3, num_bins=bad)


def test_auroc_hand_computed_with_ties():
    targets = np.array([0, 0, 1, 1])
    scores = np.array([0.1, 0.4, 0.35, 0.8])
    # pairs (pos, neg): (0.35,0.1)=1 (0.35,0.4)=0 (0.8,0.1)=1 (0.8,0.4)=1 -> 3/4
    assert metrics.auroc(targets, scores) == pytest.approx(0.75)
    # a tie between a positive and a negative counts 1/2
    assert metrics.auroc(np.array([0, 1]), np.array([0.3, 0.3])) == pytest.approx(0.5)
    assert metrics.auroc(np.array([0, 1, 1]), np.array([0.3, 0.3, 0.9])) == pytest.approx(0.75)


def test_ood_auroc_orientation():
    assert metrics.ood_auroc(np.array([0.0, 0.1]), np.array([0.5, 0.9])) == 1.0
    assert metrics.ood_auroc(np.array([0.5, 0.9]), np.array([0.0, 0.1])) == 0.0


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.tuples(st.booleans(), st.integers(min_value=0, max_value=6)), min_size=2, max_size=40).filter(
        lambda rows: 0 < sum(r[0] for r in rows) < len(rows)
    )
)
def test_auroc_matches_sklearn_including_ties(rows):
    sklearn_metrics = pytest.importorskip("sklearn.metrics")
    targets = np.array([int(r[0]) for r in rows])
    scores = np.array([r[1] / 3.0 for r in rows])  # few distinct values -> many ties
    assert metrics.auroc(targets, scores) == pytest.approx(
        sklearn_metrics.roc_auc_score(targets, scores), abs=1e-12
    )


@settings(max_examples=40, deadline=None)
@given(st.integers(min_value=0, max_value=2**31 - 1))
def test_metrics_match_brute_force_definitions(seed):
    rng = np.random.default_rng(seed)
    n, k = rng.integers(1, 30), rng.integers(2, 6)
    logits = rng.normal(size=(n, k)) * 3
    p = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    y = rng.integers(0, k, size=n)
    assert metrics.brier_score(p, y) == pytest.approx(
        np.mean([sum((p[i, j] - (j == y[i])) ** 2 for j in range(k)) for i in range(n)])
    )
    # ECE by a direct loop over bins.
    bins = 15
    conf, pred = p.max(1), p.argmax(1)
    ece = 0.0
    for b in range(bins):
        lo, hi = b / bins, (b + 1) / bins
        sel = (conf > lo) & (conf <= hi)
        if sel.any():
            ece += sel.mean() * abs((pred[sel] == y[sel]).mean() - conf[sel].mean())
    assert metrics.expected_calibration_error(p, y, bins).ece == pytest.approx(ece, abs=1e-12)


def test_shape_errors_are_typed():
    with pytest.raises(ShapeError, match="4 rows"):
        metrics.accuracy(P3, np.array([0, 1]))
    with pytest.raises(ShapeError, match=r"\[N, K\]"):
        metrics.brier_score(P3[0], Y3)
    with pytest.raises(ShapeError, match="lie in"):
        metrics.negative_log_likelihood(P3, np.array([0, 1, 2, 3]))
    with pytest.raises(ShapeError, match="integer"):
        metrics.accuracy(P3, np.array([0.5, 1, 2, 1]))
    with pytest.raises(ShapeError, match="both positives and negatives"):
        metrics.auroc(np.array([1, 1]), np.array([0.1, 0.2]))
    with pytest.raises(ShapeError, match="finite"):
        metrics.ood_auroc(np.array([np.nan]), np.array([0.2]))
    assert issubclass(ShapeError, IlliaExportError)


def test_float_labels_with_integer_values_are_accepted():
    assert metrics.accuracy(P3, Y3.astype(np.float32)) == pytest.approx(0.75)
