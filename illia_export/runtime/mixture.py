"""Per-sample predictive distributions of a regression head, and their equal-weight mixture.

A Bayesian regression model with a likelihood (manifest ``likelihood``) predicts, for weight
sample ``s`` and input row ``b``, a location ``loc[s, b]`` and a scale parameter ``s[s, b]`` of
a Gaussian, Laplace or Student-t distribution. The predictive distribution is the mixture
``p(y | x) = (1/S) sum_s p_s(y)``. This module holds the numerics (docs/runtime.md):

* :func:`scale_parameter` turns the raw scale output into the scale parameter;
* :func:`component_variance` is each component's variance (Gaussian ``s**2``, Laplace ``2 s**2``,
  Student-t ``df/(df-2) s**2``, infinite for ``df <= 2``);
* :func:`mixture_quantiles` inverts the mixture CDF by bisection, vectorized over rows;
* :func:`mixture_log_density` is ``logsumexp_s log p_s(y) - log S``.

CDFs come from ``scipy.stats`` (imported on first use); densities are closed-form numpy.
"""

from __future__ import annotations

import math

import numpy as np

from illia_export.errors import TaskError

__all__ = [
    "component_cdf",
    "component_log_density",
    "component_variance",
    "mixture_cdf",
    "mixture_log_density",
    "mixture_quantiles",
    "scale_parameter",
]

#: Bisection stops when the bracket is narrower than this relative tolerance (or after MAX_STEPS).
RELATIVE_TOLERANCE = 1e-10
MAX_STEPS = 200


def scale_parameter(raw: np.ndarray, kind: str) -> np.ndarray:
    """The distribution's scale parameter ``s`` (float64) from the model's scale output.

    ``"std"``: ``s = raw``; ``"variance"``: ``s = sqrt(raw)``; ``"log_variance"``:
    ``s = exp(raw / 2)``; ``"softplus_std"``: ``s = softplus(raw) = log(1 + exp(raw))``.
    Negative std or variance outputs are invalid; they give NaN.
    """
    x = np.asarray(raw, dtype=np.float64)
    if kind == "std":
        return np.where(x >= 0, x, np.nan)
    if kind == "variance":
        return np.sqrt(np.where(x >= 0, x, np.nan))
    if kind == "log_variance":
        return np.exp(0.5 * x)
    if kind == "softplus_std":
        return np.logaddexp(0.0, x)
    raise TaskError(f"unknown scale parameterization {kind!r}")


def component_variance(scale: np.ndarray, name: str, df: float | None = None) -> np.ndarray:
    """Variance of each component with scale parameter `scale`.

    Gaussian ``s**2``; Laplace ``2 s**2``; Student-t ``df / (df - 2) * s**2`` for ``df > 2`` and
    ``inf`` for ``df <= 2`` (the variance does not exist; quantiles and densities still do).
    """
    s2 = np.square(np.asarray(scale, dtype=np.float64))
    if name == "gaussian":
        return s2
    if name == "laplace":
        return 2.0 * s2
    if name == "student_t":
        if df is None or not df > 0:
            raise TaskError("a student_t likelihood needs df > 0")
        if df <= 2:
            return np.where(np.isnan(s2), np.nan, np.inf)
        return df / (df - 2.0) * s2
    raise TaskError(f"unknown likelihood {name!r}")


def _log_standard_density(z: np.ndarray, name: str, df: float | None) -> np.ndarray:
    if name == "gaussian":
        return -0.5 * z * z - 0.5 * math.log(2.0 * math.pi)
    if name == "laplace":
        return -np.abs(z) - math.log(2.0)
    if name == "student_t":
        assert df is not None
        const = math.lgamma((df + 1) / 2) - math.lgamma(df / 2) - 0.5 * math.log(df * math.pi)
        return const - (df + 1) / 2 * np.log1p(z * z / df)
    raise TaskError(f"unknown likelihood {name!r}")


def component_log_density(
    y: np.ndarray, loc: np.ndarray, scale: np.ndarray, name: str, df: float | None = None
) -> np.ndarray:
    """``log p(y | loc, scale)`` elementwise (broadcasting)."""
    scale = np.asarray(scale, dtype=np.float64)
    z = (np.asarray(y, dtype=np.float64) - np.asarray(loc, dtype=np.float64)) / scale
    return _log_standard_density(z, name, df) - np.log(scale)


