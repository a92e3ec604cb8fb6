"""Bayesian 1-D and 2-D convolutions (illia's jax ``Conv1d``/``Conv2d``).

Layout follows the seed (and PyTorch): inputs ``NCL``/``NCHW``, kernels ``OIL``/``OIHW`` with
``I = input_channels // groups``, so ``mu``/``rho`` copy one-to-one from the torch layers.
Eagerly the layers call ``lax.conv_general_dilated``; under
:func:`illia_export.nn.jax.module.portable_ops` (export) they use :func:`conv2d_im2col`.
"""

from __future__ import annotations

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
    portable,
)
from illia_export.nn.jax.weight_bias import WeightBiasLayer

IntOrPair = int | tuple[int, int]


def _pair(value: IntOrPair, name: str, allow_zero: bool = False) -> tuple[int, int]:
    items = list(value) if isinstance(value, (tuple, list)) else [value, value]
    ok = len(items) == 2 and all(isinstance(v, int) and not isinstance(v, bool) for v in items)
    if not ok or any(v < 0 or (v == 0 and not allow_zero) for v in items):
        kind = "non-negative" if allow_zero else "positive"
        raise ValueError(f"`{name}` (={value!r}) must be a {kind} integer or a pair of them")
    return (items[0], items[1])


def _zero_pad(x: jax.Array, amount: int, axis: int) -> jax.Array:
    """Zeros on both sides of `axis` by concatenation (``pad`` with a symbolic batch does not
    lower through every exporter)."""
    if amount == 0:
        return x
    zeros = jnp.zeros_like(lax.slice_in_dim(x, 0, 1, axis=axis))
    return jnp.concatenate([zeros] * amount + [x] + [zeros] * amount, axis=axis)


