"""`Prediction`: the Monte Carlo samples of a model and the predictive summaries built on them.

All summaries are numpy arrays computed over the sample axis (axis 0) of the *first* output;
every output's raw samples stay available in :attr:`Prediction.outputs`.

Classification measures use natural logarithms (nats) and the per-sample softmax of the logits
on the last axis:

* ``probabilities = mean_s softmax(logits_s)`` (the predictive distribution),
* ``predictive_entropy = H[probabilities]`` (total uncertainty),
* ``expected_entropy = mean_s H[softmax(logits_s)]`` (aleatoric part),
* ``mutual_information = predictive_entropy - expected_entropy`` (epistemic part, >= 0).

Regression with a likelihood (``task == "regression"`` and the manifest's ``likelihood``): each
weight sample ``s`` predicts a distribution ``p_s(y) = D(loc_s, scale_s)`` (Gaussian, Laplace
or Student-t), and the predictive distribution is their mixture ``(1/S) sum_s p_s``:

* ``mean = mean_s loc_s``,
* ``aleatoric_variance = mean_s Var[p_s]``, ``epistemic_variance = Var_s[loc_s]`` (``ddof=0``),
* ``predictive_variance = aleatoric_variance + epistemic_variance`` (the mixture's variance),
  ``std = sqrt(predictive_variance)``,
* ``quantiles``/``interval`` of the mixture (bisection on its CDF), ``log_likelihood(y)`` its
  log density. See docs/runtime.md for the formulas.
"""

from __future__ import annotations

import os
from functools import cached_property
from typing import Any

import numpy as np

from illia_export.artifact.manifest import Likelihood
from illia_export.errors import ShapeError, TaskError

TASKS = ("classification", "regression", "raw")


def _finite_or_none(values: np.ndarray) -> Any:
    """``values.tolist()`` with NaN and infinities as None (strict JSON has no such numbers)."""
    arr = np.asarray(values)
    if arr.dtype.kind != "f" or np.all(np.isfinite(arr)):
        return arr.tolist()
    return np.where(np.isfinite(arr), arr, None).astype(object).tolist()