def _standard(name: str, df: float | None):
    from illia_export.errors import require

    stats = require("scipy.stats", "examples", "Quantiles of a regression likelihood")
    if name == "gaussian":
        return stats.norm()
    if name == "laplace":
        return stats.laplace()
    if name == "student_t":
        return stats.t(df)
    raise TaskError(f"unknown likelihood {name!r}")


def component_cdf(
    x: np.ndarray, loc: np.ndarray, scale: np.ndarray, name: str, df: float | None = None
) -> np.ndarray:
    """``P(Y <= x)`` of each component (``scipy.stats`` CDF of the standardized value)."""
    return _standard(name, df).cdf((np.asarray(x, np.float64) - loc) / scale)


def mixture_cdf(
    x: np.ndarray, loc: np.ndarray, scale: np.ndarray, name: str, df: float | None = None
) -> np.ndarray:
    """``F(x) = (1/S) sum_s F_s(x)``: `loc`, `scale` are ``[S, ...]``, `x` is ``[...]``."""
    return component_cdf(x[None], loc, scale, name, df).mean(axis=0)


def mixture_quantiles(
    q: np.ndarray, loc: np.ndarray, scale: np.ndarray, name: str, df: float | None = None
) -> np.ndarray:
    """Quantiles of the equal-weight mixture of S components, for every row at once.

    Args:
        q: quantile levels ``[Q]`` in [0, 1].
        loc, scale: ``[S, ...]`` component locations and scale parameters.

    Returns:
        ``[Q, ...]``: for each level, the ``x`` with ``F(x) = q`` (``-inf``/``+inf`` for 0/1).

    The root is bracketed exactly by the smallest and the largest component quantile (at the
    smallest every component CDF is <= q, at the largest >= q) and found by bisection on the
    mixture CDF, which is continuous and non-decreasing; the bracket shrinks until it is
    narrower than ``RELATIVE_TOLERANCE * (1 + |x|)``.
    """
    dist = _standard(name, df)
    q = np.asarray(q, dtype=np.float64).reshape(-1)
    loc = np.asarray(loc, dtype=np.float64)
    scale = np.asarray(scale, dtype=np.float64)
    out = np.empty((q.shape[0], *loc.shape[1:]), dtype=np.float64)
    for i, level in enumerate(q):
        if level <= 0.0 or level >= 1.0:
            out[i] = -np.inf if level <= 0.0 else np.inf
            continue
        comp = loc + scale * dist.ppf(level)
        lo = comp.min(axis=0)
        hi = comp.max(axis=0)
        for _ in range(MAX_STEPS):
            mid = 0.5 * (lo + hi)
            below = dist.cdf((mid[None] - loc) / scale).mean(axis=0) < level
            lo = np.where(below, mid, lo)
            hi = np.where(below, hi, mid)
            if np.all((hi - lo) <= RELATIVE_TOLERANCE * (1.0 + np.abs(mid))):
                break
        out[i] = 0.5 * (lo + hi)
        bad = ~(np.isfinite(loc).all(axis=0) & (scale > 0).all(axis=0))
        out[i][bad] = np.nan
    return out


def mixture_log_density(
    y: np.ndarray, loc: np.ndarray, scale: np.ndarray, name: str, df: float | None = None, event_ndim: int = 0
) -> np.ndarray:
    """``log (1/S) sum_s prod_e p_s(y_e)``: the mixture's log density of `y`.

    Args:
        y: targets ``[B, ...]``.
        loc, scale: ``[S, B, ...]``.
        event_ndim: how many trailing axes form one joint event (their component log densities
            are summed within each sample before the mixture; the weights of a sample are shared
            by all of a row's outputs).

    Returns:
        ``[B, ...]`` without the last `event_ndim` axes, computed with logsumexp.
    """
    logp = component_log_density(np.asarray(y)[None], loc, scale, name, df)
    if event_ndim:
        logp = logp.sum(axis=tuple(range(-event_ndim, 0)))
    top = logp.max(axis=0)
    top = np.where(np.isfinite(top), top, 0.0)
    return top + np.log(np.exp(logp - top[None]).mean(axis=0))
