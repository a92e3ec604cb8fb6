"""Bayesian Flax-NNX layers with the illia API (JAX backend).

Every Bayesian layer draws ``w = mu + softplus(rho) * eps`` from its
:class:`~illia_export.distributions.jax.GaussianDistribution`\\ s on each call (unless frozen);
exporters inject ``eps`` instead (see ``docs/jax.md``). Layouts follow the seed and PyTorch:
``Linear`` weights ``[out, in]``, convolutions ``NCHW`` inputs with ``OIHW`` kernels.
"""

from illia_export.nn.jax.batch_ensemble import BatchEnsembleLinear
from illia_export.nn.jax.conv import Conv1d, Conv2d, conv2d_im2col
from illia_export.nn.jax.embedding import Embedding, embedding_lookup
from illia_export.nn.jax.linear import Linear
from illia_export.nn.jax.lstm import LSTM
from illia_export.nn.jax.module import (
    BayesianModule,
    SampledWeights,
    bayesian_modules,
    fold_samples,
    freeze,
    portable_ops,
    unfreeze,
)

__all__ = [
    "BatchEnsembleLinear",
    "BayesianModule",
    "Conv1d",
    "Conv2d",
    "Embedding",
    "LSTM",
    "Linear",
    "SampledWeights",
    "bayesian_modules",
    "conv2d_im2col",
    "embedding_lookup",
    "fold_samples",
    "freeze",
    "portable_ops",
    "unfreeze",
]
