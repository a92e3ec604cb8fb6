"""Bayesian fully connected layer (illia's ``Linear``)."""

from typing import Any

import torch
import torch.nn.functional as F

from illia_export.distributions.torch import GaussianDistribution
from illia_export.nn.torch.module import check_positive
from illia_export.nn.torch.weight_bias import WeightBiasLayer


class Linear(WeightBiasLayer):
    """``y = x @ w.T + b`` with ``w ~ q(w)`` of shape ``(output_size, input_size)``.

    Input ``[*, input_size]`` -> output ``[*, output_size]``. With noise injected with a sample
    axis (``[S, out, in]``), the input's first axis holds S sample-major blocks of the batch.

    Local reparameterization (Kingma et al. 2015): after :meth:`set_local_noise` with
    pre-activation noise ``z`` shaped like the output, the layer returns
    ``x @ mu.T + b_mu + sqrt(x**2 @ sigma_w.T**2 + sigma_b**2) * z`` — the exact per-example
    marginal of the output when each weight is used once per example (2-D inputs).
    """

    local_noise: torch.Tensor
    use_local: bool

    def __init__(
        self,
        input_size: int,
        output_size: int,
        weights_distribution: GaussianDistribution | None = None,
        bias_distribution: GaussianDistribution | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        check_positive(input_size=input_size, output_size=output_size)
        self.input_size = input_size
        self.output_size = output_size
        self._init_distributions([output_size, input_size], [output_size], weights_distribution, bias_distribution)
        self.local_noise = torch.zeros(0)
        self.use_local = False

    @torch.jit.export
    def set_local_noise(self, eps: torch.Tensor) -> None:
        """Switch to local reparameterization with pre-activation noise `eps` (output-shaped)."""
        self.local_noise = eps
        self.use_local = True

    @torch.jit.export
    def clear_local_noise(self) -> None:
        """Back to sampling weights."""
        self.local_noise = torch.zeros(0)
        self.use_local = False

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        if inputs.dim() < 1 or inputs.size(-1) != self.input_size:
            raise ValueError(
                "Linear expects inputs of shape [*, " + str(self.input_size) + "], got " + str(inputs.shape)
            )
        if self.use_local:
            w_dist = self.weights_distribution
            b_dist = self.bias_distribution
            mean = F.linear(inputs, w_dist.mu, b_dist.mu)
            var = F.linear(inputs * inputs, w_dist.sigma() ** 2, b_dist.sigma() ** 2)
            return mean + torch.sqrt(var) * self.local_noise.reshape(mean.shape)
        w, b = self._weights_and_bias()
        if w.dim() == 2:
            return F.linear(inputs, w, b)
        # Sample axis: inputs are S sample-major blocks -> one batched matmul.
        num_samples = w.size(0)
        x3 = inputs.reshape([num_samples, -1, self.input_size])
        y = torch.baddbmm(b.unsqueeze(1), x3, w.transpose(1, 2))
        return y.reshape(list(inputs.shape[:-1]) + [self.output_size])
