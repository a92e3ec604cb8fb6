"""Bayesian embedding table (illia's jax ``Embedding``)."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx
from jax import lax

from illia_export.distributions.jax import GaussianDistribution
from illia_export.nn.jax.module import (
    BayesianModule,
    SampledWeights,
    check_positive,
    default_rngs,
    fold_samples,
    portable,
)


def embedding_lookup(
    inputs: jax.Array,
    table: jax.Array,
    padding_idx: int | None,
    max_norm: float | None,
    norm_type: float,
) -> jax.Array:
    """Rows of `table` (``[N, D]``) at integer `inputs` (``[*]``) -> ``[*, D]``.

    Rows at `padding_idx` read as zeros; rows whose `norm_type`-norm exceeds `max_norm` are
    scaled by ``max_norm / (norm + 1e-7)`` (functionally, like the torch layer). Under
    :func:`portable_ops` the lookup is a one-hot matmul (exact) instead of a gather.
    """
    if portable():
        one_hot = jax.nn.one_hot(inputs, table.shape[0], dtype=table.dtype)
        out = lax.dot_general(one_hot, table, (((one_hot.ndim - 1,), (0,)), ((), ())))
    else:
        out = jnp.take(table, inputs, axis=0)
    if max_norm is not None:
        if norm_type == 2.0:
            norms = jnp.sqrt(jnp.sum(out * out, axis=-1, keepdims=True))
        else:
            norms = jnp.sum(jnp.abs(out) ** norm_type, axis=-1, keepdims=True) ** (1.0 / norm_type)
        out = out * jnp.where(norms > max_norm, max_norm / (norms + 1e-7), jnp.ones_like(norms))
    if padding_idx is not None:
        out = out * (inputs != padding_idx)[..., None].astype(out.dtype)
    return out


class Embedding(BayesianModule):
    """Lookup in a sampled table ``w ~ q(w)`` of shape ``(num_embeddings, embeddings_dim)``.

    Args:
        num_embeddings: vocabulary size N.
        embeddings_dim: embedding size D.
        padding_idx: index whose rows read as zeros (negative values count from the end).
        max_norm: if set, looked-up rows with a larger `norm_type`-norm are rescaled to it.
        norm_type: p of the p-norm used with `max_norm`.
        scale_grad_by_freq: accepted for API compatibility with the seed; no effect in JAX.
        weights_distribution: distribution of the table, shape ``(N, D)``.
        rngs: ``nnx.Rngs`` for initial values and sampling (``None``: ``nnx.Rngs(0)``).

    Input: integer indices ``[*]`` -> ``[*, embeddings_dim]``.
    """

    def __init__(
        self,
        num_embeddings: int,
        embeddings_dim: int,
        padding_idx: int | None = None,
        max_norm: float | None = None,
        norm_type: float = 2.0,
        scale_grad_by_freq: bool = False,
        weights_distribution: GaussianDistribution | None = None,
        rngs: nnx.Rngs | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        check_positive(num_embeddings=num_embeddings, embeddings_dim=embeddings_dim)
        if padding_idx is not None:
            if not isinstance(padding_idx, int) or not -num_embeddings <= padding_idx < num_embeddings:
                raise ValueError(f"`padding_idx` (={padding_idx!r}) must be within [-{num_embeddings}, {num_embeddings})")
            padding_idx = padding_idx % num_embeddings
        if max_norm is not None and not max_norm > 0:
            raise ValueError(f"`max_norm` (={max_norm}) must be positive")
        if not norm_type > 0:
            raise ValueError(f"`norm_type` (={norm_type}) must be positive")
        rngs = default_rngs(rngs)
        self.num_embeddings = num_embeddings
        self.embeddings_dim = embeddings_dim
        self.padding_idx = padding_idx
        self.max_norm = None if max_norm is None else float(max_norm)
        self.norm_type = float(norm_type)
        self.scale_grad_by_freq = scale_grad_by_freq
        self.rngs = rngs
        shape = (num_embeddings, embeddings_dim)
        self.weights_distribution = weights_distribution or GaussianDistribution(shape, rngs=rngs)
        if tuple(self.weights_distribution.shape) != shape:
            raise ValueError(f"`weights_distribution` has shape {self.weights_distribution.shape}, expected {shape}")
        self.weights = SampledWeights(self.weights_distribution.sample())

    def _distribution_pairs(self):
        return [(self.weights_distribution, self.weights)]

    def _apply(self, idx, table):
        return embedding_lookup(idx, table, self.padding_idx, self.max_norm, self.norm_type)

    def __call__(self, inputs: jax.Array) -> jax.Array:
        """Args: integer indices ``[*]``. Returns ``[*, embeddings_dim]``."""
        inputs = jnp.asarray(inputs)
        if not jnp.issubdtype(inputs.dtype, jnp.integer):
            raise ValueError(f"Embedding expects integer indices in `inputs`, got dtype {inputs.dtype}")
        if inputs.ndim < 1:
            raise ValueError("Embedding expects `inputs` with a batch axis, got a scalar")
        w = self._draw(self.weights_distribution, self.weights)
        return fold_samples(self._apply, inputs, [w], [2])
