"""Bayesian 1-D and 2-D convolutions (illia's ``Conv1d``/``Conv2d``).

Without a sample axis they call ``F.conv1d``/``F.conv2d``. With injected noise of shape
``[S, *weight_shape]`` the input holds S sample-major blocks of the batch, and the convolution
runs as im2col (``F.unfold``) + one batched matmul: exact, exportable to ONNX with a dynamic
sample axis (ONNX ``Conv`` needs a static group count, which rules out the grouped-conv trick).
"""

from typing import Any

import torch
import torch.nn.functional as F

from illia_export.distributions.torch import GaussianDistribution
from illia_export.nn.torch.module import check_positive
from illia_export.nn.torch.weight_bias import WeightBiasLayer

IntOrPair = int | tuple[int, int]


def _pair(value: IntOrPair, name: str, allow_zero: bool = False) -> list[int]:
    items = list(value) if isinstance(value, (tuple, list)) else [value, value]
    ok = len(items) == 2 and all(isinstance(v, int) and not isinstance(v, bool) for v in items)
    if not ok or any(v < 0 or (v == 0 and not allow_zero) for v in items):
        kind = "non-negative" if allow_zero else "positive"
        raise ValueError(f"`{name}` (={value!r}) must be a {kind} integer or a pair of them")
    return items


def conv2d_sampled(
    inputs: torch.Tensor,
    weights: torch.Tensor,
    bias: torch.Tensor,
    kernel_size: list[int],
    stride: list[int],
    padding: list[int],
    dilation: list[int],
    groups: int,
) -> torch.Tensor:
    """2-D convolution with one weight set per sample block.

    Args:
        inputs: ``[S*B, C, H, W]``, sample-major.
        weights: ``[S, O, C/groups, kh, kw]``.
        bias: ``[S, O]``.

    Returns:
        ``[S*B, O, H', W']``.
    """
    num_samples = weights.size(0)
    out_channels = weights.size(1)
    height = inputs.size(2)
    width = inputs.size(3)
    out_h = (height + 2 * padding[0] - dilation[0] * (kernel_size[0] - 1) - 1) // stride[0] + 1
    out_w = (width + 2 * padding[1] - dilation[1] * (kernel_size[1] - 1) - 1) // stride[1] + 1
    # [S*B, L, C*kh*kw]: positions before channels, so that folding S*B*L into one axis needs no
    # copy of a permuted tensor (which torch.export would guard on the batch being != 1)
    cols = F.unfold(inputs, kernel_size, dilation, padding, stride).transpose(1, 2)
    positions = cols.size(1)
    w = weights.reshape([num_samples, out_channels, -1])
    if groups > 1:
        # block-diagonal dense weights [S, O, C*kh*kw]: one batched product, no slicing of the
        # strided columns (which torch.export would guard on the sample count being != 1)
        group_out = out_channels // groups
        w = weights.reshape([num_samples, groups, group_out, 1, -1])
        eye = torch.eye(groups, dtype=weights.dtype, device=weights.device).reshape([1, groups, 1, groups, 1])
        w = (w * eye).reshape([num_samples, out_channels, -1])
    c = cols.reshape([num_samples, -1, cols.size(2)])  # [S, B*L, C*kh*kw]
    out = torch.baddbmm(bias.unsqueeze(1), c, w.transpose(1, 2))  # [S, B*L, O]
    out = out.reshape([-1, positions, out_channels]).transpose(1, 2)
    return out.reshape([-1, out_channels, out_h, out_w])


class _ConvNd(WeightBiasLayer):
    """Shared constructor and sampling of the Bayesian convolutions."""

    def _setup(
        self,
        input_channels: int,
        output_channels: int,
        kernel: list[int],
        groups: int,
        weights_distribution: GaussianDistribution | None,
        bias_distribution: GaussianDistribution | None,
    ) -> None:
        check_positive(input_channels=input_channels, output_channels=output_channels, groups=groups)
        if input_channels % groups or output_channels % groups:
            raise ValueError(
                f"`groups` (={groups}) must divide both `input_channels` (={input_channels}) and "
                f"`output_channels` (={output_channels})"
            )
        self.input_channels = input_channels
        self.output_channels = output_channels
        self.groups = groups
        shape = [output_channels, input_channels // groups, *kernel]
        self._init_distributions(shape, [output_channels], weights_distribution, bias_distribution)


class Conv1d(_ConvNd):
    """Bayesian ``Conv1d``: input ``[B, input_channels, L]`` -> ``[B, output_channels, L']``."""

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
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        check_positive(kernel_size=kernel_size, stride=stride, dilation=dilation)
        if not isinstance(padding, int) or padding < 0:
            raise ValueError(f"`padding` (={padding!r}) must be a non-negative integer")
        self.kernel_size = kernel_size
        self.stride = stride
        self.padding = padding
        self.dilation = dilation
        self._setup(input_channels, output_channels, [kernel_size], groups, weights_distribution, bias_distribution)

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        if inputs.dim() != 3 or inputs.size(1) != self.input_channels:
            raise ValueError(
                "Conv1d expects inputs of shape [batch, " + str(self.input_channels) + ", length], got "
                + str(inputs.shape)
            )
        w, b = self._weights_and_bias()
        if w.dim() == 3:
            return F.conv1d(inputs, w, b, self.stride, self.padding, self.dilation, self.groups)
        out = conv2d_sampled(
            inputs.unsqueeze(2),
            w.unsqueeze(3),
            b,
            [1, self.kernel_size],
            [1, self.stride],
            [0, self.padding],
            [1, self.dilation],
            self.groups,
        )
        return out.squeeze(2)


class Conv2d(_ConvNd):
    """Bayesian ``Conv2d``: input ``[B, input_channels, H, W]`` -> ``[B, output_channels, H', W']``."""

    def __init__(
        self,
        input_channels: int,
        output_channels: int,
        kernel_size: IntOrPair,
        stride: IntOrPair = 1,
        padding: IntOrPair = 0,
        dilation: IntOrPair = 1,
        groups: int = 1,
        weights_distribution: GaussianDistribution | None = None,
        bias_distribution: GaussianDistribution | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.kernel_size = _pair(kernel_size, "kernel_size")
        self.stride = _pair(stride, "stride")
        self.padding = _pair(padding, "padding", allow_zero=True)
        self.dilation = _pair(dilation, "dilation")
        self._setup(input_channels, output_channels, self.kernel_size, groups, weights_distribution, bias_distribution)

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        if inputs.dim() != 4 or inputs.size(1) != self.input_channels:
            raise ValueError(
                "Conv2d expects inputs of shape [batch, " + str(self.input_channels) + ", height, width], got "
                + str(inputs.shape)
            )
        w, b = self._weights_and_bias()
        if w.dim() == 4:
            return F.conv2d(inputs, w, b, self.stride, self.padding, self.dilation, self.groups)
        return conv2d_sampled(inputs, w, b, self.kernel_size, self.stride, self.padding, self.dilation, self.groups)