def _summary_dtype(samples: np.ndarray) -> np.dtype:
    """Means/stds keep a float output's dtype; integer or bool outputs get float64 (not a
    truncated integer mean)."""
    return samples.dtype if samples.dtype.kind == "f" else np.dtype(np.float64)


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
        likelihood: the manifest's regression likelihood (which outputs are the location and
            the scale, and how the scale is parameterized); used when `task` is
            ``"regression"``.
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
        likelihood: Likelihood | None = None,
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
        self.likelihood = likelihood
        if likelihood is not None:
            for role in ("mean", "scale"):
                name = getattr(likelihood, role)
                if name not in self.outputs:
                    raise TaskError(
                        f"the likelihood's {role} output {name!r} is not among the outputs {list(self.outputs)}"
                    )
            loc, raw = self.outputs[likelihood.mean], self.outputs[likelihood.scale]
            if loc.shape != raw.shape:
                raise ShapeError(
                    f"the likelihood's mean output {likelihood.mean!r} has shape {list(loc.shape)} but its scale "
                    f"output {likelihood.scale!r} has shape {list(raw.shape)}"
                )
        self.noise_generator = noise_generator

    @property
    def num_samples(self) -> int:
        """S, the number of Monte Carlo samples."""
        return int(self.samples.shape[0])

    # ----------------------------------------------------------------- any task
    @property
    def has_likelihood(self) -> bool:
        """True when the summaries use the likelihood (regression task and a likelihood)."""
        return self.likelihood is not None and self.task == "regression"

    @cached_property
    def mean(self) -> np.ndarray:
        """Predictive mean, ``[B, ...]``.

        With a likelihood: ``mean_s loc_s`` (float64), the mixture's mean. Otherwise the sample
        mean of the first output (for classifiers: the mean logits).
        """
        if self.has_likelihood:
            return self.predicted_mean.mean(axis=0)
        return self.samples.mean(axis=0, dtype=np.float64).astype(_summary_dtype(self.samples), copy=False)

    @cached_property
    def std(self) -> np.ndarray:
        """Predictive standard deviation, ``[B, ...]``.

        With a likelihood: ``sqrt(predictive_variance)`` (float64; ``inf`` for a Student-t with
        ``df <= 2``). Otherwise the sample standard deviation (``ddof=0``) of the first output.
        """
        if self.has_likelihood:
            return np.sqrt(self.predictive_variance)
        return self.samples.std(axis=0, dtype=np.float64).astype(_summary_dtype(self.samples), copy=False)

    def quantiles(self, q: float | list[float] | np.ndarray) -> np.ndarray:
        """Predictive quantiles.

        With a likelihood: quantiles of the mixture of the S per-sample distributions (bisection
        on the mixture CDF, float64). Otherwise sample quantiles (linear interpolation) of the
        first output.

        Args:
            q: a quantile or a list of them, in [0, 1].

        Returns:
            ``[B, ...]`` for a scalar `q`, ``[len(q), B, ...]`` for a list.
        """
        qa = np.asarray(q, dtype=np.float64)
        if np.any(qa < 0) or np.any(qa > 1) or np.any(np.isnan(qa)):
            raise TaskError(f"quantiles must lie in [0, 1], got {q!r}")
        if self.has_likelihood:
            from illia_export.runtime.mixture import mixture_quantiles

            lk = self.likelihood
            out = mixture_quantiles(qa.reshape(-1), self.predicted_mean, self.predicted_scale, lk.name, lk.df)
            return out.reshape(qa.shape + out.shape[1:])
        return np.quantile(self.samples, qa, axis=0)

    def interval(self, level: float = 0.9) -> tuple[np.ndarray, np.ndarray]:
        """Equal-tailed predictive interval of the first output (regression).

        Args:
            level: coverage in (0, 1); 0.9 gives the 5% and 95% predictive quantiles
                (:meth:`quantiles`: of the mixture with a likelihood, of the samples without).

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

    # ------------------------------------------------- regression with likelihood
    def _need_likelihood(self, what: str) -> Likelihood:
        if not self.has_likelihood:
            why = (
                f"this prediction's task is {self.task!r}"
                if self.likelihood is not None
                else "the artifact's manifest has no likelihood"
            )
            raise TaskError(
                f"{what} needs a regression likelihood ({why}); export the model with task='regression', "
                "likelihood='gaussian' (or 'laplace', 'student_t') and scale=..."
            )
        assert self.likelihood is not None
        return self.likelihood

    @cached_property
    def predicted_mean(self) -> np.ndarray:
        """Per-sample location ``loc_s``, ``[S, B, ...]`` (float64)."""
        lk = self._need_likelihood("predicted_mean")
        return self.outputs[lk.mean].astype(np.float64)

    @cached_property
    def predicted_scale(self) -> np.ndarray:
        """Per-sample scale parameter ``s_s`` (Gaussian std, Laplace ``b``, Student-t scale),
        ``[S, B, ...]`` (float64), from the scale output and its parameterization."""
        from illia_export.runtime.mixture import scale_parameter

        lk = self._need_likelihood("predicted_scale")
        return scale_parameter(self.outputs[lk.scale], lk.scale_kind)

    @cached_property
    def aleatoric_variance(self) -> np.ndarray:
        """``mean_s Var[p_s]``, ``[B, ...]``: the noise the model predicts (Gaussian ``s**2``,
        Laplace ``2 s**2``, Student-t ``df/(df-2) s**2``, ``inf`` for ``df <= 2``)."""
        from illia_export.runtime.mixture import component_variance

        lk = self._need_likelihood("aleatoric_variance")
        return component_variance(self.predicted_scale, lk.name, lk.df).mean(axis=0)

    @cached_property
    def epistemic_variance(self) -> np.ndarray:
        """``Var_s[loc_s]`` (``ddof=0``), ``[B, ...]``: the spread of the predicted mean over
        weight samples."""
        self._need_likelihood("epistemic_variance")
        return self.predicted_mean.var(axis=0)

    @cached_property
    def predictive_variance(self) -> np.ndarray:
        """``aleatoric_variance + epistemic_variance``, ``[B, ...]``: the variance of the mixture."""
        return self.aleatoric_variance + self.epistemic_variance

    def log_likelihood(self, targets: np.ndarray) -> np.ndarray:
        """Log density of `targets` under the predictive mixture, one value per row.

        ``log (1/S) sum_s prod_e p_s(y_e)`` (logsumexp over samples minus ``log S``), where
        ``e`` runs over the non-batch axes of a row (a sample's weights are shared by all of a
        row's outputs, so they form one joint event).

        Args:
            targets: ``[B, ...]``, shaped like :attr:`mean`.

        Returns:
            ``[B]`` (float64), in nats.
        """
        from illia_export.runtime.mixture import mixture_log_density

        lk = self._need_likelihood("log_likelihood")
        y = np.asarray(targets, dtype=np.float64)
        want = self.predicted_mean.shape[1:]
        if y.shape != want:
            if y.size == int(np.prod(want)) and y.ndim <= len(want):
                y = y.reshape(want)  # e.g. [B] targets for [B, 1] outputs
            else:
                raise ShapeError(f"targets must have shape {list(want)} (like the mean), got {list(y.shape)}")
        return mixture_log_density(
            y, self.predicted_mean, self.predicted_scale, lk.name, lk.df, event_ndim=len(want) - 1
        )

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
            if self.has_likelihood:
                out.update(
                    aleatoric_variance=self.aleatoric_variance,
                    epistemic_variance=self.epistemic_variance,
                    predictive_variance=self.predictive_variance,
                )
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
        if self.has_likelihood:
            d["likelihood"] = self.likelihood.__dict__.copy()  # type: ignore[union-attr]
        d.update({k: _finite_or_none(v) for k, v in self.summary_arrays().items()})
        if include_samples:
            d["samples"] = {k: v.tolist() for k, v in self.outputs.items()}
        return d

    def to_json(self, include_samples: bool = False, indent: int | None = None) -> str:
        """:meth:`to_dict` as a strictly valid JSON string (non-finite values become ``null``)."""
        from illia_export.strict_json import dumps

        return dumps(self.to_dict(include_samples), indent=indent)

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
