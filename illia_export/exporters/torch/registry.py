"""The one registry of PyTorch stochastic layers: which layers exist, what noise each draws, and
which parity cases prove that their export reproduces them.

One table, :data:`FAMILIES`: each family (illia's own layers, each foreign library, plain
dropout) says how its layers sample and names its parity cases; the illia family also lists its
layer classes with the distributions each owns, which are noiseless and which mix batch rows.
The names the exporters use (:data:`LAYER_NOISE`, :data:`NOISELESS_LAYERS`,
:data:`BATCH_MIXING_LAYERS`, :func:`discover`, :func:`family_of`, :func:`family_adapters`) are
derived from that table, so a layer is added in one place.

Parity cases are data, not code: a case names a model builder in the test suite
(``tests/exporters/torch/cases.py`` for illia's layers, ``families.py`` for the others), the
formats it is exported to and the sample modes it is checked in. The parity tests build their
whole matrix from here, and fail when an entry has no case, a case has no builder, a builder
is named by no entry, or a case's model does not hold the layer it is listed under.

Works on eager modules and on TorchScript modules (scripted, traced or loaded from an archive),
where layers are recognised by their original class name.
"""

from __future__ import annotations

from dataclasses import dataclass

from illia_export.errors import ExportError

#: Formats a parity case may be checked in (the torch exporter's formats).
PARITY_FORMATS = ("onnx", "torchscript", "pt2", "aoti")
#: Sample modes a parity case may be checked in.
PARITY_MODES = ("vectorized", "per-call")
#: Formats of the legacy path (illia layers): every format but the slow AOTInductor compile.
_SCRIPTED = ("onnx", "torchscript", "pt2")
#: ... plus AOTInductor, for the few cases compiled in the suite (one compile per mode).
_COMPILED = (*_SCRIPTED, "aoti")
#: Formats of the torch.export capture (foreign layers cannot be scripted).
_CAPTURED = ("onnx", "pt2")


@dataclass(frozen=True)
class ParityCase:
    """One parity case: the builder `name` (a key of the test suite's builders), exported to each
    of `formats` in each of `modes`, and checked against the eager model for the same noise.

    `mc_dropout` exports with ``mc_dropout=True`` (the model's dropout is what is sampled).
    """

    name: str
    formats: tuple[str, ...]
    modes: tuple[str, ...] = PARITY_MODES
    mc_dropout: bool = False

    def __post_init__(self) -> None:
        if not self.name.isidentifier():
            raise ExportError(
                f"parity case name {self.name!r} must be a Python identifier (it keys a builder)"
            )
        for label, given, allowed in (
            ("formats", self.formats, PARITY_FORMATS),
            ("modes", self.modes, PARITY_MODES),
        ):
            unknown = [v for v in given if v not in allowed]
            if not given or unknown or len(set(given)) != len(given):
                raise ExportError(
                    f"parity case {self.name!r}: {label} {given!r} must be distinct values of {allowed} "
                    f"(unknown: {unknown or 'none'}); fix the entry in exporters/torch/registry.py"
                )

    @property
    def matrix(self) -> tuple[tuple[str, str], ...]:
        """Every (format, mode) this case is checked in."""
        return tuple((f, m) for f in self.formats for m in self.modes)


@dataclass(frozen=True)
class Layer:
    """A layer class of ``illia_export.nn.torch`` (recognised by class name, eager or TorchScript).

    `distributions` are the attribute names of its GaussianDistributions in noise order (empty:
    exportable but noiseless); `mixes_batch` marks layers that mix rows of the batch, which the
    folded sample axis would break; `cases` are parity cases whose models hold this layer.
    """

    name: str
    distributions: tuple[str, ...] = ()
    mixes_batch: bool = False
    cases: tuple[ParityCase, ...] = ()


@dataclass(frozen=True)
class Family:
    """A family of stochastic layers the exporters know by name.

    `modules` are qualified class-name prefixes (``module.Class``) of its layers;
    `parameterization` says how the layer turns its parameters and a standard normal ``z`` into
    a weight sample (what the manifest's noise entries of kind ``weight`` replace); `adapter`,
    when set, names the method patched during capture because the library's own sampling
    cannot become a graph input as written (see :func:`family_adapters`); `vectorized` says
    whether ``samples="vectorized"`` works for it (a sampled weight ``[S, ...]`` through
    ``F.linear``/``F.conv``). `layers` lists the family's layer classes where the legacy path
    needs them by name (illia's); `cases` are parity cases of the family as a whole (models
    mixing its layers with ordinary torch modules, or a library's own model wrappers).
    """

    name: str
    library: str
    modules: tuple[str, ...]
    parameterization: str
    vectorized: bool = True
    adapter: str | None = None
    notes: str = ""
    layers: tuple[Layer, ...] = ()
    cases: tuple[ParityCase, ...] = ()

    @property
    def parity_cases(self) -> tuple[tuple[Layer | None, ParityCase], ...]:
        """Every parity case of the family with the layer it is listed under (None: the family)."""
        return tuple((layer, case) for layer in self.layers for case in layer.cases) + tuple(
            (None, case) for case in self.cases
        )


