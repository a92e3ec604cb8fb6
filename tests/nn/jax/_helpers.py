"""Shared helpers of the jax layer tests: an independent numpy KL and a flat gradient check."""

from __future__ import annotations

import math

import jax
import numpy as np


def np_kl(dist, x) -> float:
    """``sum log q(x) - sum log p(x)`` computed in float64 numpy (independent of the library)."""
    mu = np.asarray(dist.mu[...], np.float64)
    rho = np.asarray(dist.rho[...], np.float64)
    x = np.asarray(x, np.float64)
    sigma = np.log1p(np.exp(rho))
    c = 0.5 * math.log(2 * math.pi)
    log_q = -c - np.log(sigma) - (x - mu) ** 2 / (2 * sigma**2)
    log_p = -c - math.log(dist.std_prior) - (x - dist.mu_prior) ** 2 / (2 * dist.std_prior**2)
    return float(log_q.sum() - log_p.sum())


def grad_norms(grads) -> dict[str, float]:
    """``{dotted path: |grad|_max}`` of an nnx gradient state."""
    out = {}
    for path, leaf in jax.tree_util.tree_flatten_with_path(grads)[0]:
        name = ".".join(str(getattr(k, "key", getattr(k, "name", k))) for k in path)
        name = name[: -len(".value")] if name.endswith(".value") else name
        out[name] = float(np.max(np.abs(np.asarray(leaf))))
    return out
