"""KL and ELBO losses for Bayesian Flax-NNX models (illia's jax losses, seed defects fixed).

- :class:`KLDivergenceLoss` divides the summed KL of *all* Bayesian modules by their *global*
  parameter count (the seed divided by the last module's count).
- :class:`ELBOLoss` really is a Monte Carlo estimate: it calls the model ``num_samples`` times,
  each call drawing fresh weights (the seed re-added the loss of one fixed output).

Both are ``nnx.Module`` s, as in the seed, so they can be passed to NNX transforms next to the
model, e.g. ``nnx.value_and_grad(loss_fn, argnums=1)(elbo, model)``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal

import jax
import jax.numpy as jnp
from flax import nnx

from illia_export.nn.jax.module import bayesian_modules


class KLDivergenceLoss(nnx.Module):
    """``weight * sum_m kl_m / sum_m num_params_m`` over every Bayesian module m of a model.

    Each ``kl_m`` is the module's :meth:`~illia_export.nn.jax.BayesianModule.kl_cost` at its
    current sampled weights (``sum log q(w) - sum log p(w)``, a one-sample KL estimate).

    Args:
        reduction: only ``"mean"`` (per-parameter average) is supported, as in the seed.
        weight: scale applied to the result.
        **kwargs: passed to ``nnx.Module`` (as in the seed).
    """

    def __init__(self, reduction: Literal["mean"] = "mean", weight: float = 1.0, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if reduction != "mean":
            raise ValueError(f"`reduction` (={reduction!r}) must be 'mean'")
        self.reduction = reduction
        self.weight = float(weight)

    def __call__(self, model: nnx.Module) -> jax.Array:
        """Args: model containing Bayesian layers. Returns a scalar array."""
        total = jnp.zeros(())
        num_params = 0
        for _, module in bayesian_modules(model):
            kl, n = module.kl_cost()
            total = total + kl
            num_params += n
        if num_params == 0:
            raise ValueError("KLDivergenceLoss: `model` contains no Bayesian module")
        return self.weight * total / num_params


class ELBOLoss(nnx.Module):
    """Negative ELBO, estimated with `num_samples` real Monte Carlo forward passes.

    ``loss = mean_s [ loss_function(model(inputs), targets) + kl_weight * KL_s ]`` where every
    ``model(inputs)`` call draws fresh weights from the model's rng streams and ``KL_s`` is
    :class:`KLDivergenceLoss` evaluated at the weights of that same call.

    API difference from the seed (which took ``(outputs, targets, model)`` and could not
    resample): the loss takes the *inputs* and calls the model itself.

    Args:
        loss_function: ``loss_function(outputs, targets) -> scalar``.
        num_samples: number of Monte Carlo samples (forward passes).
        kl_weight: weight of the KL term.
        **kwargs: passed to ``nnx.Module`` (as in the seed).

    Example:
        >>> elbo = ELBOLoss(lambda y, t: optax_like_xent(y, t), num_samples=2)
        >>> loss = elbo(x, labels, model)  # inside nnx.grad(lambda m: elbo(x, labels, m))
    """

    def __init__(
        self,
        loss_function: Callable[[jax.Array, jax.Array], jax.Array],
        num_samples: int = 1,
        kl_weight: float = 1e-3,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if not isinstance(num_samples, int) or isinstance(num_samples, bool) or num_samples <= 0:
            raise ValueError(f"`num_samples` (={num_samples!r}) must be a positive integer")
        self.loss_function = loss_function
        self.num_samples = num_samples
        self.kl_weight = float(kl_weight)
        self.kl_loss = KLDivergenceLoss(weight=kl_weight)

    def __call__(self, inputs: Any, targets: jax.Array, model: Callable[..., Any]) -> jax.Array:
        """Args: model inputs, targets, the model (an ``nnx.Module``). Returns a scalar array."""
        total = jnp.zeros(())
        for _ in range(self.num_samples):
            outputs = model(inputs)
            total = total + self.loss_function(outputs, targets) + self.kl_loss(model)
        return total / self.num_samples
