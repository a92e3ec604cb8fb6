"""``BatchEnsembleLinear`` for Flax-NNX with probly's semantics (Wen, Tran & Ba, 2020).

Member ``k`` computes ``((x * r_k) @ kernel) * s_k + bias_k`` on rows ``[k*B, (k+1)*B)`` of an
input of shape ``[E*B, in_features]``. Shapes: ``kernel [in, out]``, ``r [E, in]``,
``s [E, out]``, ``bias [E, out]``. It carries no weight noise (its members are the ensemble),
so exporters give it no noise input.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx
from jax import lax

from illia_export.nn.jax.module import check_positive


class BatchEnsembleLinear(nnx.Module):
    """Wrap an ``nnx.Linear`` as a rank-one BatchEnsemble layer with `num_members` members.

    Args:
        base_layer: the ``nnx.Linear`` to wrap.
        rngs: ``nnx.Rngs`` or int seed used to initialize new parameters.
        num_members: number of ensemble members E.
        use_base_weights: if True, share (copy) the base layer's kernel and bias; otherwise
            draw a fresh kernel (LeCun normal) and zero biases.
        init: ``"normal"`` (``r ~ N(r_mean, r_std)``, ``s ~ N(s_mean, s_std)``) or
            ``"random_sign"`` (entries in {-1, +1}).
        r_mean, r_std, s_mean, s_std: parameters of the ``"normal"`` initialization.

    Call: ``[E*B, in_features]`` -> ``[E*B, out_features]``.
    """

    def __init__(
        self,
        base_layer: nnx.Linear,
        rngs: nnx.Rngs | int = 0,
        num_members: int = 4,
        use_base_weights: bool = False,
        init: str = "normal",
        r_mean: float = 1.0,
        r_std: float = 0.5,
        s_mean: float = 1.0,
        s_std: float = 0.5,
    ) -> None:
        if not isinstance(base_layer, nnx.Linear):
            raise TypeError(f"`base_layer` must be an nnx.Linear, got {type(base_layer).__name__}")
        check_positive(num_members=num_members)
        if init not in ("normal", "random_sign"):
            raise ValueError(f"`init` (={init!r}) must be 'normal' or 'random_sign'")
        if isinstance(rngs, int):
            rngs = nnx.Rngs(rngs)
        in_f, out_f = base_layer.in_features, base_layer.out_features
        self.in_features = in_f
        self.out_features = out_f
        self.num_members = num_members
        self.use_bias = base_layer.bias is not None
        if use_base_weights:
            kernel = jnp.asarray(base_layer.kernel[...])
        else:
            kernel = jax.nn.initializers.lecun_normal()(rngs.params(), (in_f, out_f), jnp.float32)
        self.kernel = nnx.Param(kernel)
        if init == "normal":
            r = r_mean + r_std * jax.random.normal(rngs.params(), (num_members, in_f))
            s = s_mean + s_std * jax.random.normal(rngs.params(), (num_members, out_f))
        else:
            r = jax.random.rademacher(rngs.params(), (num_members, in_f), dtype=jnp.float32)
            s = jax.random.rademacher(rngs.params(), (num_members, out_f), dtype=jnp.float32)
        self.r = nnx.Param(r)
        self.s = nnx.Param(s)
        if self.use_bias:
            if use_base_weights:
                bias = jnp.tile(jnp.asarray(base_layer.bias[...])[None, :], (num_members, 1))
            else:
                bias = jnp.zeros((num_members, out_f))
            self.bias: nnx.Param | None = nnx.Param(bias)
        else:
            self.bias = nnx.data(None)

    def __call__(self, inputs: jax.Array, out_sharding: Any = None) -> jax.Array:
        """Args: inputs ``[E*B, in_features]``. Returns ``[E*B, out_features]``."""
        inputs = jnp.asarray(inputs)
        if inputs.ndim != 2 or inputs.shape[1] != self.in_features:
            raise ValueError(
                f"BatchEnsembleLinear expects `inputs` of shape [E*B, {self.in_features}], got {tuple(inputs.shape)}"
            )
        if isinstance(inputs.shape[0], int) and inputs.shape[0] % self.num_members:
            raise ValueError(
                f"BatchEnsembleLinear: the batch ({inputs.shape[0]}) must be a multiple of num_members "
                f"({self.num_members})"
            )
        x = inputs.reshape((self.num_members, -1, self.in_features)) * self.r[...][:, None, :]
        y = lax.dot_general(x, self.kernel[...], (((2,), (0,)), ((), ()))) * self.s[...][:, None, :]
        if self.bias is not None:
            y = y + self.bias[...][:, None, :]
        y = y.reshape((-1, self.out_features))
        if out_sharding is not None:
            y = jax.lax.with_sharding_constraint(y, out_sharding)
        return y
