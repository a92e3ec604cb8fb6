"""KL divergence and ELBO losses for Bayesian PyTorch models (illia's ``losses.torch``).

Both follow the seed API (names, constructor arguments, defaults) with two defects fixed:

* :class:`KLDivergenceLoss` divides the summed KL by the *global* parameter count of all Bayesian
  layers (the seed divided by the count of the last layer it visited).
* :class:`ELBOLoss` is a real Monte Carlo estimate: it runs the model ``num_samples`` times, each
  forward drawing fresh weights, instead of adding the loss of one fixed output
  ``num_samples`` times. It therefore takes the model *inputs*, not its outputs:
  ``elbo(inputs, targets, model)``.

Example:
    >>> import torch
    >>> from illia_export.nn.torch import Linear
    >>> from illia_export.losses.torch import ELBOLoss
    >>> model = torch.nn.Sequential(Linear(4, 8), torch.nn.ReLU(), Linear(8, 3))
    >>> elbo = ELBOLoss(torch.nn.functional.cross_entropy, num_samples=2, kl_weight=1e-2)
    >>> loss = elbo(torch.randn(5, 4), torch.tensor([0, 1, 2, 0, 1]), model)
    >>> loss.backward()
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from illia_export.nn.torch.module import BayesianModule

__all__ = ["ELBOLoss", "KLDivergenceLoss", "bayesian_modules"]

_REDUCTIONS = ("mean",)


def _is_bayesian(module: nn.Module) -> bool:
    if isinstance(module, BayesianModule):
        return True
    # A scripted (or loaded) model: its submodules are RecursiveScriptModules that keep the
    # exported `kl_cost`/`freeze` methods but lose their Python class.
    return (
        isinstance(module, torch.jit.ScriptModule)
        and hasattr(module, "kl_cost")
        and hasattr(module, "frozen")
    )


def bayesian_modules(model: nn.Module) -> list[nn.Module]:
    """The Bayesian layers of `model` (itself included), eager or TorchScript, in `modules()` order."""
    return [m for m in model.modules() if _is_bayesian(m)]


def _check_reduction(reduction: str) -> str:
    if reduction not in _REDUCTIONS:
        raise ValueError(f"`reduction` (={reduction!r}) must be one of {list(_REDUCTIONS)}")
    return reduction


def _check_weight(name: str, value: float) -> float:
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or not math.isfinite(value)
        or value < 0
    ):
        raise ValueError(f"`{name}` (={value!r}) must be a finite non-negative number")
    return float(value)


class KLDivergenceLoss(nn.Module):
    """KL divergence of all Bayesian layers of a model, per parameter, times `weight`.

    For every Bayesian layer ``m`` of the model, ``m.kl_cost()`` returns
    ``(sum log q(w) - sum log p(w), num_params)`` at the weights ``w`` sampled by its last
    forward (a one-sample Monte Carlo estimate of ``KL(q || p)``). The loss is::

        weight * sum_m kl_m / sum_m num_params_m

    (``reduction="mean"``: the mean over *all* parameters of the model; the seed divided by the
    last layer's count instead). Layers are found with ``model.modules()``, so nested layers count
    once each, and scripted/loaded TorchScript models work too. A model without Bayesian layers
    has zero KL.

    Args:
        reduction: only ``"mean"`` (per-parameter average) is supported.
        weight: non-negative factor applied to the result.
    """

    def __init__(self, reduction: str = "mean", weight: float = 1.0, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.reduction = _check_reduction(reduction)
        self.weight = _check_weight("weight", weight)

    def forward(self, model: nn.Module) -> torch.Tensor:
        """KL term of `model` at its current sampled weights.

        Args:
            model: a module containing Bayesian layers (eager or TorchScript).

        Returns:
            A scalar tensor (shape ``[]``), differentiable w.r.t. every ``mu`` and ``rho``.
        """
        total: torch.Tensor | None = None
        num_params = 0
        for module in bayesian_modules(model):
            kl, count = module.kl_cost()
            total = kl if total is None else total + kl
            num_params += int(count)
        if total is None or num_params == 0:
            first = next(iter(model.parameters()), None)
            device = first.device if first is not None else None
            return torch.zeros((), device=device)
        return total / num_params * self.weight

    def extra_repr(self) -> str:
        return f"reduction={self.reduction!r}, weight={self.weight}"


class ELBOLoss(nn.Module):
    """Negative ELBO estimated by Monte Carlo over `num_samples` weight samples.

    ``elbo(inputs, targets, model)`` runs ``outputs_k = model(inputs)`` ``num_samples`` times; every
    forward of an unfrozen Bayesian layer draws fresh weights, and the KL of each draw is read
    right after it. The result is::

        1/K * sum_k [ loss_function(outputs_k, targets) + kl_weight * KL_mean(model after draw k) ]

    where ``KL_mean`` is :class:`KLDivergenceLoss` (KL summed over all Bayesian layers divided by
    their total parameter count). For a per-example ELBO on a training set of ``N`` examples with
    a mean-reduced ``loss_function``, use ``kl_weight = total_num_params / N``.

    A frozen model yields the same outputs for every draw (no Monte Carlo). With noise injected
    (``set_noise``), the draws reuse the injected noise.

    Args:
        loss_function: ``loss_function(outputs, targets) -> scalar tensor``; it receives the
            model output exactly as returned (for the LSTM that is ``(y, (h, c))``).
        num_samples: number K of Monte Carlo draws (positive integer).
        kl_weight: non-negative factor of the KL term.
    """

    def __init__(
        self,
        loss_function: Callable[[Any, torch.Tensor], torch.Tensor],
        num_samples: int = 1,
        kl_weight: float = 1e-3,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if not callable(loss_function):
            raise TypeError(f"`loss_function` must be callable, got {type(loss_function).__name__}")
        if isinstance(num_samples, bool) or not isinstance(num_samples, int) or num_samples <= 0:
            raise ValueError(f"`num_samples` (={num_samples!r}) must be a positive integer")
        self.loss_function = loss_function
        self.num_samples = num_samples
        self.kl_weight = _check_weight("kl_weight", kl_weight)
        self.kl_loss = KLDivergenceLoss(weight=self.kl_weight)

    def forward(self, inputs: Any, targets: torch.Tensor, model: nn.Module) -> torch.Tensor:
        """Monte Carlo negative ELBO.

        Args:
            inputs: the model input (e.g. ``[B, features]``), passed as ``model(inputs)``; a
                tuple is unpacked as positional arguments (``model(*inputs)``).
            targets: the targets handed to `loss_function` (e.g. class indices ``[B]``).
            model: the Bayesian model (eager or TorchScript).

        Returns:
            A scalar tensor (shape ``[]``), the average over the draws.
        """
        total: torch.Tensor | None = None
        for _ in range(self.num_samples):
            outputs = model(*inputs) if isinstance(inputs, tuple) else model(inputs)
            value = self.loss_function(outputs, targets) + self.kl_loss(model)
            total = value if total is None else total + value
        assert total is not None  # num_samples >= 1
        return total / self.num_samples

    def extra_repr(self) -> str:
        return f"num_samples={self.num_samples}, kl_weight={self.kl_weight}"
