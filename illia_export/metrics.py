"""Metrics for predictions with uncertainty: classifiers (accuracy, NLL, Brier, calibration,
OOD AUROC) and regressors (RMSE, Gaussian NLL, interval coverage and its calibration error).

Pure numpy, no other dependency. Every classification function takes *predictive* probabilities (the Monte Carlo
average of the per-sample softmax, ``Prediction.probabilities``) of shape ``[N, K]`` and integer
labels of shape ``[N]``; the OOD metric takes one score per example (higher = more likely
out-of-distribution), e.g. the predictive entropy or the mutual information.

Example:
    >>> import numpy as np
    >>> from illia_export import metrics
    >>> p = np.array([[0.9, 0.1], [0.2, 0.8]])
    >>> y = np.array([0, 0])
    >>> float(metrics.accuracy(p, y))
    0.5
    >>> float(metrics.ood_auroc(np.array([0.1, 0.2]), np.array([0.5, 0.05])))
    0.5
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from illia_export.errors import ShapeError

__all__ = [
    "CalibrationResult",
    "accuracy",
    "auroc",
    "brier_score",
    "coverage_calibration_error",
    "expected_calibration_error",
    "gaussian_nll",
    "interval_coverage",
    "negative_log_likelihood",
    "ood_auroc",
    "rmse",
]

#: Probabilities are clipped to at least this value before taking logs in the NLL.
NLL_EPSILON = 1e-12


def _check_probs_labels(probabilities: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    probs = np.asarray(probabilities, dtype=np.float64)
    y = np.asarray(labels)
    if probs.ndim != 2:
        raise ShapeError(f"`probabilities` must have shape [N, K], got shape {probs.shape}")
    if y.ndim != 1:
        raise ShapeError(f"`labels` must have shape [N], got shape {y.shape}")
    if y.shape[0] != probs.shape[0]:
        raise ShapeError(
            f"`labels` has {y.shape[0]} entries but `probabilities` has {probs.shape[0]} rows; "
            "pass one integer label per example"
        )
    if probs.shape[0] == 0:
        raise ShapeError("`probabilities` and `labels` are empty; need at least one example")
    if not np.issubdtype(y.dtype, np.integer):
        if np.issubdtype(y.dtype, np.floating) and np.all(np.isfinite(y)) and np.all(y == np.round(y)):
            y = y.astype(np.int64)
        else:
            raise ShapeError(f"`labels` must hold integer class indices, got dtype {y.dtype}")
    num_classes = probs.shape[1]
    if y.min() < 0 or y.max() >= num_classes:
        raise ShapeError(
            f"`labels` must lie in [0, {num_classes - 1}] for {num_classes} classes, "
            f"got values in [{y.min()}, {y.max()}]"
        )
    return probs, y.astype(np.int64)


def accuracy(probabilities: np.ndarray, labels: np.ndarray) -> float:
    """Fraction of examples whose most probable class equals the label.

    Args:
        probabilities: predictive probabilities, shape ``[N, K]``.
        labels: integer class labels, shape ``[N]``.

    Returns:
        Accuracy in ``[0, 1]``. Ties in the probabilities pick the lowest class index (argmax).
    """
    probs, y = _check_probs_labels(probabilities, labels)
    return float(np.mean(np.argmax(probs, axis=1) == y))


def negative_log_likelihood(
    probabilities: np.ndarray, labels: np.ndarray, epsilon: float = NLL_EPSILON
) -> float:
    """Mean negative log predictive probability of the true class, ``-mean(log p[n, y_n])``.

    Args:
        probabilities: predictive probabilities, shape ``[N, K]``.
        labels: integer class labels, shape ``[N]``.
        epsilon: probabilities are clipped to at least this before the log (a zero probability on
            the true class would otherwise give ``inf``).

    Returns:
        The NLL in nats (0 for a perfect, certain classifier).
    """
    probs, y = _check_probs_labels(probabilities, labels)
    p_true = probs[np.arange(probs.shape[0]), y]
    return float(-np.mean(np.log(np.clip(p_true, epsilon, None))))


def brier_score(probabilities: np.ndarray, labels: np.ndarray) -> float:
    """Multi-class Brier score: mean over examples of ``sum_k (p_k - onehot(y)_k)^2``.

    Args:
        probabilities: predictive probabilities, shape ``[N, K]``.
        labels: integer class labels, shape ``[N]``.

    Returns:
        A value in ``[0, 2]`` (0 for a perfect, certain classifier). Note that scikit-learn's
        ``brier_score_loss`` is the binary version; for ``K = 2`` this score is twice it.
    """
    probs, y = _check_probs_labels(probabilities, labels)
    onehot = np.zeros_like(probs)
    onehot[np.arange(probs.shape[0]), y] = 1.0
    return float(np.mean(np.sum((probs - onehot) ** 2, axis=1)))


@dataclass(frozen=True)
class CalibrationResult:
    """Expected calibration error and the per-bin data of a reliability diagram.

    Attributes:
        ece: ``sum_b (n_b / N) * |accuracy_b - confidence_b|`` over non-empty bins.
        bin_edges: ``[num_bins + 1]`` equal-width edges from 0 to 1; bin ``b`` is
            ``(edges[b], edges[b+1]]`` (the first bin also holds confidence 0).
        bin_confidence: ``[num_bins]`` mean confidence (max probability) per bin, NaN where empty.
        bin_accuracy: ``[num_bins]`` accuracy per bin, NaN where empty.
        bin_count: ``[num_bins]`` number of examples per bin.
    """

    ece: float
    bin_edges: np.ndarray
    bin_confidence: np.ndarray
    bin_accuracy: np.ndarray
    bin_count: np.ndarray

    @property
    def num_bins(self) -> int:
        """Number of bins."""
        return int(self.bin_count.shape[0])

    def to_dict(self) -> dict:
        """JSON-friendly dict (NaN of empty bins becomes ``None``)."""

        def clean(values: np.ndarray) -> list:
            return [None if not np.isfinite(v) else float(v) for v in values]

        return {
            "ece": float(self.ece),
            "bin_edges": [float(v) for v in self.bin_edges],
            "bin_confidence": clean(self.bin_confidence),
            "bin_accuracy": clean(self.bin_accuracy),
            "bin_count": [int(v) for v in self.bin_count],
        }


def expected_calibration_error(
    probabilities: np.ndarray, labels: np.ndarray, num_bins: int = 15
) -> CalibrationResult:
    """Expected calibration error (Guo et al. 2017) with equal-width confidence bins.

    The confidence of an example is its maximum predictive probability; an example is correct
    when that class (argmax) is its label. Bin ``b`` holds confidences in
    ``(b / num_bins, (b + 1) / num_bins]``.

    Args:
        probabilities: predictive probabilities, shape ``[N, K]``.
        labels: integer class labels, shape ``[N]``.
        num_bins: number of equal-width bins over ``[0, 1]`` (default 15).

    Returns:
        A :class:`CalibrationResult` with the ECE and the per-bin confidence, accuracy and count.
    """
    if isinstance(num_bins, bool) or not isinstance(num_bins, (int, np.integer)) or num_bins < 1:
        raise ValueError(f"`num_bins` (={num_bins!r}) must be a positive integer")
    probs, y = _check_probs_labels(probabilities, labels)
    num_bins = int(num_bins)
    confidence = probs.max(axis=1)
    correct = (np.argmax(probs, axis=1) == y).astype(np.float64)
    # Bin b = (b/n, (b+1)/n]: index ceil(c * n) - 1, with c = 0 in the first bin.
    index = np.clip(np.ceil(confidence * num_bins).astype(np.int64) - 1, 0, num_bins - 1)
    count = np.bincount(index, minlength=num_bins)
    conf_sum = np.bincount(index, weights=confidence, minlength=num_bins)
    acc_sum = np.bincount(index, weights=correct, minlength=num_bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        bin_conf = np.where(count > 0, conf_sum / np.maximum(count, 1), np.nan)
        bin_acc = np.where(count > 0, acc_sum / np.maximum(count, 1), np.nan)
    nonempty = count > 0
    ece = float(np.sum(count[nonempty] / probs.shape[0] * np.abs(bin_acc[nonempty] - bin_conf[nonempty])))
    return CalibrationResult(
        ece=ece,
        bin_edges=np.linspace(0.0, 1.0, num_bins + 1),
        bin_confidence=bin_conf,
        bin_accuracy=bin_acc,
        bin_count=count,
    )


def _average_ranks(values: np.ndarray) -> np.ndarray:
    """1-based ranks of `values`, tied values sharing the mean of their ranks."""
    order = np.argsort(values, kind="mergesort")
    sorted_values = values[order]
    # Start of each run of equal values.
    starts = np.concatenate(([True], sorted_values[1:] != sorted_values[:-1]))
    run_id = np.cumsum(starts) - 1
    run_start = np.flatnonzero(starts)
    run_end = np.concatenate((run_start[1:], [values.shape[0]]))
    mean_rank = (run_start + run_end + 1) / 2.0  # mean of ranks run_start+1 .. run_end
    ranks = np.empty(values.shape[0], dtype=np.float64)
    ranks[order] = mean_rank[run_id]
    return ranks


def auroc(targets: np.ndarray, scores: np.ndarray) -> float:
    """Area under the ROC curve of `scores` for binary `targets` (1 = positive).

    Computed from ranks (the Mann-Whitney U statistic): the probability that a random positive
    scores higher than a random negative, ties counting one half — the same value as
    scikit-learn's ``roc_auc_score``.

    Args:
        targets: ``[N]`` binary labels (0/1 or bool); both classes must be present.
        scores: ``[N]`` real scores, higher meaning "more likely positive". Must be finite.

    Returns:
        AUROC in ``[0, 1]`` (0.5 = chance).
    """
    t = np.asarray(targets)
    s = np.asarray(scores, dtype=np.float64)
    if t.ndim != 1 or s.ndim != 1 or t.shape[0] != s.shape[0]:
        raise ShapeError(f"`targets` and `scores` must both have shape [N], got {t.shape} and {s.shape}")
    if not np.all(np.isin(t, (0, 1))):
        raise ShapeError("`targets` must be binary (0/1 or bool)")
    if not np.all(np.isfinite(s)):
        raise ShapeError("`scores` must be finite (found NaN or inf)")
    t = t.astype(bool)
    num_pos = int(t.sum())
    num_neg = t.shape[0] - num_pos
    if num_pos == 0 or num_neg == 0:
        raise ShapeError(
            f"AUROC needs both positives and negatives, got {num_pos} positive(s) and {num_neg} negative(s)"
        )
    ranks = _average_ranks(s)
    u_statistic = ranks[t].sum() - num_pos * (num_pos + 1) / 2.0
    return float(u_statistic / (num_pos * num_neg))


def ood_auroc(scores_in: np.ndarray, scores_out: np.ndarray) -> float:
    """AUROC of separating out-of-distribution from in-distribution examples by a score.

    Out-of-distribution examples are the positives, so a score that is higher on OOD inputs
    (predictive entropy, mutual information) gives an AUROC near 1.

    Args:
        scores_in: ``[N_in]`` scores on in-distribution examples.
        scores_out: ``[N_out]`` scores on out-of-distribution examples.

    Returns:
        AUROC in ``[0, 1]``.
    """
    s_in = np.asarray(scores_in, dtype=np.float64).reshape(-1)
    s_out = np.asarray(scores_out, dtype=np.float64).reshape(-1)
    targets = np.concatenate(
        (np.zeros(s_in.shape[0], dtype=np.int64), np.ones(s_out.shape[0], dtype=np.int64))
    )
    return auroc(targets, np.concatenate((s_in, s_out)))


# ------------------------------------------------------------------------------------------
# regression


def _check_regression(targets: np.ndarray, **arrays: np.ndarray) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    y = np.asarray(targets, dtype=np.float64)
    if y.ndim < 1 or y.shape[0] == 0:
        raise ShapeError(f"`targets` must be a non-empty array [N, ...], got shape {y.shape}")
    out = {}
    for name, value in arrays.items():
        arr = np.asarray(value, dtype=np.float64)
        if arr.shape != y.shape:
            if arr.size == y.size and arr.shape[:1] == y.shape[:1]:
                y = y.reshape(arr.shape)  # e.g. [N] targets for [N, 1] predictions
            else:
                raise ShapeError(f"`{name}` has shape {arr.shape} but `targets` has shape {y.shape}")
        out[name] = arr
    return y, out


def rmse(predictions: np.ndarray, targets: np.ndarray) -> float:
    """Root mean squared error ``sqrt(mean((prediction - target)^2))`` over every element.

    Args:
        predictions: point predictions (e.g. ``Prediction.mean``), ``[N, ...]``.
        targets: ``[N, ...]`` (``[N]`` is accepted for ``[N, 1]`` predictions).
    """
    y, a = _check_regression(targets, predictions=predictions)
    return float(np.sqrt(np.mean((a["predictions"] - y) ** 2)))


def gaussian_nll(mean: np.ndarray, variance: np.ndarray, targets: np.ndarray) -> float:
    """Mean over rows of the Gaussian negative log density, summed over a row's outputs.

    ``mean_n sum_d [ 0.5 log(2 pi var_nd) + (y_nd - mean_nd)^2 / (2 var_nd) ]`` in nats. Used
    for regressors without a likelihood, with the Monte Carlo mean and variance of the outputs
    (a Gaussian matched to the samples' first two moments).

    Args:
        mean, variance: ``[N, ...]``; the variance must be positive.
        targets: ``[N, ...]``.
    """
    y, a = _check_regression(targets, mean=mean, variance=variance)
    var = a["variance"]
    if np.any(~(var > 0)):
        raise ShapeError("`variance` must be positive everywhere (found a zero, negative or NaN variance)")
    nll = 0.5 * np.log(2.0 * np.pi * var) + (y - a["mean"]) ** 2 / (2.0 * var)
    return float(np.mean(nll.reshape(nll.shape[0], -1).sum(axis=1)))


def interval_coverage(lower: np.ndarray, upper: np.ndarray, targets: np.ndarray) -> float:
    """Fraction of targets inside their predictive interval, ``mean(lower <= y <= upper)``.

    For a calibrated model, the coverage of the central ``level`` interval is close to
    ``level``. Computed over every element.
    """
    y, a = _check_regression(targets, lower=lower, upper=upper)
    if np.any(a["lower"] > a["upper"]):
        raise ShapeError("`lower` must not exceed `upper`")
    return float(np.mean((a["lower"] <= y) & (y <= a["upper"])))


def coverage_calibration_error(levels: np.ndarray, coverages: np.ndarray) -> float:
    """``mean_k |coverage_k - level_k|``: the regression counterpart of the ECE.

    Args:
        levels: nominal interval levels in (0, 1), e.g. ``[0.5, 0.8, 0.9, 0.95]``.
        coverages: the observed coverage of each level's interval (:func:`interval_coverage`).
    """
    lv = np.asarray(levels, dtype=np.float64).reshape(-1)
    cv = np.asarray(coverages, dtype=np.float64).reshape(-1)
    if lv.shape != cv.shape or lv.size == 0:
        raise ShapeError(f"`levels` and `coverages` must be non-empty and of equal length, got {lv.size} and {cv.size}")
    if np.any((lv <= 0) | (lv >= 1)):
        raise ShapeError(f"interval levels must lie strictly between 0 and 1, got {lv.tolist()}")
    return float(np.mean(np.abs(cv - lv)))
