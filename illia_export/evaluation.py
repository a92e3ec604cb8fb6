"""Evaluate exported Bayesian models: classifiers (accuracy, NLL, Brier, calibration, OOD
detection) and regressors (NLL, RMSE, interval coverage: :func:`evaluate_regression`).

The library side of ``illia-export evaluate``: runs Monte Carlo inference through
:mod:`illia_export.runtime` on labelled in-distribution inputs (and optionally on
out-of-distribution inputs) and summarizes the predictive distribution with
:mod:`illia_export.metrics`.

Example:
    >>> from illia_export.evaluation import evaluate
    >>> report = evaluate("cnn.onnx", x_test, y_test, x_ood=x_ood, num_samples=64, seed=0)  # doctest: +SKIP
    >>> report["accuracy"], report["ood"]["auroc_mutual_information"]  # doctest: +SKIP
    (0.98, 0.96)
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from illia_export import metrics
from illia_export.errors import ArtifactError, ShapeError

__all__ = [
    "DEFAULT_LEVELS",
    "DEFAULT_NUM_BINS",
    "DEFAULT_NUM_SAMPLES",
    "evaluate",
    "evaluate_regression",
    "summarize_predictions",
    "summarize_regression",
]

#: Monte Carlo samples per input when the caller does not say.
DEFAULT_NUM_SAMPLES = 64
#: Equal-width confidence bins of the expected calibration error.
DEFAULT_NUM_BINS = 15
#: Nominal levels of the central predictive intervals whose coverage regression evaluation reports.
DEFAULT_LEVELS = (0.5, 0.8, 0.9, 0.95)


def _classification_arrays(prediction: Any, what: str) -> dict[str, np.ndarray]:
    """The classification summaries of a runtime ``Prediction``, checked."""
    task = getattr(prediction, "task", "classification")
    probs = getattr(prediction, "probabilities", None) if task == "classification" else None
    if probs is None:
        raise ArtifactError(
            f"the {what} prediction (task {task!r}) has no class probabilities: the artifact is not a "
            "classifier (its manifest task must be 'classification'; re-export with task=\"classification\")"
        )
    out = {
        "probabilities": np.asarray(probs, dtype=np.float64),
        "predictive_entropy": np.asarray(prediction.predictive_entropy, dtype=np.float64),
        "mutual_information": np.asarray(prediction.mutual_information, dtype=np.float64),
    }
    if out["probabilities"].ndim != 2:
        raise ShapeError(
            f"evaluation needs one class distribution per example ([N, K] probabilities), got shape "
            f"{out['probabilities'].shape} for the {what} inputs"
        )
    return out


def summarize_predictions(
    prediction: Any,
    labels: np.ndarray,
    ood_prediction: Any | None = None,
    num_bins: int = DEFAULT_NUM_BINS,
) -> dict[str, Any]:
    """Metrics of runtime predictions (``illia_export.runtime`` ``Prediction`` objects).

    Args:
        prediction: the prediction on the labelled in-distribution inputs; must carry
            ``probabilities`` ``[N, K]``, ``predictive_entropy`` ``[N]`` and
            ``mutual_information`` ``[N]``.
        labels: ``[N]`` integer class labels.
        ood_prediction: optional prediction on out-of-distribution inputs (``[M, K]``).
        num_bins: confidence bins of the expected calibration error.

    Returns:
        A JSON-serializable dict with ``num_examples``, ``num_classes``, ``accuracy``, ``nll``,
        ``brier``, ``ece``, ``calibration`` (per-bin data for a reliability diagram),
        ``mean_predictive_entropy``, ``mean_mutual_information`` and, with `ood_prediction`, an
        ``ood`` dict with ``num_examples``, ``auroc_predictive_entropy``,
        ``auroc_mutual_information`` and the OOD mean entropy and mutual information.
    """
    ind = _classification_arrays(prediction, "in-distribution")
    probs = ind["probabilities"]
    labels = np.asarray(labels)
    if labels.ndim != 1 or labels.shape[0] != probs.shape[0]:
        raise ShapeError(
            f"labels have shape {labels.shape} but the inputs have {probs.shape[0]} examples; "
            "pass one integer label per input example"
        )
    calibration = metrics.expected_calibration_error(probs, labels, num_bins=num_bins)
    report: dict[str, Any] = {
        "num_examples": int(probs.shape[0]),
        "num_classes": int(probs.shape[1]),
        "accuracy": metrics.accuracy(probs, labels),
        "nll": metrics.negative_log_likelihood(probs, labels),
        "brier": metrics.brier_score(probs, labels),
        "ece": calibration.ece,
        "calibration": calibration.to_dict(),
        "mean_predictive_entropy": float(ind["predictive_entropy"].mean()),
        "mean_mutual_information": float(ind["mutual_information"].mean()),
    }
    if ood_prediction is not None:
        ood = _classification_arrays(ood_prediction, "out-of-distribution")
        if ood["probabilities"].shape[1] != probs.shape[1]:
            raise ShapeError(
                f"OOD predictions have {ood['probabilities'].shape[1]} classes, in-distribution ones "
                f"{probs.shape[1]}"
            )
        report["ood"] = {
            "num_examples": int(ood["probabilities"].shape[0]),
            "auroc_predictive_entropy": metrics.ood_auroc(
                ind["predictive_entropy"], ood["predictive_entropy"]
            ),
            "auroc_mutual_information": metrics.ood_auroc(
                ind["mutual_information"], ood["mutual_information"]
            ),
            "mean_predictive_entropy": float(ood["predictive_entropy"].mean()),
            "mean_mutual_information": float(ood["mutual_information"].mean()),
        }
    return report


def _load_predictor(predictor_or_path: Any, device: str) -> Any:
    if isinstance(predictor_or_path, (str, os.PathLike)):
        from illia_export import runtime
        from illia_export.artifact.manifest import read_manifest

        # Check the task before loading a backend: a wrong artifact fails fast.
        _check_task(read_manifest(predictor_or_path).task)
        return runtime.load(predictor_or_path, device=device)
    if not hasattr(predictor_or_path, "predict"):
        raise ArtifactError(
            f"expected an artifact path or a runtime predictor (with .predict), got {type(predictor_or_path).__name__}"
        )
    return predictor_or_path


def _check_classifier(predictor: Any) -> None:
    manifest = getattr(predictor, "manifest", None)
    _check_task(getattr(manifest, "task", None))


def _check_task(task: str | None) -> None:
    if task is not None and task != "classification":
        raise ArtifactError(
            f"evaluate needs a classifier, but the artifact's manifest says task={task!r}; "
            're-export the model with task="classification" (logits on the last axis)'
        )


def _as_input(x: Any, name: str) -> np.ndarray:
    arr = np.asarray(x)
    if arr.ndim < 1 or arr.shape[0] == 0:
        raise ShapeError(
            f"`{name}` must be a non-empty array with the batch axis first, got shape {arr.shape}"
        )
    if np.issubdtype(arr.dtype, np.floating) and arr.dtype != np.float32:
        arr = arr.astype(np.float32)
    return arr


def evaluate(
    predictor_or_path: Any,
    x: Any,
    y: Any,
    x_ood: Any | None = None,
    num_samples: int = DEFAULT_NUM_SAMPLES,
    seed: int = 0,
    strategy: str = "fresh",
    num_bins: int = DEFAULT_NUM_BINS,
    device: str = "cpu",
    chunk_size: int | None = None,
) -> dict[str, Any]:
    """Run Monte Carlo inference with an exported classifier and compute its metrics.

    In- and out-of-distribution inputs are predicted with the same `seed`, so (for the
    ``fresh`` and ``bank`` strategies) both sets see the same posterior weight samples.

    Args:
        predictor_or_path: an artifact path (``.onnx``, ``.pt``, ``.tflite``, SavedModel folder)
            or a predictor from :func:`illia_export.runtime.load`.
        x: in-distribution inputs ``[N, ...]`` (float64 is cast to float32).
        y: ``[N]`` integer class labels.
        x_ood: optional out-of-distribution inputs ``[M, ...]``.
        num_samples: Monte Carlo samples S per input.
        seed: noise seed (same seed, same numbers on every runtime).
        strategy: the runtime's sampling strategy (``"fresh"``, ``"bank"``, ``"local"``).
        num_bins: confidence bins of the expected calibration error.
        device: runtime device when a path is given.
        chunk_size: Monte Carlo samples per graph call (bounds memory; the results do not depend
            on it); ``None`` lets the runtime choose.

    Returns:
        The dict of :func:`summarize_predictions`, plus ``num_samples``, ``seed`` and
        ``strategy``.

    Raises:
        ShapeError: labels that do not match the inputs (count, rank, values out of range).
        ArtifactError: an artifact that is not a classifier.
    """
    if isinstance(num_samples, bool) or not isinstance(num_samples, (int, np.integer)) or num_samples < 1:
        raise ValueError(f"`num_samples` (={num_samples!r}) must be a positive integer")
    x = _as_input(x, "x")
    labels = np.asarray(y)
    if labels.ndim != 1 or labels.shape[0] != x.shape[0]:
        raise ShapeError(
            f"labels have shape {labels.shape} but the inputs have {x.shape[0]} examples "
            f"(input shape {x.shape}); pass one integer label per input example"
        )
    predictor = _load_predictor(predictor_or_path, device)
    _check_classifier(predictor)
    prediction = predictor.predict(
        x, num_samples=int(num_samples), seed=int(seed), strategy=strategy, chunk_size=chunk_size
    )
    ood_prediction = None
    if x_ood is not None:
        x_ood = _as_input(x_ood, "x_ood")
        ood_prediction = predictor.predict(
            x_ood, num_samples=int(num_samples), seed=int(seed), strategy=strategy, chunk_size=chunk_size
        )
    report = summarize_predictions(prediction, labels, ood_prediction, num_bins=num_bins)
    report.update({"num_samples": int(num_samples), "seed": int(seed), "strategy": strategy})
    return report


# ------------------------------------------------------------------------------------------
# regression


def _number(value: float) -> float | None:
    """A float for JSON: None for NaN and infinities (strict JSON has no such numbers)."""
    value = float(value)
    return value if np.isfinite(value) else None


def _check_levels(levels: Any) -> list[float]:
    lv = [float(v) for v in np.asarray(levels, dtype=np.float64).reshape(-1)]
    if not lv or any(not 0 < v < 1 for v in lv):
        raise ValueError(f"interval levels must be a non-empty list of numbers strictly between 0 and 1, got {levels!r}")
    return lv


def summarize_regression(prediction: Any, targets: Any, levels: Any = DEFAULT_LEVELS) -> dict[str, Any]:
    """Regression metrics of a runtime ``Prediction`` (task ``"regression"``).

    With a likelihood in the manifest the predictive distribution is the mixture of the
    per-sample distributions: the NLL is ``-mean_n log p(y_n)`` of that mixture
    (``Prediction.log_likelihood``), intervals are the mixture's. Without one, the outputs'
    samples are all there is: the NLL is that of a Gaussian with the samples' mean and variance
    (``nll_method`` says which), intervals are sample quantiles.

    Args:
        prediction: the runtime prediction on the inputs.
        targets: ``[N, ...]`` shaped like ``prediction.mean`` (``[N]`` is accepted for ``[N, 1]``).
        levels: nominal levels of the central intervals whose coverage is reported.

    Returns:
        A strictly JSON-serializable dict (non-finite numbers are None): ``num_examples``,
        ``likelihood`` (the manifest's, or None), ``nll``, ``nll_method`` (``"mixture"`` or
        ``"gaussian_moment_match"``), ``rmse``, ``coverage`` (a list of ``{level, coverage,
        mean_width}``), ``calibration_error`` (mean ``|coverage - level|``), ``mean_predictive_std``
        and, with a likelihood, ``mean_aleatoric_variance`` and ``mean_epistemic_variance``.
    """
    task = getattr(prediction, "task", None)
    if task != "regression":
        raise ArtifactError(
            f"regression metrics need a regression prediction, got task {task!r}; export the model with "
            'task="regression"'
        )
    lv = _check_levels(levels)
    mean = np.asarray(prediction.mean, dtype=np.float64)
    y = np.asarray(targets, dtype=np.float64)
    if y.shape != mean.shape:
        if y.size == mean.size and y.shape[:1] == mean.shape[:1]:
            y = y.reshape(mean.shape)
        else:
            raise ShapeError(
                f"targets have shape {list(y.shape)} but the predictions have shape {list(mean.shape)}; "
                "pass one target per model output"
            )
    has_likelihood = bool(getattr(prediction, "has_likelihood", False))
    if has_likelihood:
        nll = float(-np.mean(prediction.log_likelihood(y)))
        method = "mixture"
    else:
        variance = np.asarray(prediction.std, dtype=np.float64) ** 2
        nll = metrics.gaussian_nll(mean, np.maximum(variance, np.finfo(np.float64).tiny), y)
        method = "gaussian_moment_match"
    coverage = []
    bounds = prediction.quantiles([q for level in lv for q in ((1 - level) / 2, (1 + level) / 2)])
    for k, level in enumerate(lv):
        lower, upper = bounds[2 * k], bounds[2 * k + 1]
        coverage.append(
            {
                "level": level,
                "coverage": metrics.interval_coverage(lower, upper, y),
                "mean_width": _number(np.mean(upper - lower)),
            }
        )
    likelihood = getattr(prediction, "likelihood", None)
    report: dict[str, Any] = {
        "num_examples": int(mean.shape[0]),
        "likelihood": dict(likelihood.__dict__) if has_likelihood else None,
        "nll": _number(nll),
        "nll_method": method,
        "rmse": _number(metrics.rmse(mean, y)),
        "coverage": coverage,
        "calibration_error": _number(
            metrics.coverage_calibration_error(lv, [c["coverage"] for c in coverage])
        ),
        "mean_predictive_std": _number(np.mean(prediction.std)),
    }
    if has_likelihood:
        report["mean_aleatoric_variance"] = _number(np.mean(prediction.aleatoric_variance))
        report["mean_epistemic_variance"] = _number(np.mean(prediction.epistemic_variance))
    return report


def evaluate_regression(
    predictor_or_path: Any,
    x: Any,
    y: Any,
    levels: Any = DEFAULT_LEVELS,
    num_samples: int = DEFAULT_NUM_SAMPLES,
    seed: int = 0,
    strategy: str = "fresh",
    device: str = "cpu",
    chunk_size: int | None = None,
) -> dict[str, Any]:
    """Run Monte Carlo inference with an exported regressor and compute its metrics.

    Args:
        predictor_or_path: an artifact path or a predictor from :func:`illia_export.runtime.load`
            whose manifest task is ``"regression"``.
        x: inputs ``[N, ...]`` (float64 is cast to float32).
        y: targets ``[N, ...]`` shaped like the mean output (``[N]`` for ``[N, 1]``).
        levels: nominal levels of the central predictive intervals.
        num_samples, seed, strategy, device, chunk_size: as in :func:`evaluate`.

    Returns:
        The dict of :func:`summarize_regression`, plus ``num_samples``, ``seed`` and ``strategy``.
    """
    if isinstance(num_samples, bool) or not isinstance(num_samples, (int, np.integer)) or num_samples < 1:
        raise ValueError(f"`num_samples` (={num_samples!r}) must be a positive integer")
    _check_levels(levels)
    x = _as_input(x, "x")
    targets = np.asarray(y)
    if targets.ndim < 1 or targets.shape[0] != x.shape[0]:
        raise ShapeError(
            f"targets have shape {targets.shape} but the inputs have {x.shape[0]} examples; pass one target "
            "row per input example"
        )
    if isinstance(predictor_or_path, (str, os.PathLike)):
        from illia_export import runtime
        from illia_export.artifact.manifest import read_manifest

        task = read_manifest(predictor_or_path).task
        if task != "regression":
            raise ArtifactError(
                f"regression evaluation needs a regressor, but the artifact's manifest says task={task!r}; "
                're-export the model with task="regression"'
            )
        predictor = runtime.load(predictor_or_path, device=device)
    elif hasattr(predictor_or_path, "predict"):
        predictor = predictor_or_path
    else:
        raise ArtifactError(
            f"expected an artifact path or a runtime predictor (with .predict), got {type(predictor_or_path).__name__}"
        )
    prediction = predictor.predict(
        x, num_samples=int(num_samples), seed=int(seed), strategy=strategy, chunk_size=chunk_size, task="regression"
    )
    report = summarize_regression(prediction, targets, levels)
    report.update({"num_samples": int(num_samples), "seed": int(seed), "strategy": strategy})
    return report
