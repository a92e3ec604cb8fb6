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
