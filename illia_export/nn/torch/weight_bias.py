"""`WeightBiasLayer`: sampling, freezing and KL of layers with one weight and one bias distribution.

Linear and the convolutions share this; they differ only in how the sampled weights are applied.
"""


import torch

from illia_export.distributions.torch import GaussianDistribution
from illia_export.nn.torch.module import BayesianModule, check_distribution_shape


class WeightBiasLayer(BayesianModule):
    """A Bayesian layer with ``weights_distribution`` and ``bias_distribution``."""

    def _init_distributions(
        self,
        weights_shape: list[int],
        bias_shape: list[int],
        weights_distribution: GaussianDistribution | None,
        bias_distribution: GaussianDistribution | None,
    ) -> None:
        self.weights_distribution = weights_distribution or GaussianDistribution(tuple(weights_shape))
        self.bias_distribution = bias_distribution or GaussianDistribution(tuple(bias_shape))
        check_distribution_shape("weights_distribution", self.weights_distribution, list(weights_shape))
        check_distribution_shape("bias_distribution", self.bias_distribution, list(bias_shape))
        self.weights = self.weights_distribution.sample().detach()
        self.bias = self.bias_distribution.sample().detach()

    def _weights_and_bias(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The weights and bias of this forward: stored (frozen), injected, or freshly drawn."""
        injected = self.weights_distribution.use_noise
        if self.frozen and not injected:
            return self.weights, self.bias
        w = self.weights_distribution.sample()
        b = self.bias_distribution.sample()
        if not injected:
            # Injected noise leaves the stored sample alone (see BayesianModule).
            self.weights = w
            self.bias = b
        return w, b

    @torch.jit.export
    def freeze(self) -> None:
        """Fix the stored sample (detached from autograd): later forwards are deterministic."""
        self.frozen = True
        self.weights = self.weights.detach()
        self.bias = self.bias.detach()

    @torch.jit.export
    def kl_cost(self) -> tuple[torch.Tensor, int]:
        log_probs = self.weights_distribution.log_prob(self.weights) + self.bias_distribution.log_prob(self.bias)
        num_params = self.weights_distribution.num_params() + self.bias_distribution.num_params()
        return log_probs, num_params
