"""`WeightBiasLayer`: the distributions and sampled values of layers with a weight and an optional bias.

Linear and the convolutions share this; they differ only in how the sampled weights are applied.
"""

from __future__ import annotations

from flax import nnx

from illia_export.distributions.jax import GaussianDistribution
from illia_export.nn.jax.module import BayesianModule, SampledWeights


class WeightBiasLayer(BayesianModule):
    """A Bayesian layer with ``weights_distribution`` and, when ``use_bias``, ``bias_distribution``."""

    def _init_weight_bias(
        self,
        weights_shape: tuple[int, ...],
        bias_shape: tuple[int, ...],
        weights_distribution: GaussianDistribution | None,
        bias_distribution: GaussianDistribution | None,
        use_bias: bool,
        rngs: nnx.Rngs,
    ) -> None:
        self.use_bias = bool(use_bias)
        self.rngs = rngs
        self.weights_distribution = weights_distribution or GaussianDistribution(weights_shape, rngs=rngs)
        if tuple(self.weights_distribution.shape) != weights_shape:
            raise ValueError(
                f"`weights_distribution` has shape {self.weights_distribution.shape}, expected {weights_shape}"
            )
        self.weights = SampledWeights(self.weights_distribution.sample())
        if self.use_bias:
            self.bias_distribution = bias_distribution or GaussianDistribution(bias_shape, rngs=rngs)
            if tuple(self.bias_distribution.shape) != bias_shape:
                raise ValueError(
                    f"`bias_distribution` has shape {self.bias_distribution.shape}, expected {bias_shape}"
                )
            self.bias = SampledWeights(self.bias_distribution.sample())
        else:
            self.bias_distribution = nnx.data(None)
            self.bias = nnx.data(None)

    def _distribution_pairs(self):
        pairs = [(self.weights_distribution, self.weights)]
        if self.use_bias:
            pairs.append((self.bias_distribution, self.bias))
        return pairs
