"""Bayesian PyTorch layers with the illia API; scriptable, traceable and exportable.

Every layer draws ``w = mu + softplus(rho) * eps`` from its ``GaussianDistribution``\\ s on each
forward (unless frozen); exporters inject ``eps`` instead, see ``docs/architecture.md``.
"""

from illia_export.nn.torch.batch_ensemble import BatchEnsembleLinear
from illia_export.nn.torch.conv import Conv1d, Conv2d
from illia_export.nn.torch.embedding import Embedding
from illia_export.nn.torch.linear import Linear
from illia_export.nn.torch.lstm import LSTM
from illia_export.nn.torch.module import BayesianModule, freeze, unfreeze

__all__ = [
    "BatchEnsembleLinear",
    "BayesianModule",
    "Conv1d",
    "Conv2d",
    "Embedding",
    "LSTM",
    "Linear",
    "freeze",
    "unfreeze",
]
