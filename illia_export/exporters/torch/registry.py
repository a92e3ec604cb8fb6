"""The one place that maps each PyTorch Bayesian layer to its noise.

Works on eager modules and on TorchScript modules (scripted, traced or loaded from an archive),
where layers are recognised by their original class name.
"""

from __future__ import annotations

from dataclasses import dataclass

from illia_export.errors import ExportError

#: Bayesian layer class -> attribute names of its GaussianDistributions (noise order).
LAYER_NOISE: dict[str, tuple[str, ...]] = {
    "Linear": ("weights_distribution", "bias_distribution"),
    "Conv1d": ("weights_distribution", "bias_distribution"),
    "Conv2d": ("weights_distribution", "bias_distribution"),
    "Embedding": ("weights_distribution",),
    "LSTM": (
        "wf_distribution",
        "bf_distribution",
        "wi_distribution",
        "bi_distribution",
        "wc_distribution",
        "bc_distribution",
        "wo_distribution",
        "bo_distribution",
        "wv_distribution",
        "bv_distribution",
    ),
}
#: Layers of this package that are exportable but carry no weight noise.
NOISELESS_LAYERS = ("BatchEnsembleLinear",)
#: Layers that mix rows of the batch, which the folded sample axis would break.
BATCH_MIXING_LAYERS = ("BatchEnsembleLinear",)
DISTRIBUTION_CLASS = "GaussianDistribution"
_OUR_PACKAGE = "illia_export.nn.torch"


def class_name(module) -> str:
    """The class name of an eager module, or the original one of a TorchScript module."""
    name = getattr(module, "original_name", None)
    return name if isinstance(name, str) else type(module).__name__


def _is_ours(module) -> bool:
    if hasattr(module, "original_name") and hasattr(module, "_c"):
        qualified = module._c._type().qualified_name()  # e.g. __torch__.illia_export.nn.torch.linear.Linear
        return _OUR_PACKAGE in qualified
    return type(module).__module__.startswith(_OUR_PACKAGE)


@dataclass(frozen=True)
class NoiseSite:
    """One distribution whose eps becomes a graph input."""

    layer: str  # dotted path of the owning layer ("" for the root)
    layer_type: str
    parameter: str  # dotted path of the distribution
    shape: tuple[int, ...]


@dataclass(frozen=True)
class LayerSite:
    path: str
    layer_type: str


@dataclass(frozen=True)
class ModelNoise:
    """What an exporter needs to know about a model's Bayesian structure."""

    noise: tuple[NoiseSite, ...]
    layers: tuple[LayerSite, ...]  # every layer of this package, Bayesian or not

    @property
    def bayesian_layers(self) -> tuple[LayerSite, ...]:
        return tuple(site for site in self.layers if site.layer_type in LAYER_NOISE)

    @property
    def linear_only(self) -> bool:
        """True when every Bayesian layer is a Linear (local reparameterization is exact)."""
        kinds = {site.layer_type for site in self.layers}
        return bool(kinds) and kinds == {"Linear"}

    def has(self, layer_type: str) -> bool:
        return any(site.layer_type == layer_type for site in self.layers)


def _join(prefix: str, name: str) -> str:
    return f"{prefix}.{name}" if prefix else name


def discover(model) -> ModelNoise:
    """Find the Bayesian layers and their distributions in `model` (eager or TorchScript).

    Raises:
        ExportError: a GaussianDistribution is owned by a layer this exporter does not know, or
            the model holds no layer of this package at all.
    """
    modules = dict(model.named_modules())
    noise: list[NoiseSite] = []
    layers: list[LayerSite] = []
    claimed: set[str] = set()
    for path, module in modules.items():
        kind = class_name(module)
        if kind in LAYER_NOISE and _is_ours(module):
            layers.append(LayerSite(path, kind))
            for attr in LAYER_NOISE[kind]:
                dist_path = _join(path, attr)
                dist = modules.get(dist_path)
                if dist is None:
                    raise ExportError(f"layer {path or '<root>'!r} ({kind}) has no distribution {attr!r}")
                noise.append(NoiseSite(path, kind, dist_path, tuple(int(d) for d in dist.mu.shape)))
                claimed.add(dist_path)
        elif kind in NOISELESS_LAYERS and _is_ours(module):
            layers.append(LayerSite(path, kind))
    for path, module in modules.items():
        if class_name(module) == DISTRIBUTION_CLASS and path not in claimed:
            owner = path.rpartition(".")[0]
            owner_type = class_name(modules[owner]) if owner in modules else "?"
            raise ExportError(
                f"unsupported Bayesian layer {owner or '<root>'!r} of type {owner_type}: its distribution "
                f"{path!r} is not handled by any exporter rule. Supported layers: "
                f"{', '.join(sorted(LAYER_NOISE) + list(NOISELESS_LAYERS))}"
            )
    if not layers:
        raise ExportError(
            "no Bayesian layers found: the model contains no illia_export.nn.torch layer "
            f"({', '.join(sorted(LAYER_NOISE))}, BatchEnsembleLinear)"
        )
    return ModelNoise(tuple(noise), tuple(layers))