_LSTM_DISTRIBUTIONS = (
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
)
_ILLIA = Family(
    "illia",
    "illia_export",
    ("illia_export.nn.torch.",),
    "w = mu + softplus(rho) * z (GaussianDistribution)",
    layers=(
        Layer(
            "Linear", ("weights_distribution", "bias_distribution"), cases=(ParityCase("linear", _COMPILED),)
        ),
        Layer(
            "Conv1d", ("weights_distribution", "bias_distribution"), cases=(ParityCase("conv1d", _SCRIPTED),)
        ),
        Layer(
            "Conv2d", ("weights_distribution", "bias_distribution"), cases=(ParityCase("conv2d", _COMPILED),)
        ),
        Layer("Embedding", ("weights_distribution",), cases=(ParityCase("embedding", _SCRIPTED),)),
        Layer(
            "LSTM",
            _LSTM_DISTRIBUTIONS,
            cases=(ParityCase("lstm", _COMPILED), ParityCase("lstm_column", _SCRIPTED)),
        ),
        Layer(
            "BatchEnsembleLinear",
            mixes_batch=True,
            cases=(
                ParityCase("batch_ensemble", _SCRIPTED, modes=("per-call",)),
                # the scripted wrapper has no sample blocks: vectorized is refused in torchscript
                ParityCase("batch_ensemble_vec", _CAPTURED, modes=("vectorized",)),
            ),
        ),
    ),
    cases=(  # illia layers among ordinary torch modules
        ParityCase("mixed", _SCRIPTED),
        ParityCase("attention", _SCRIPTED),
        ParityCase("transformer", _SCRIPTED),
        ParityCase("conv1d_relu", _SCRIPTED),
        ParityCase("conv_pool", _SCRIPTED),
    ),
)

FAMILIES: tuple[Family, ...] = (
    _ILLIA,
    Family(
        "bayesian-torch-reparameterization",
        "bayesian-torch",
        ("bayesian_torch.layers.variational_layers.",),
        "w = mu + log1p(exp(rho)) * z (eps buffer filled with .normal_())",
        cases=(
            ParityCase("bt_reparam", _CAPTURED),
            ParityCase("bt_hand_linear", _CAPTURED),
            ParityCase("bt_hand_conv", _CAPTURED),
        ),
    ),
    Family(
        "bayesian-torch-flipout",
        "bayesian-torch",
        ("bayesian_torch.layers.flipout_layers.",),
        "out = x mu + ((x * s_in) (log1p(exp(rho)) * z)) * s_out; signs s = sign(U(-1, 1)) per example",
        notes="deployed as Flipout (per-example signs become per-example noise), not as its "
        "reparameterization twin: the artifact then samples exactly what the layer samples",
        cases=(ParityCase("bt_flipout", _CAPTURED),),
    ),
    Family(
        "blitz",
        "blitz-bayesian-pytorch",
        ("blitz.modules.",),
        "w = mu + log1p(exp(rho)) * z (TrainableRandomDistribution)",
        adapter="blitz.modules.weight_sampler.TrainableRandomDistribution.sample",
        notes="sample() fills the eps_w buffer in place and reads it back, which would bake one draw into "
        "the graph; the capture draws z with randn_like instead (same distribution)",
        cases=(ParityCase("blitz", _CAPTURED),),
    ),
    Family(
        "torchbnn",
        "torchbnn",
        ("torchbnn.modules.",),
        "w = mu + exp(log_sigma) * z",
        cases=(ParityCase("torchbnn_mlp", _CAPTURED), ParityCase("torchbnn_cnn", _CAPTURED)),
    ),
    Family(
        "torch-uncertainty",
        "torch-uncertainty",
        ("torch_uncertainty.layers.bayesian.",),
        "w = mu + log1p(exp(sigma)) * z ('sigma' holds rho; TrainableDistribution)",
        cases=(ParityCase("tu_linear", _CAPTURED), ParityCase("tu_conv", _CAPTURED)),
    ),
    Family(
        "probly",
        "probly",
        ("probly.representation.",),
        "w = mu + log1p(exp(rho)) * z (Bayesian); mask = U > p (DropConnect); dropout masks (Dropout)",
        cases=(
            ParityCase("probly_bayesian", _CAPTURED),
            ParityCase("probly_dropout", _CAPTURED),
            ParityCase("probly_dropconnect", _CAPTURED),
        ),
    ),
    Family(
        "dropout",
        "torch",
        ("torch.nn.modules.dropout.",),
        "mask = Phi(z) >= p, scaled by 1 / (1 - p) (nn.Dropout*, F.dropout)",
        notes="sampled when mc_dropout selects the module, or when the model calls F.dropout(training=True)",
        cases=(
            ParityCase("dropout_module", _CAPTURED, mc_dropout=True),
            ParityCase("dropout_functional", _CAPTURED),
            # torch-uncertainty's mc_dropout wrapper repeats the batch: no sample axis can fold
            ParityCase("tu_mc_dropout", _CAPTURED, modes=("per-call",), mc_dropout=True),
        ),
    ),
)

#: Bayesian layer class -> attribute names of its GaussianDistributions (noise order).
LAYER_NOISE: dict[str, tuple[str, ...]] = {
    layer.name: layer.distributions for layer in _ILLIA.layers if layer.distributions
}
#: Layers of this package that are exportable but carry no weight noise.
NOISELESS_LAYERS: tuple[str, ...] = tuple(layer.name for layer in _ILLIA.layers if not layer.distributions)
#: Layers that mix rows of the batch, which the folded sample axis would break.
BATCH_MIXING_LAYERS: tuple[str, ...] = tuple(layer.name for layer in _ILLIA.layers if layer.mixes_batch)


def parity_cases(family: str | None = None) -> tuple[tuple[Family, Layer | None, ParityCase], ...]:
    """Every parity case of the registry (or of one family) with its family and layer."""
    return tuple(
        (fam, layer, case)
        for fam in FAMILIES
        if family is None or fam.name == family
        for layer, case in fam.parity_cases
    )


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
