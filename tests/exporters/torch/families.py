"""Builders of the foreign families' parity cases, keyed by the case names the registry declares.

One builder per model a user of each library would write; the registry
(``illia_export/exporters/torch/registry.py``) says which family each case belongs to, its
formats, sample modes and whether it is exported with ``mc_dropout=True``. Libraries that do not install with the
pinned torch are imported without their package ``__init__`` (probly 0.3 imports torchvision
there, torch-uncertainty imports lightning): only their layer modules are loaded, which is all a
model needs. A case whose library is missing is skipped with the reason.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
import types
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from torch import nn
from torch.nn import functional as F


def import_layers(package: str, module: str):
    """Import ``package.module`` without running ``package/__init__.py`` (and its heavy imports)."""
    if package not in sys.modules or not hasattr(sys.modules[package], "__path__"):
        spec = importlib.util.find_spec(package)
        if spec is None or not spec.submodule_search_locations:
            pytest.skip(f"{package} is not installed (pip install 'illia-export[foreign]')")
        stub = types.ModuleType(package)
        stub.__path__ = list(spec.submodule_search_locations)
        sys.modules[package] = stub
    parts = module.split(".")
    for i in range(1, len(parts)):  # intermediate packages as bare namespaces too
        name = ".".join([package, *parts[:i]])
        if name not in sys.modules:
            stub = types.ModuleType(name)
            stub.__path__ = [str(Path(sys.modules[package].__path__[0], *parts[:i]))]
            sys.modules[name] = stub
    return importlib.import_module(f"{package}.{module}")


def _require(module: str):
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        pytest.skip(f"{module} is not installed ({exc}); pip install 'illia-export[foreign]'")


def _mlp() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(6, 12), nn.ReLU(), nn.Linear(12, 3))


def _cnn() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 3, 3), nn.ReLU(), nn.Flatten(), nn.Linear(3 * 4 * 4, 3))


def _x(*shape: int) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(1))


# ------------------------------------------------------------------------------ bayesian-torch
def _bt_convert(kind: str, base: nn.Module) -> nn.Module:
    _require("bayesian_torch")
    from bayesian_torch.models.dnn_to_bnn import dnn_to_bnn

    prior = {
        "prior_mu": 0.0,
        "prior_sigma": 1.0,
        "posterior_mu_init": 0.0,
        "posterior_rho_init": -2.0,
        "type": kind,
        "moped_enable": False,
    }
    dnn_to_bnn(base, prior)
    return base


class _BTHand(nn.Module):
    """Hand-built bayesian-torch layers, which return ``(out, kl)``."""

    def __init__(self, conv: bool) -> None:
        super().__init__()
        layers = _require("bayesian_torch.layers")
        self.conv = layers.Conv2dReparameterization(1, 3, 3, posterior_rho_init=-2.0) if conv else None
        self.fc = layers.LinearReparameterization(3 * 4 * 4 if conv else 6, 3, posterior_rho_init=-2.0)

    def forward(self, x):
        if self.conv is not None:
            x, _ = self.conv(x)
            x = torch.relu(x).flatten(1)
        out, _kl = self.fc(x)
        return out


def bt_reparam():
    return _bt_convert("Reparameterization", _mlp()), _x(4, 6)


def bt_flipout():
    return _bt_convert("Flipout", _cnn()), _x(4, 1, 6, 6)


def bt_hand_linear():
    torch.manual_seed(0)
    return _BTHand(conv=False), _x(4, 6)


def bt_hand_conv():
    torch.manual_seed(0)
    return _BTHand(conv=True), _x(4, 1, 6, 6)


# ------------------------------------------------------------------------------------- blitz
def blitz_mlp():
    modules = _require("blitz.modules")
    utils = _require("blitz.utils")

    @utils.variational_estimator
    class BlitzMLP(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc1 = modules.BayesianLinear(6, 12, posterior_rho_init=-2.0)
            self.fc2 = modules.BayesianLinear(12, 3, posterior_rho_init=-2.0)

        def forward(self, x):
            return self.fc2(torch.relu(self.fc1(x)))

    torch.manual_seed(0)
    return BlitzMLP(), _x(4, 6)


# ------------------------------------------------------------------------------------ torchbnn
def torchbnn_mlp():
    bnn = _require("torchbnn")
    torch.manual_seed(0)
    model = nn.Sequential(
        bnn.BayesLinear(prior_mu=0, prior_sigma=0.1, in_features=6, out_features=12),
        nn.ReLU(),
        bnn.BayesLinear(prior_mu=0, prior_sigma=0.1, in_features=12, out_features=3),
    )
    return model, _x(4, 6)


def torchbnn_cnn():
    bnn = _require("torchbnn")
    torch.manual_seed(0)
    model = nn.Sequential(
        bnn.BayesConv2d(prior_mu=0, prior_sigma=0.1, in_channels=1, out_channels=3, kernel_size=3),
        nn.ReLU(),
        nn.Flatten(),
        bnn.BayesLinear(prior_mu=0, prior_sigma=0.1, in_features=3 * 4 * 4, out_features=3),
    )
    return model, _x(4, 1, 6, 6)


# ----------------------------------------------------------------------------- torch-uncertainty
def tu_linear():
    bayes = import_layers("torch_uncertainty", "layers.bayesian")
    torch.manual_seed(0)
    model = nn.Sequential(
        bayes.BayesLinear(6, 12, sigma_init=-2.0), nn.ReLU(), bayes.BayesLinear(12, 3, sigma_init=-2.0)
    )
    return model, _x(4, 6)


def tu_conv():
    bayes = import_layers("torch_uncertainty", "layers.bayesian")
    torch.manual_seed(0)
    model = nn.Sequential(
        bayes.BayesConv2d(1, 3, 3, sigma_init=-2.0),
        nn.ReLU(),
        nn.Flatten(),
        bayes.BayesLinear(48, 3, sigma_init=-2.0),
    )
    return model, _x(4, 1, 6, 6)


def tu_mc_dropout():
    _require("einops")
    methods = import_layers("torch_uncertainty", "methods.mc_dropout")
    torch.manual_seed(0)
    core = nn.Sequential(nn.Linear(6, 12), nn.ReLU(), nn.Dropout(0.3), nn.Linear(12, 3))
    model = methods.mc_dropout(core, num_estimators=4, last_layer=False, on_batch=True)
    return model, _x(4, 6)


# ----------------------------------------------------------------------------------- probly 0.3
def probly_bayesian():
    rep = import_layers("probly", "representation.bayesian")
    torch.manual_seed(0)
    return rep.Bayesian(_mlp(), posterior_std=0.05), _x(4, 6)


def probly_dropout():
    rep = import_layers("probly", "representation.dropout")
    torch.manual_seed(0)
    return rep.Dropout(_mlp(), p=0.3), _x(4, 6)


def probly_dropconnect():
    rep = import_layers("probly", "representation.dropconnect")
    torch.manual_seed(0)
    return rep.DropConnect(_mlp(), p=0.3), _x(4, 6)


# ------------------------------------------------------------------------------ plain MC dropout
class FunctionalDropout(nn.Module):
    """Dropout the model keeps on by itself: ``F.dropout(training=True)``."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.fc1, self.fc2 = nn.Linear(6, 12), nn.Linear(12, 3)

    def forward(self, x):
        return self.fc2(F.dropout(torch.relu(self.fc1(x)), 0.3, training=True))


def dropout_module():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(6, 12), nn.ReLU(), nn.Dropout(0.3), nn.Linear(12, 3)), _x(4, 6)


def dropout_functional():
    return FunctionalDropout(), _x(4, 6)


#: case name (a registry ParityCase) -> builder of (model, example input).
BUILDERS: dict[str, Callable[[], tuple[nn.Module, torch.Tensor]]] = {
    "bt_reparam": bt_reparam,
    "bt_flipout": bt_flipout,
    "bt_hand_linear": bt_hand_linear,
    "bt_hand_conv": bt_hand_conv,
    "blitz": blitz_mlp,
    "torchbnn_mlp": torchbnn_mlp,
    "torchbnn_cnn": torchbnn_cnn,
    "tu_linear": tu_linear,
    "tu_conv": tu_conv,
    "tu_mc_dropout": tu_mc_dropout,
    "probly_bayesian": probly_bayesian,
    "probly_dropout": probly_dropout,
    "probly_dropconnect": probly_dropconnect,
    "dropout_module": dropout_module,
    "dropout_functional": dropout_functional,
}
