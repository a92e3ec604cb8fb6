"""`BayesianModule`: the base of every Bayesian Flax-NNX layer, and shared helpers.

Sampled weights live in :class:`SampledWeights` variables (an ``nnx.Variable`` subtype, not
``nnx.Param``): ``nnx.grad``/optimizers that select ``nnx.Param`` see only the distributions'
``mu``/``rho`` (and plain flax layers' params), and ``freeze()`` only flips a flag — it never
replaces variables with plain arrays (the seed's defect), so ``nnx.split``/``nnx.state`` keep
working on frozen models.
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from illia_export.distributions.jax import GaussianDistribution

_PORTABLE = contextvars.ContextVar("illia_export_portable_ops", default=False)


@contextlib.contextmanager
def portable_ops() -> Iterator[None]:
    """Within this context, layers trace to export-friendly primitives.

    Convolutions become strided slices + a matmul (im2col) instead of ``conv_general_dilated``
    (whose batched-kernel form needs a static group count and which TF's CPU kernels cannot
    run grouped), and embedding lookups become one-hot matmuls instead of gathers. Results
    are the same up to float rounding; exporters trace under this context.
    """
    token = _PORTABLE.set(True)
    try:
        yield
    finally:
        _PORTABLE.reset(token)


def portable() -> bool:
    """Whether :func:`portable_ops` is active."""
    return _PORTABLE.get()


class SampledWeights(nnx.Variable):
    """The last weights drawn by a Bayesian layer (used by ``kl_cost`` and when frozen)."""


def check_positive(**values: Any) -> None:
    """Raise ValueError naming the first argument that is not a positive integer (or tuple)."""
    for name, value in values.items():
        items = value if isinstance(value, (tuple, list)) else (value,)
        if not items or not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in items):
            raise ValueError(f"`{name}` (={value!r}) must be a positive integer")


def default_rngs(rngs: nnx.Rngs | None) -> nnx.Rngs:
    """``rngs`` or a fresh ``nnx.Rngs(0)`` (the seed's default, without a shared mutable default)."""
    if rngs is None:
        return nnx.Rngs(0)
    if isinstance(rngs, int):
        return nnx.Rngs(rngs)
    if not isinstance(rngs, nnx.Rngs):
        raise TypeError(f"`rngs` must be an nnx.Rngs or an int seed, got {type(rngs).__name__}")
    return rngs


class BayesianModule(nnx.Module):
    """Base class: ``frozen`` flag, ``freeze``/``unfreeze`` and ``kl_cost``.

    Frozen layers reuse their last sampled weights (deterministic outputs, no gradient to
    ``mu``/``rho``); unfrozen layers draw new weights on every call. Injected noise (see
    :meth:`GaussianDistribution.set_noise`) always takes precedence over the frozen state.
    """

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.frozen = False
        self.is_bayesian = True

    def freeze(self) -> None:
        """Fix the current sampled weights: later calls are deterministic."""
        self.frozen = True
        for _, child in nnx.iter_children(self):
            if isinstance(child, BayesianModule):
                child.freeze()

    def unfreeze(self) -> None:
        """Draw new weights on every call again."""
        self.frozen = False
        for _, child in nnx.iter_children(self):
            if isinstance(child, BayesianModule):
                child.unfreeze()

    def kl_cost(self) -> tuple[jax.Array, int]:
        """``(sum log q(w) - sum log p(w), num_params)`` at the current sampled weights."""
        log_probs = jnp.zeros(())
        num_params = 0
        for dist, var in self._distribution_pairs():
            log_probs = log_probs + dist.log_prob(var[...])
            num_params += dist.num_params
        return log_probs, num_params

    # -- helpers for subclasses ---------------------------------------------------------------
    def _distribution_pairs(self) -> list[tuple[GaussianDistribution, SampledWeights]]:
        """``(distribution, sampled weights)`` pairs of this layer (not of child layers)."""
        raise NotImplementedError

    def _draw(self, dist: GaussianDistribution, var: SampledWeights) -> jax.Array:
        """The weights to use now: resample (and store) unless frozen without injected noise."""
        if self.frozen and dist.noise is None:
            return var[...]
        w = dist.sample()
        var.set_value(w)
        return w


def fold_samples(
    fn: Callable[..., Any],
    inputs: Any,
    weights: Sequence[jax.Array | None],
    event_ndims: Sequence[int],
) -> Any:
    """Apply ``fn(inputs, *weights)`` per sample when the weights carry a sample axis.

    Without a sample axis this is ``fn(inputs, *weights)``. With weights of shape
    ``[S, *event]``, `inputs` (an array or a pytree of arrays sharing the batch axis 0) holds
    S sample-major blocks of the batch (rows ``[s*B, (s+1)*B)`` belong to sample s, as in the
    torch layers); each block is run with its own weights and the results are folded back
    into the batch axis (every output leaf's first axis).
    """
    present = [(w, n) for w, n in zip(weights, event_ndims) if w is not None]
    first, n0 = present[0]
    if first.ndim == n0:
        return fn(inputs, *weights)
    num_samples = first.shape[0]

    def split(x: jax.Array) -> jax.Array:
        if x.shape[0] % num_samples:
            raise ValueError(
                f"the batch axis ({x.shape[0]}) must hold {num_samples} sample-major blocks "
                "(injected noise has a sample axis)"
            )
        return x.reshape((num_samples, -1) + tuple(x.shape[1:]))

    blocks = jax.tree_util.tree_map(split, inputs)
    in_axes = (0,) + tuple(None if w is None else 0 for w in weights)
    out = jax.vmap(fn, in_axes=in_axes)(blocks, *weights)
    return jax.tree_util.tree_map(lambda y: y.reshape((-1,) + tuple(y.shape[2:])), out)


def bayesian_modules(model: nnx.Module) -> Iterator[tuple[tuple, BayesianModule]]:
    """``(path, module)`` for every :class:`BayesianModule` in `model` (itself included)."""
    for path, module in nnx.iter_modules(model):
        if isinstance(module, BayesianModule):
            yield path, module


def freeze(model: nnx.Module) -> nnx.Module:
    """Freeze every Bayesian layer of `model` (in place) and return it."""
    for _, module in bayesian_modules(model):
        module.freeze()
    return model


def unfreeze(model: nnx.Module) -> nnx.Module:
    """Unfreeze every Bayesian layer of `model` (in place) and return it."""
    for _, module in bayesian_modules(model):
        module.unfreeze()
    return model