def conv2d_im2col(
    inputs: jax.Array,
    weights: jax.Array,
    stride: tuple[int, int],
    padding: tuple[int, int],
    dilation: tuple[int, int],
    groups: int,
) -> jax.Array:
    """2-D convolution as strided slices + one matmul (exact; portable to TFLite/ONNX/TF).

    Args:
        inputs: ``[N, C, H, W]``.
        weights: ``[O, C/groups, kh, kw]``.

    Returns:
        ``[N, O, H', W']`` (no bias).
    """
    _, channels, height, width = inputs.shape
    out_channels, cg, kh, kw = weights.shape
    (sh, sw), (ph, pw), (dh, dw) = stride, padding, dilation
    out_h = (height + 2 * ph - dh * (kh - 1) - 1) // sh + 1
    out_w = (width + 2 * pw - dw * (kw - 1) - 1) // sw + 1
    if out_h <= 0 or out_w <= 0:
        raise ValueError(f"the input's spatial size {(height, width)} is too small for the kernel")
    x = _zero_pad(_zero_pad(inputs, ph, axis=2), pw, axis=3)
    cols = []
    for i in range(kh):
        for j in range(kw):
            # lax.slice (static bounds) rather than x[..., a:b:s], which lowers to a gather
            rows = lax.slice_in_dim(x, i * dh, i * dh + sh * (out_h - 1) + 1, sh, axis=2)
            cols.append(lax.slice_in_dim(rows, j * dw, j * dw + sw * (out_w - 1) + 1, sw, axis=3))
    patches = jnp.stack(cols, axis=2)  # [N, C, kh*kw, H', W']
    patches = patches.reshape((-1, groups, cg * kh * kw, out_h, out_w))
    w = weights.reshape((groups, out_channels // groups, cg * kh * kw))
    # contract k, batch over groups: [g, N, H', W', o/g] -> [N, g, o/g, H', W']
    out = lax.dot_general(patches, w, (((2,), (2,)), ((1,), (0,))))
    out = jnp.transpose(out, (1, 0, 4, 2, 3))
    return out.reshape((-1, out_channels, out_h, out_w))


class _ConvNd(WeightBiasLayer):
    """Shared constructor, sampling and KL of the Bayesian convolutions."""

    def _setup(
        self,
        input_channels: int,
        output_channels: int,
        kernel: tuple[int, ...],
        groups: int,
        weights_distribution: GaussianDistribution | None,
        bias_distribution: GaussianDistribution | None,
        use_bias: bool,
        rngs: nnx.Rngs | None,
    ) -> None:
        check_positive(input_channels=input_channels, output_channels=output_channels, groups=groups)
        if input_channels % groups or output_channels % groups:
            raise ValueError(
                f"`groups` (={groups}) must divide both `input_channels` (={input_channels}) and "
                f"`output_channels` (={output_channels})"
            )
        rngs = default_rngs(rngs)
        self.input_channels = input_channels
        self.output_channels = output_channels
        self.groups = groups
        shape = (output_channels, input_channels // groups, *kernel)
        self._init_weight_bias(shape, (output_channels,), weights_distribution, bias_distribution, use_bias, rngs)

    def _conv2d(self, x, w, b, stride, padding, dilation):
        if portable():
            y = conv2d_im2col(x, w, stride, padding, dilation, self.groups)
        else:
            y = lax.conv_general_dilated(
                x,
                w,
                window_strides=stride,
                padding=[(padding[0], padding[0]), (padding[1], padding[1])],
                rhs_dilation=dilation,
                dimension_numbers=("NCHW", "OIHW", "NCHW"),
                feature_group_count=self.groups,
            )
        if b is not None:
            y = y + b.reshape((1, -1, 1, 1))
        return y


class Conv1d(_ConvNd):
    """Bayesian ``Conv1d``: input ``[B, input_channels, L]`` -> ``[B, output_channels, L']``.

    Args:
        input_channels, output_channels: channel counts (both divisible by `groups`).
        kernel_size, stride, dilation: positive integers; padding: non-negative integer
            (zeros on both sides).
        groups: blocked connections between input and output channels.
        weights_distribution: shape ``(output_channels, input_channels // groups, kernel_size)``.
        bias_distribution: shape ``(output_channels,)``.
        use_bias: whether to add a bias.
        rngs: ``nnx.Rngs`` for initial values and sampling (``None``: ``nnx.Rngs(0)``).
    """

    def __init__(
        self,
        input_channels: int,
        output_channels: int,
        kernel_size: int,
        stride: int = 1,
        padding: int = 0,
        dilation: int = 1,
        groups: int = 1,
        weights_distribution: GaussianDistribution | None = None,
        bias_distribution: GaussianDistribution | None = None,
        use_bias: bool = True,
        rngs: nnx.Rngs | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        check_positive(kernel_size=kernel_size, stride=stride, dilation=dilation)
        if not isinstance(padding, int) or isinstance(padding, bool) or padding < 0:
            raise ValueError(f"`padding` (={padding!r}) must be a non-negative integer")
        self.kernel_size = kernel_size
        self.stride = stride
        self.padding = padding
        self.dilation = dilation
        self._setup(
            input_channels, output_channels, (kernel_size,), groups, weights_distribution, bias_distribution,
            use_bias, rngs,
        )

    def _apply(self, x, w, b):
        x4, w4 = jnp.expand_dims(x, 2), jnp.expand_dims(w, 2)  # as [N, C, 1, L] / [O, I, 1, k]
        y = self._conv2d(x4, w4, b, (1, self.stride), (0, self.padding), (1, self.dilation))
        return jnp.squeeze(y, axis=2)

    def __call__(self, inputs: jax.Array) -> jax.Array:
        """Args: inputs ``[B, input_channels, L]``. Returns ``[B, output_channels, L']``."""
        if inputs.ndim != 3 or inputs.shape[1] != self.input_channels:
            raise ValueError(
                f"Conv1d expects `inputs` of shape [batch, {self.input_channels}, length], got {tuple(inputs.shape)}"
            )
        w = self._draw(self.weights_distribution, self.weights)
        b = self._draw(self.bias_distribution, self.bias) if self.use_bias else None
        return fold_samples(self._apply, jnp.asarray(inputs), [w, b], [3, 1])


class Conv2d(_ConvNd):
    """Bayesian ``Conv2d``: input ``[B, input_channels, H, W]`` -> ``[B, output_channels, H', W']``.

    Args:
        input_channels, output_channels: channel counts (both divisible by `groups`).
        kernel_size, stride, dilation: positive integers or pairs; padding: non-negative
            integer or pair (zeros on both sides).
        groups: blocked connections between input and output channels.
        weights_distribution: shape ``(output_channels, input_channels // groups, kh, kw)``.
        bias_distribution: shape ``(output_channels,)``.
        use_bias: whether to add a bias.
        rngs: ``nnx.Rngs`` for initial values and sampling (``None``: ``nnx.Rngs(0)``).
    """

    def __init__(
        self,
        input_channels: int,
        output_channels: int,
        kernel_size: IntOrPair,
        stride: IntOrPair = (1, 1),
        padding: IntOrPair = (0, 0),
        dilation: IntOrPair = (1, 1),
        groups: int = 1,
        weights_distribution: GaussianDistribution | None = None,
        bias_distribution: GaussianDistribution | None = None,
        use_bias: bool = True,
        rngs: nnx.Rngs | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.kernel_size = _pair(kernel_size, "kernel_size")
        self.stride = _pair(stride, "stride")
        self.padding = _pair(padding, "padding", allow_zero=True)
        self.dilation = _pair(dilation, "dilation")
        self._setup(
            input_channels, output_channels, self.kernel_size, groups, weights_distribution, bias_distribution,
            use_bias, rngs,
        )

    def _apply(self, x, w, b):
        return self._conv2d(x, w, b, self.stride, self.padding, self.dilation)

    def __call__(self, inputs: jax.Array) -> jax.Array:
        """Args: inputs ``[B, input_channels, H, W]``. Returns ``[B, output_channels, H', W']``."""
        if inputs.ndim != 4 or inputs.shape[1] != self.input_channels:
            raise ValueError(
                f"Conv2d expects `inputs` of shape [batch, {self.input_channels}, height, width], got "
                f"{tuple(inputs.shape)}"
            )
        w = self._draw(self.weights_distribution, self.weights)
        b = self._draw(self.bias_distribution, self.bias) if self.use_bias else None
        return fold_samples(self._apply, jnp.asarray(inputs), [w, b], [4, 1])
