"""Bayesian LSTM classifier head (illia's jax ``LSTM``): embedding -> LSTM cell over time -> linear.

The recurrence is a ``jax.lax.scan`` over time (not a Python loop), so exported graphs keep the
sequence length dynamic (an ONNX ``Loop`` through jax2onnx, a ``WHILE`` in TFLite).
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx
from jax import lax

from illia_export.distributions.jax import GaussianDistribution
from illia_export.nn.jax.embedding import Embedding
from illia_export.nn.jax.module import (
    BayesianModule,
    SampledWeights,
    check_positive,
    default_rngs,
    fold_samples,
)

_GATES = ("f", "i", "c", "o")


class LSTM(BayesianModule):
    """Bayesian LSTM over token indices, with a linear head on the last hidden state.

    Gates f, i, c (candidate), o use weights ``[hidden_size, embeddings_dim + hidden_size]``
    applied to ``concat([x_t, h_t])``; the head ``wv`` is ``[output_size, hidden_size]``
    (the same shapes as the torch layer).

    Args:
        num_embeddings, embeddings_dim, padding_idx, max_norm, norm_type, scale_grad_by_freq:
            passed to the Bayesian :class:`Embedding` (``self.embedding``).
        hidden_size: LSTM state size H.
        output_size: size of the head's output.
        rngs: ``nnx.Rngs`` for initial values and sampling (``None``: ``nnx.Rngs(0)``).

    Call: token indices ``[B, T]`` or ``[B, T, 1]`` and optional ``init_states = (h, c)``
    (each ``[B, H]``). Returns ``(y, (h, c))`` with ``y: [B, output_size]``, ``h, c: [B, H]``.
    """

    def __init__(
        self,
        num_embeddings: int,
        embeddings_dim: int,
        hidden_size: int,
        output_size: int,
        padding_idx: int | None = None,
        max_norm: float | None = None,
        norm_type: float = 2.0,
        scale_grad_by_freq: bool = False,
        rngs: nnx.Rngs | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        check_positive(hidden_size=hidden_size, output_size=output_size)
        rngs = default_rngs(rngs)
        self.num_embeddings = num_embeddings
        self.embeddings_dim = embeddings_dim
        self.hidden_size = hidden_size
        self.output_size = output_size
        self.padding_idx = padding_idx
        self.max_norm = max_norm
        self.norm_type = norm_type
        self.scale_grad_by_freq = scale_grad_by_freq
        self.rngs = rngs
        self.embedding = Embedding(
            num_embeddings=num_embeddings,
            embeddings_dim=embeddings_dim,
            padding_idx=padding_idx,
            max_norm=max_norm,
            norm_type=norm_type,
            scale_grad_by_freq=scale_grad_by_freq,
            rngs=rngs,
        )
        gate_shape = (hidden_size, embeddings_dim + hidden_size)
        for g in _GATES:
            setattr(self, f"w{g}_distribution", GaussianDistribution(gate_shape, rngs=rngs))
            setattr(self, f"b{g}_distribution", GaussianDistribution((hidden_size,), rngs=rngs))
        self.wv_distribution = GaussianDistribution((output_size, hidden_size), rngs=rngs)
        self.bv_distribution = GaussianDistribution((output_size,), rngs=rngs)
        for name in self._names():
            setattr(self, name, SampledWeights(getattr(self, f"{name}_distribution").sample()))

    @staticmethod
    def _names() -> list[str]:
        return [f"{k}{g}" for g in (*_GATES, "v") for k in ("w", "b")]

    def _distribution_pairs(self):
        return [(getattr(self, f"{n}_distribution"), getattr(self, n)) for n in self._names()]

    def _apply(self, emb, init_h, init_c, wf, bf, wi, bi, wc, bc, wo, bo, wv, bv):
        hidden = self.hidden_size
        gates_w = jnp.concatenate([wf, wi, wc, wo], axis=0)  # [4H, E+H]
        gates_b = jnp.concatenate([bf, bi, bc, bo], axis=0)  # [4H]
        # lax.slice_in_dim everywhere: basic indexing lowers to a gather under vmap with
        # symbolic shapes, which TFLite cannot convert
        emb_dim = self.embeddings_dim
        w_x = lax.slice_in_dim(gates_w, 0, emb_dim, axis=1)
        w_h = lax.slice_in_dim(gates_w, emb_dim, emb_dim + hidden, axis=1)
        x_proj = lax.dot_general(emb, w_x, (((2,), (1,)), ((), ()))) + gates_b  # [B, T, 4H]
        x_proj = jnp.transpose(x_proj, (1, 0, 2))  # [T, B, 4H]
        if init_h is None:
            init_h = jnp.zeros((emb.shape[0], hidden), emb.dtype)
            init_c = jnp.zeros((emb.shape[0], hidden), emb.dtype)

        def step(carry, xp):
            h_t, c_t = carry
            g = xp + lax.dot_general(h_t, w_h, (((1,), (1,)), ((), ())))
            f_t = jax.nn.sigmoid(lax.slice_in_dim(g, 0, hidden, axis=1))
            i_t = jax.nn.sigmoid(lax.slice_in_dim(g, hidden, 2 * hidden, axis=1))
            cand = jnp.tanh(lax.slice_in_dim(g, 2 * hidden, 3 * hidden, axis=1))
            o_t = jax.nn.sigmoid(lax.slice_in_dim(g, 3 * hidden, 4 * hidden, axis=1))
            c_t = c_t * f_t + cand * i_t
            h_t = o_t * jnp.tanh(c_t)
            return (h_t, c_t), None

        (h_t, c_t), _ = jax.lax.scan(step, (init_h, init_c), x_proj)
        y = lax.dot_general(h_t, wv, (((1,), (1,)), ((), ()))) + bv
        return y, h_t, c_t

    def __call__(
        self, inputs: jax.Array, init_states: tuple[jax.Array, jax.Array] | None = None
    ) -> tuple[jax.Array, tuple[jax.Array, jax.Array]]:
        """Args: inputs ``[B, T]`` or ``[B, T, 1]`` (int). Returns ``(y [B, out], (h, c) [B, H])``."""
        inputs = jnp.asarray(inputs)
        if inputs.ndim == 3 and inputs.shape[-1] == 1:
            inputs = jnp.squeeze(inputs, axis=-1)
        if inputs.ndim != 2:
            raise ValueError(f"LSTM expects token indices `inputs` of shape [batch, seq_len], got {tuple(inputs.shape)}")
        emb = self.embedding(inputs)  # [B, T, E] (S*B with a sample axis)
        weights = [self._draw(d, v) for d, v in self._distribution_pairs()]
        if init_states is None:
            batch_inputs = (emb, None, None)
        else:
            h0, c0 = (jnp.asarray(s) for s in init_states)
            if h0.shape != (inputs.shape[0], self.hidden_size) or c0.shape != h0.shape:
                raise ValueError(
                    f"`init_states` must be two arrays of shape {(inputs.shape[0], self.hidden_size)}, got "
                    f"{tuple(h0.shape)} and {tuple(c0.shape)}"
                )
            batch_inputs = (emb, h0, c0)
        fn = lambda xs, *ws: self._apply(*xs, *ws)  # noqa: E731
        y, h_t, c_t = fold_samples(fn, batch_inputs, weights, [2, 1] * 5)
        return y, (h_t, c_t)
