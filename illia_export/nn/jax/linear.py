"""Bayesian fully connected layer (illia's jax ``Linear``)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx
from jax import lax

from illia_export.distributions.jax import GaussianDistribution
from illia_export.nn.jax.module import (
    check_positive,
    default_rngs,
    fold_samples,
)
from illia_export.nn.jax.weight_bias import WeightBiasLayer


class Linear(WeightBiasLayer):
    """``y = x @ w.T + b`` with ``w ~ q(w)`` of shape ``(output_size, input_size)`` (torch layout).

    Args:
        input_size: number of input features.
        output_size: number of output features.
        weights_distribution: distribution of the weight, shape ``(output_size, input_size)``;
            default ``GaussianDistribution`` with illia's priors.
        bias_distribution: distribution of the bias, shape ``(output_size,)``.
        use_bias: whether to add a bias.
        precision: passed to `dot_general`.
        dot_general: the contraction (``lax.dot_general`` by default).
        rngs: ``nnx.Rngs`` for initial values and sampling (``None``: ``nnx.Rngs(0)``).

    Input ``[*, input_size]`` -> output ``[*, output_size]``. With noise injected with a sample
    axis (``[S, out, in]``), the input's first axis holds S sample-major blocks of the batch.
    """

    def __init__(
        self,
        input_size: int,
        output_size: int,
        weights_distribution: GaussianDistribution | None = None,
        bias_distribution: GaussianDistribution | None = None,
        use_bias: bool = True,
        precision: lax.Precision | None = None,
        dot_general: Callable[..., jax.Array] = lax.dot_general,
        rngs: nnx.Rngs | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        check_positive(input_size=input_size, output_size=output_size)
        rngs = default_rngs(rngs)
        self.input_size = input_size
        self.output_size = output_size
        self.precision = precision
        self.dot_general = dot_general
        self._init_weight_bias(
            (output_size, input_size), (output_size,), weights_distribution, bias_distribution, use_bias, rngs
        )

    def _apply(self, x: jax.Array, w: jax.Array, b: jax.Array | None) -> jax.Array:
        y = self.dot_general(x, w, (((x.ndim - 1,), (1,)), ((), ())), precision=self.precision)
        if b is not None:
            y = y + b
        return y

    def __call__(self, inputs: jax.Array) -> jax.Array:
        """Args: inputs ``[*, input_size]``. Returns ``[*, output_size]``."""
        if inputs.ndim < 1 or inputs.shape[-1] != self.input_size:
            raise ValueError(f"Linear expects `inputs` of shape [*, {self.input_size}], got {tuple(inputs.shape)}")
        w = self._draw(self.weights_distribution, self.weights)
        b = self._draw(self.bias_distribution, self.bias) if self.use_bias else None
        return fold_samples(self._apply, jnp.asarray(inputs), [w, b], [2, 1])
