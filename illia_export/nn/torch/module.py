"""`BayesianModule`: the base of every Bayesian PyTorch layer.

Sampled weights are kept as plain tensor attributes (not buffers), so ``state_dict()`` holds only
the distributions' ``mu``/``rho`` and prior buffers (no sample) and ``copy.deepcopy`` works after a training step (the seed
stored autograd-carrying samples in buffers, which broke both).
"""

import contextlib
import contextvars
import copy
from typing import Any

import torch
from torch import nn

_SAMPLE_BLOCKS: contextvars.ContextVar[Any] = contextvars.ContextVar("illia_sample_blocks", default=1)


@contextlib.contextmanager
def sample_blocks(num_samples: Any):
    """While a vectorized graph is captured: the batch holds `num_samples` sample-major blocks.

    Layers that mix rows of the batch (BatchEnsembleLinear) read it to keep each sample's block
    apart; elsewhere the batch is one block.
    """
    token = _SAMPLE_BLOCKS.set(num_samples)
    try:
        yield
    finally:
        _SAMPLE_BLOCKS.reset(token)


@torch.jit.unused
def current_sample_blocks() -> Any:
    """The number of sample blocks in the batch (1 outside a vectorized capture)."""
    return _SAMPLE_BLOCKS.get()


@torch.jit.unused
def is_exporting() -> bool:
    """True while torch.export traces the model (never called from TorchScript)."""
    return torch.compiler.is_exporting()


class BayesianModule(nn.Module):
    """Base class: a frozen flag, ``freeze``/``unfreeze``, and ``kl_cost`` (TorchScript-exported).

    Frozen layers reuse their stored sample (deterministic outputs) and never resample; unfrozen
    layers draw new weights on every forward and store them (for ``kl_cost`` and a later
    ``freeze``). Injected noise (see :meth:`GaussianDistribution.set_noise`) always takes
    precedence over the frozen state, and leaves the stored sample untouched: an exported graph
    evaluated with S noise draws does not replace a frozen layer's weights, nor leave a stored
    sample with a sample axis behind.
    """

    frozen: bool

    def __init__(self) -> None:
        super().__init__()
        self.frozen = False

    @torch.jit.export
    def freeze(self) -> None:
        """Fix the current sampled weights: later forwards are deterministic.

        Layers override this to also detach the stored sample from autograd.
        """
        self.frozen = True

    @torch.jit.export
    def unfreeze(self) -> None:
        """Draw new weights on every forward again."""
        self.frozen = False

    @torch.jit.export
    def kl_cost(self) -> tuple[torch.Tensor, int]:
        """``(sum log q(w) - sum log p(w), num_params)`` at the stored sample (last fresh draw)."""
        raise NotImplementedError("kl_cost is implemented by each Bayesian layer")

    @torch.jit.unused
    def __deepcopy__(self, memo: dict) -> "BayesianModule":
        # Sampled weights carry autograd history; copy them detached (like a fresh sample).
        cls = self.__class__
        new = cls.__new__(cls)
        memo[id(self)] = new
        for key, value in self.__dict__.items():
            if isinstance(value, torch.Tensor) and not isinstance(value, nn.Parameter):
                value = value.detach()
            new.__dict__[key] = copy.deepcopy(value, memo)
        return new


def freeze(model: nn.Module) -> nn.Module:
    """Freeze every Bayesian layer of `model` (in place) and return it."""
    for module in model.modules():
        if isinstance(module, BayesianModule):
            module.freeze()
    return model


def unfreeze(model: nn.Module) -> nn.Module:
    """Unfreeze every Bayesian layer of `model` (in place) and return it."""
    for module in model.modules():
        if isinstance(module, BayesianModule):
            module.unfreeze()
    return model


def check_distribution_shape(name: str, distribution: Any, expected: list[int]) -> None:
    """Raise ValueError when a user-given distribution does not have the layer's shape."""
    if list(distribution.shape) != list(expected):
        raise ValueError(f"`{name}` has shape {list(distribution.shape)}, expected {list(expected)}")


def check_positive(**values: Any) -> None:
    """Raise ValueError naming the first argument that is not a positive integer."""
    for name, value in values.items():
        items = value if isinstance(value, (tuple, list)) else (value,)
        if not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in items):
            raise ValueError(f"`{name}` (={value!r}) must be a positive integer")
