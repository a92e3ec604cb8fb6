"""Mean-field Gaussian weight distribution for JAX/Flax-NNX: ``w = mu + softplus(rho) * eps``.

The JAX counterpart of :mod:`illia_export.distributions.torch`. Noise is normally drawn from
the module's own rng stream (a fresh key on every call, unlike the seed's fixed default key);
exporters and tests *inject* it with :meth:`GaussianDistribution.set_noise`. Injected noise
may carry a leading sample axis ``[S, *shape]``; the sample then has that axis too.
"""

from __future__ import annotations

import functools
import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

_HALF_LOG_2PI = 0.5 * math.log(2.0 * math.pi)


@functools.partial(jax.jit, static_argnums=(1, 2))
def _normal_flat(key: jax.Array, size: int, dtype: Any) -> jax.Array:
    return jax.random.normal(key, (size,), dtype=dtype)


def standard_normal(key: jax.Array, shape: tuple[int, ...], dtype: Any = jnp.float32) -> jax.Array:
    """``N(0, 1)`` draws of `shape` (numpy eagerly, jax under tracing): the first ``prod(shape)`` of a power-of-two-sized draw.

    Bucketing the draw size means eager code compiles the sampler once per size class instead
    of once per shape (XLA compilation of the threefry sampler dominates eager start-up). Same
    values eagerly and under ``jit``.
    """
    size = int(math.prod(shape))
    bucket = max(64, 1 << (size - 1).bit_length())
    flat = _normal_flat(key, bucket, jnp.dtype(dtype))
    if isinstance(flat, jax.core.Tracer):
        return flat[:size].reshape(shape)
    return np.asarray(flat)[:size].reshape(shape)


def _check_shape(shape: tuple[int, ...]) -> tuple[int, ...]:
    try:
        dims = tuple(int(d) for d in shape)
    except TypeError as exc:
        raise ValueError(f"`shape` (={shape!r}) must be a tuple of positive integers") from exc
    if not dims or any(d <= 0 for d in dims):
        raise ValueError(f"`shape` (={shape!r}) must be a non-empty tuple of positive integers")
    return dims


class GaussianDistribution(nnx.Module):
    """A learnable diagonal Gaussian ``q(w) = N(mu, softplus(rho)^2)`` over a tensor of `shape`.

    Args:
        shape: shape of the parameter tensor (e.g. ``(out, in)`` for a Linear weight).
        mu_prior: mean of the Gaussian prior ``p(w)``.
        std_prior: standard deviation of the prior (> 0).
        mu_init: mean of the initial ``mu`` values, drawn as ``N(mu_init, 0.1)``.
        rho_init: mean of the initial ``rho`` values, drawn as ``N(rho_init, 0.1)``;
            ``sigma = softplus(rho)``, so -7 gives ``sigma ~ 9e-4``.
        rngs: ``nnx.Rngs`` used for the initial values (``params`` stream) and kept on the
            module as the source of fresh sampling keys (``sample`` stream, falling back to
            ``default``). ``None`` means ``nnx.Rngs(0)``.

    Example:
        >>> dist = GaussianDistribution((3, 2), rngs=nnx.Rngs(0))
        >>> dist.sample().shape
        (3, 2)
    """

    def __init__(
        self,
        shape: tuple[int, ...],
        mu_prior: float = 0.0,
        std_prior: float = 0.1,
        mu_init: float = 0.0,
        rho_init: float = -7.0,
        rngs: nnx.Rngs | None = None,
    ) -> None:
        dims = _check_shape(shape)
        if not std_prior > 0:
            raise ValueError(f"`std_prior` (={std_prior}) must be positive")
        if rngs is None:
            rngs = nnx.Rngs(0)
        self.shape = dims
        self.mu_prior = float(mu_prior)
        self.std_prior = float(std_prior)
        self.mu = nnx.Param(jnp.asarray(mu_init + 0.1 * standard_normal(rngs.params(), dims), jnp.float32))
        self.rho = nnx.Param(jnp.asarray(rho_init + 0.1 * standard_normal(rngs.params(), dims), jnp.float32))
        self.rngs = rngs
        self.noise = nnx.data(None)

    # -- noise injection -------------------------------------------------------------------
    def set_noise(self, eps: jax.Array) -> None:
        """Use `eps` (shape ``shape`` or ``[S, *shape]``) instead of drawing noise in `sample`."""
        eps = jnp.asarray(eps)
        if tuple(eps.shape[eps.ndim - len(self.shape):]) != self.shape or eps.ndim > len(self.shape) + 1:
            raise ValueError(
                f"noise of shape {tuple(eps.shape)} does not fit a distribution of shape {self.shape}; "
                f"expected {self.shape} or (S, *{self.shape})"
            )
        self.noise = nnx.data(eps)

    def clear_noise(self) -> None:
        """Go back to drawing fresh noise in `sample`."""
        self.noise = nnx.data(None)

    @property
    def use_noise(self) -> bool:
        """Whether injected noise is in use."""
        return self.noise is not None

    # -- sampling ----------------------------------------------------------------------------
    def sigma(self) -> jax.Array:
        """Posterior standard deviation ``softplus(rho)``, shape ``shape``."""
        return jax.nn.softplus(self.rho[...])

    def sample_from_noise(self, eps: jax.Array) -> jax.Array:
        """``mu + softplus(rho) * eps`` for a given `eps` of shape ``shape`` or ``[S, *shape]``."""
        return self.mu[...] + jax.nn.softplus(self.rho[...]) * eps

    def sample(self, rngs: nnx.Rngs | None = None) -> jax.Array:
        """One sample ``mu + softplus(rho) * eps``.

        `eps` is the injected noise if any; otherwise it is drawn with a fresh key from `rngs`
        when given, else from the module's own rng stream (which advances on every call).

        Returns:
            Array of shape ``shape`` (or ``[S, *shape]`` with injected sample-axis noise).
        """
        if self.noise is not None:
            eps = self.noise
        else:
            source = self.rngs if rngs is None else rngs
            eps = standard_normal(source.sample(), self.shape, self.mu[...].dtype)
        return self.sample_from_noise(eps)

    def __call__(self) -> jax.Array:
        """Same as :meth:`sample`."""
        return self.sample()

    def log_prob(self, x: jax.Array | None = None) -> jax.Array:
        """``sum log q(x) - sum log p(x)``: the seed's one-sample KL estimate, not a density.

        Args:
            x: array of shape ``shape`` or ``[S..., *shape]``; with leading sample axes the
                result is averaged over them. ``None`` draws a fresh sample.

        Returns:
            Scalar array.
        """
        if x is None:
            x = self.sample()
        x = jnp.asarray(x)
        mu = self.mu[...]
        sigma = jax.nn.softplus(self.rho[...])
        log_q = -_HALF_LOG_2PI - jnp.log(sigma) - (x - mu) ** 2 / (2.0 * sigma**2)
        log_p = -_HALF_LOG_2PI - math.log(self.std_prior) - (x - self.mu_prior) ** 2 / (2.0 * self.std_prior**2)
        n_samples = x.size // mu.size
        return (jnp.sum(log_q) - jnp.sum(log_p)) / n_samples

    @property
    def num_params(self) -> int:
        """Number of scalar parameters the distribution covers (``prod(shape)``)."""
        return int(math.prod(self.shape))
