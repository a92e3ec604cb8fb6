"""`Prediction`: the Monte Carlo samples of a model and the predictive summaries built on them.

All summaries are numpy arrays computed over the sample axis (axis 0) of the *first* output;
every output's raw samples stay available in :attr:`Prediction.outputs`.

Classification measures use natural logarithms (nats) and the per-sample softmax of the logits
on the last axis:

* ``probabilities = mean_s softmax(logits_s)`` (the predictive distribution),
* ``predictive_entropy = H[probabilities]`` (total uncertainty),
* ``expected_entropy = mean_s H[softmax(logits_s)]`` (aleatoric part),
* ``mutual_information = predictive_entropy - expected_entropy`` (epistemic part, >= 0).
"""

from __future__ import annotations

import json
import os
from functools import cached_property
from typing import Any

import numpy as np

from illia_export.errors import TaskError

TASKS = ("classification", "regression", "raw")


def _entropy(p: np.ndarray) -> np.ndarray:
    """Shannon entropy (nats) over the last axis, with ``0 log 0 = 0``."""
    logp = np.log(np.where(p > 0, p, 1.0))
    return -(p * logp).sum(axis=-1)


class Prediction:
    """Monte Carlo predictions of one call to :meth:`Predictor.predict`.

    Args:
        outputs: raw samples per output name, each ``[S, B, ...]``, in manifest order.
        task: ``"classification"`` (logits on the last axis), ``"regression"`` or ``"raw"``.
        seed: the seed the noise was drawn with (the drawn one when the caller passed None).
        strategy: ``"fresh"``, ``"bank"`` or ``"local"``.
        noise_generator: the generator the noise was drawn with (``"illia-noise-v1"`` or
            ``"illia-noise-v2"``): with `seed`, what reproduces the prediction.

    Attributes:
        samples: raw samples of the first output, ``[S, B, ...]``.
        outputs: every output's raw samples, ``{name: [S, B, ...]}``.
        output_name: name of the first output (the one summarized).

    Example:
        >>> pred = predictor.predict(x, num_samples=64, seed=0)
        >>> pred.mean.shape, pred.mutual_information.shape   # ([B, C], [B])
    """

    def __init__(
        self,
        outputs: dict[str, np.ndarray],
        task: str = "raw",
        seed: int | None = None,
        strategy: str = "fresh",
        noise_generator: str | None = None,
    ) -> None:
        if not outputs:
            raise TaskError("a Prediction needs at least one output")
        if task not in TASKS:
            raise TaskError(f"`task` (={task!r}) must be one of {TASKS}")
        self.outputs = dict(outputs)
        self.output_name = next(iter(self.outputs))
        self.samples = self.outputs[self.output_name]
        if self.samples.ndim < 1 or self.samples.shape[0] < 1:
            raise TaskError(f"samples must have shape [S, ...] with S >= 1, got {self.samples.shape}")
        self.task = task
        self.seed = seed
        self.strategy = strategy
        self.noise_generator = noise_generator

    @property
    def num_samples(self) -> int:
        """S, the number of Monte Carlo samples."""
        return int(self.samples.shape[0])

    # ----------------------------------------------------------------- any task
    @cached_property
    def mean(self) -> np.ndarray:
        """Sample mean of the first output, ``[B, ...]`` (for classifiers: mean logits)."""
        return self.samples.mean(axis=0, dtype=np.float64).astype(self.samples.dtype, copy=False)

    @cached_property
    def std(self) -> np.ndarray:
        """Sample standard deviation (``ddof=0``) of the first output, ``[B, ...]``."""
        return self.samples.std(axis=0, dtype=np.float64).astype(self.samples.dtype, copy=False)

    def quantiles(self, q: float | list[float] | np.ndarray) -> np.ndarray:
        """Sample quantiles (linear interpolation) of the first output.

        Args:
            q: a quantile or a list of them, in [0, 1].

        Returns:
            ``[B, ...]`` for a scalar `q`, ``[len(q), B, ...]`` for a list.
        """
        qa = np.asarray(q, dtype=np.float64)
        if np.any(qa < 0) or np.any(qa > 1) or np.any(np.isnan(qa)):
            raise TaskError(f"quantiles must lie in [0, 1], got {q!r}")
        return np.quantile(self.samples, qa, axis=0)

    def interval(self, level: float = 0.9) -> tuple[np.ndarray, np.ndarray]:
        """Equal-tailed predictive interval of the first output (regression).

        Args:
            level: coverage in (0, 1); 0.9 gives the 5% and 95% sample quantiles.

        Returns:
            ``(lower, upper)``, each ``[B, ...]``.
        """
        if self.task == "classification":
            raise TaskError(
                "interval() is for regression outputs; use probabilities / predictive_entropy for classifiers"
            )
        if not 0 < level < 1:
            raise TaskError(f"`level` (={level!r}) must lie strictly between 0 and 1")
        lo, hi = self.quantiles([(1 - level) / 2, (1 + level) / 2])
        return lo, hi

    # ------------------------------------------------------------ classification
    def _need_classification(self, what: str) -> None:
        if self.task != "classification":
            raise TaskError(
                f"{what} is defined for classification (logits on the last axis); this prediction's task is "
                f"{self.task!r}. Pass task='classification' to predict() if the output holds logits."
            )

    @cached_property
    def _probs_per_sample(self) -> np.ndarray:
        z = self.samples.astype(np.float64)
        z -= z.max(axis=-1, keepdims=True)
        np.exp(z, out=z)
        z /= z.sum(axis=-1, keepdims=True)
        return z

    @cached_property
    def probabilities(self) -> np.ndarray:
        """Mean of the per-sample softmax, ``[B, ..., C]`` (float64)."""
        self._need_classification("probabilities")
        return self._probs_per_sample.mean(axis=0)

    @cached_property
    def predicted_class(self) -> np.ndarray:
        """``argmax`` of :attr:`probabilities`, ``[B, ...]`` (int64)."""
        return np.argmax(self.probabilities, axis=-1).astype(np.int64)

    @cached_property
    def predictive_entropy(self) -> np.ndarray:
        """Entropy of :attr:`probabilities` in nats, ``[B, ...]``: total uncertainty."""
        return _entropy(self.probabilities)

    @cached_property
    def expected_entropy(self) -> np.ndarray:
        """Mean per-sample entropy in nats, ``[B, ...]``: the aleatoric part."""
        self._need_classification("expected_entropy")
        return _entropy(self._probs_per_sample).mean(axis=0)

    @cached_property
    def mutual_information(self) -> np.ndarray:
        """``predictive_entropy - expected_entropy`` in nats, ``[B, ...]``: the epistemic part
        (clipped at 0 against rounding)."""
        return np.maximum(self.predictive_entropy - self.expected_entropy, 0.0)

    # ------------------------------------------------------------------ export
    def summary_arrays(self) -> dict[str, np.ndarray]:
        """The summaries of this prediction's task, by name."""
        out: dict[str, np.ndarray] = {"mean": self.mean, "std": self.std}
        if self.task == "classification":
            out.update(
                probabilities=self.probabilities,
                predicted_class=self.predicted_class,
                predictive_entropy=self.predictive_entropy,
                expected_entropy=self.expected_entropy,
                mutual_information=self.mutual_information,
            )
        else:
            lo, hi = self.interval(0.9)
            out.update(interval_90_lower=lo, interval_90_upper=hi)
        return out

    def to_dict(self, include_samples: bool = False) -> dict[str, Any]:
        """Plain-Python form (lists), for JSON.

        Args:
            include_samples: also include every output's raw samples (can be large).
        """
        d: dict[str, Any] = {
            "task": self.task,
            "strategy": self.strategy,
            "seed": self.seed,
            "noise_generator": self.noise_generator,
            "num_samples": self.num_samples,
            "output": self.output_name,
        }
        d.update({k: v.tolist() for k, v in self.summary_arrays().items()})
        if include_samples:
            d["samples"] = {k: v.tolist() for k, v in self.outputs.items()}
        return d

    def to_json(self, include_samples: bool = False, indent: int | None = None) -> str:
        """:meth:`to_dict` as a JSON string."""
        return json.dumps(self.to_dict(include_samples), indent=indent)

    def save_npz(self, path: str | os.PathLike) -> None:
        """Save the raw samples and the summaries to a ``.npz`` file.

        Keys: ``samples`` (first output), ``samples/<name>`` for every output, every summary of
        :meth:`summary_arrays`, and ``task``, ``strategy``, ``seed`` (-1 when unknown),
        ``noise_generator`` ("" when unknown), ``num_samples`` as 0-d arrays.
        """
        arrays: dict[str, np.ndarray] = {"samples": self.samples}
        arrays.update({f"samples/{k}": v for k, v in self.outputs.items()})
        arrays.update(self.summary_arrays())
        arrays.update(
            task=np.array(self.task),
            strategy=np.array(self.strategy),
            seed=np.array(-1 if self.seed is None else self.seed, dtype=np.int64),
            noise_generator=np.array(self.noise_generator or ""),
            num_samples=np.array(self.num_samples),
        )
        with open(os.fspath(path), "wb") as fh:
            np.savez(fh, **arrays)

    def __repr__(self) -> str:
        shapes = ", ".join(f"{k}: {tuple(v.shape)}" for k, v in self.outputs.items())
        return f"Prediction(task={self.task!r}, strategy={self.strategy!r}, seed={self.seed}, {shapes})"