# ----------------------------------------------------------------------------- capture v2 families
@dataclass(frozen=True)
class Family:
    """A family of stochastic layers the torch.export capture knows by name.

    `modules` are qualified class-name prefixes (``module.Class``) of its layers;
    `parameterization` says how the layer turns its parameters and a standard normal ``z`` into
    a weight sample (what the manifest's noise entries of kind ``weight`` replace); `adapter`,
    when set, names the method patched during capture because the library's own sampling
    cannot become a graph input as written (see :func:`family_adapters`); `vectorized` says
    whether ``samples="vectorized"`` works for it (a sampled weight ``[S, ...]`` through
    ``F.linear``/``F.conv``); `cases` is the parity-case builder in
    ``tests/exporters/torch/families.py``.
    """

    name: str
    library: str
    modules: tuple[str, ...]
    parameterization: str
    vectorized: bool = True
    adapter: str | None = None
    notes: str = ""


FAMILIES: tuple[Family, ...] = (
    Family(
        "illia",
        "illia_export",
        ("illia_export.nn.torch.",),
        "w = mu + softplus(rho) * z (GaussianDistribution)",
    ),
    Family(
        "bayesian-torch-reparameterization",
        "bayesian-torch",
        ("bayesian_torch.layers.variational_layers.",),
        "w = mu + log1p(exp(rho)) * z (eps buffer filled with .normal_())",
    ),
    Family(
        "bayesian-torch-flipout",
        "bayesian-torch",
        ("bayesian_torch.layers.flipout_layers.",),
        "out = x mu + ((x * s_in) (log1p(exp(rho)) * z)) * s_out; signs s = sign(U(-1, 1)) per example",
        notes="deployed as Flipout (per-example signs become per-example noise), not as its "
        "reparameterization twin: the artifact then samples exactly what the layer samples",
    ),
    Family(
        "blitz",
        "blitz-bayesian-pytorch",
        ("blitz.modules.",),
        "w = mu + log1p(exp(rho)) * z (TrainableRandomDistribution)",
        adapter="blitz.modules.weight_sampler.TrainableRandomDistribution.sample",
        notes="sample() fills the eps_w buffer in place and reads it back, which would bake one draw into "
        "the graph; the capture draws z with randn_like instead (same distribution)",
    ),
    Family(
        "torchbnn",
        "torchbnn",
        ("torchbnn.modules.",),
        "w = mu + exp(log_sigma) * z",
    ),
    Family(
        "torch-uncertainty",
        "torch-uncertainty",
        ("torch_uncertainty.layers.bayesian.",),
        "w = mu + log1p(exp(sigma)) * z ('sigma' holds rho; TrainableDistribution)",
    ),
    Family(
        "probly",
        "probly",
        ("probly.representation.",),
        "w = mu + log1p(exp(rho)) * z (Bayesian); mask = U > p (DropConnect); dropout masks (Dropout)",
    ),
    Family(
        "dropout",
        "torch",
        ("torch.nn.modules.dropout.",),
        "mask = Phi(z) >= p, scaled by 1 / (1 - p) (nn.Dropout*, F.dropout)",
        notes="sampled when mc_dropout selects the module, or when the model calls F.dropout(training=True)",
    ),
)


def family_of(module) -> Family | None:
    """The family a module belongs to (by its class's qualified name), or None."""
    qualified = f"{type(module).__module__}.{type(module).__name__}"
    for family in FAMILIES:
        if any(qualified.startswith(prefix) for prefix in family.modules):
            return family
    return None


def _blitz_sample(self):
    """blitz's TrainableRandomDistribution.sample with the noise drawn out of place."""
    import torch

    eps = torch.randn_like(self.mu)
    self.sigma = torch.log1p(torch.exp(self.rho))
    self.w = self.mu + self.sigma * eps
    return self.w


_ADAPTERS = {"blitz.modules.weight_sampler.TrainableRandomDistribution.sample": _blitz_sample}


class family_adapters:
    """Context manager: patch, on the model's own instances, the methods a family's adapter names."""

    def __init__(self, model) -> None:
        self.model = model
        self.patched: list = []

    def __enter__(self):
        import types

        for module in self.model.modules():
            qualified = f"{type(module).__module__}.{type(module).__name__}"
            for target, fn in _ADAPTERS.items():
                owner, _, method = target.rpartition(".")
                if qualified == owner:
                    self.patched.append((module, method, module.__dict__.get(method)))
                    setattr(module, method, types.MethodType(fn, module))
        return self

    def __exit__(self, *exc) -> None:
        for module, method, previous in reversed(self.patched):
            if previous is None:
                delattr(module, method)
            else:
                setattr(module, method, previous)
        self.patched.clear()
