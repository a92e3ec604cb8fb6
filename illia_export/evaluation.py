"""Evaluate an exported Bayesian classifier: accuracy, NLL, Brier, calibration and OOD detection.

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

__all__ = ["DEFAULT_NUM_BINS", "DEFAULT_NUM_SAMPLES", "evaluate", "summarize_predictions"]

#: Monte Carlo samples per input when the caller does not say.
DEFAULT_NUM_SAMPLES = 64
#: Equal-width confidence bins of the expected calibration error.
DEFAULT_NUM_BINS = 15


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
        from illia_export.exporters.manifest import read_manifest

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
