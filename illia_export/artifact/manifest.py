"""The artifact contract (version 2; version 1 is still read): the manifest every artifact carries.

This module is the single owner of the contract: the dataclasses, their JSON form, the
noise-naming rule, and where the manifest lives in each format. Exporters write manifests
through it; runtimes (Python and C++) and the CLI read them through it.

Length: longer than the usual ~450 lines on purpose: the schema, its JSON checks and the
per-format embedding are one contract that exporters, runtimes and the C++ reader must agree on,
and splitting it would scatter the rules a change has to keep in step.

Semantics: for a given noise value, an artifact's outputs equal the source model's outputs
when each distribution's sample is ``mu + softplus(rho) * eps`` with that ``eps``; zero noise
gives the mean-weight network.
"""

from __future__ import annotations

import json
import math
import os
import re
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from illia_export.errors import ManifestError

CONTRACT_VERSION = 2
#: Contract versions this illia-export reads (version 1 artifacts have no v2 fields).
READABLE_CONTRACTS = (1, 2)
FORMATS = ("onnx", "torchscript", "savedmodel", "tflite", "pt2", "aoti")
SOURCES = ("torch", "torchscript", "jax")
TASKS = ("classification", "regression", "raw")
SAMPLE_DIM = "samples"
BATCH_DIM = "batch"
DISTRIBUTION = "standard_normal"
#: The noise generator new artifacts name (docs/noise.md); recorded so that a seed always reproduces.
#: (A literal: importing it from runtime.noise would make a cycle through the runtime.)
NOISE_GENERATOR = "illia-noise-v2"
#: What a manifest without the field means: artifacts written before it existed used v1.
LEGACY_NOISE_GENERATOR = "illia-noise-v1"
#: What a noise input replaces in the source model (contract v2 ``kind``).
NOISE_KINDS = ("weight", "dropout", "flipout_sign", "draw")
#: How the graph turns the standard-normal input into the draw it replaces (contract v2 ``transform``):
#: ``affine`` mu + sigma * z (weight noise, normal draws), ``uniform`` Phi(z), ``bernoulli``
#: Phi(z) < p, ``dropout`` the mask Phi(z) >= p scaled by 1/(1-p), ``sign`` 2 * (Phi(z) < 0.5) - 1.
NOISE_TRANSFORMS = ("affine", "uniform", "bernoulli", "dropout", "sign")
#: Regression likelihoods and scale parameterizations (contract v2 ``likelihood``).
LIKELIHOODS = ("gaussian", "laplace", "student_t")
SCALE_PARAMETERIZATIONS = ("variance", "log_variance", "std", "softplus_std")
_BATCH_MULTIPLE = re.compile(r"^([1-9][0-9]*)\*batch$")
_NAMED_MULTIPLE = re.compile(r"^(?:([1-9][0-9]{0,8})\*)?([A-Za-z_][A-Za-z0-9_.:-]{0,127})$")

#: Key of the manifest in ONNX ``metadata_props``.
ONNX_METADATA_KEY = "illia_export.manifest"
#: Name of the manifest inside a TorchScript archive (``_extra_files``) and SavedModel assets.
EMBEDDED_NAME = "illia_manifest.json"
#: Suffix of a manifest written beside an artifact (TFLite, or any format on request).
SIDECAR_SUFFIX = ".manifest.json"

Dim = int | str
_NAME_OK = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
#: Element types a manifest may declare (numpy names).
DTYPES = ("float32", "float64", "float16", "bfloat16", "int64", "int32", "int16", "int8", "uint8", "bool")
#: Largest fixed dim a manifest may declare (anything larger is a corrupt manifest).
MAX_DIM = 2**31 - 1
_DIGEST_OK = re.compile(r"^sha256:[0-9a-f]{64}$")
#: Largest embedded manifest read (a corrupt size field must not make us allocate gigabytes).
MAX_MANIFEST_BYTES = 16 << 20
#: Digest schemes this illia-export reads (docs/formats.md, "Integrity digest").
DIGEST_SCHEMES = (1, 2)


def noise_input_name(parameter: str) -> str:
    """The graph-input name of the noise feeding distribution `parameter` (its dotted path).

    ``"fc1.weights_distribution"`` -> ``"eps_fc1_weights_distribution"``. The name is a valid
    identifier in every target (ONNX, TF signatures, TFLite, C++), which is why dots become
    underscores. Exporters must call :func:`check_unique_names` on the full list.
    """
    name = "eps_" + re.sub(r"[^A-Za-z0-9_]", "_", parameter)
    return name


def local_noise_input_name(layer: str) -> str:
    """The graph-input name of the pre-activation noise of Linear layer `layer` (local mode)."""
    return "eps_local_" + re.sub(r"[^A-Za-z0-9_]", "_", layer)


def check_unique_names(names: list[str]) -> None:
    """Raise ManifestError when two inputs/outputs/noise entries would share a name."""
    seen: set[str] = set()
    for name in names:
        if name in seen:
            raise ManifestError(
                f"two graph inputs or outputs are both named {name!r}; rename the model's "
                "submodules so that their dotted paths differ after '.' -> '_'"
            )
        seen.add(name)


def batch_multiple(dim: Dim) -> int | None:
    """``"batch"`` -> 1, ``"4*batch"`` -> 4 (per-example noise of a model that repeats its batch), else None."""
    if dim == BATCH_DIM:
        return 1
    if isinstance(dim, str):
        m = _BATCH_MULTIPLE.match(dim)
        if m:
            return int(m.group(1))
    return None


def dim_factor(dim: Dim) -> tuple[int, str] | None:
    """A named noise dim as ``(k, name)``: ``"seq_len"`` -> ``(1, "seq_len")``, ``"2*seq_len"``
    -> ``(2, "seq_len")``, ``"4*batch"`` -> ``(4, "batch")``; None for integers, ``"samples"``
    and anything else. The size is ``k`` times the named input dim (docs/noise.md)."""
    if not isinstance(dim, str) or dim == SAMPLE_DIM:
        return None
    m = _NAMED_MULTIPLE.match(dim)
    if m is None:
        return None
    k = int(m.group(1)) if m.group(1) else 1
    return (k, m.group(2)) if k >= 1 else None


def _check_shape(shape: Any, where: str) -> list[Dim]:
    if not isinstance(shape, (list, tuple)):
        raise ManifestError(f"{where}: 'shape' must be a list, got {_short(shape)}")
    if len(shape) > 32:
        raise ManifestError(f"{where}: 'shape' has {len(shape)} dims (at most 32)")
    for dim in shape:
        if isinstance(dim, bool) or not isinstance(dim, (int, str)):
            raise ManifestError(f"{where}: dims must be integers or strings, got {_short(dim)}")
        if isinstance(dim, int) and dim < 0:
            raise ManifestError(f"{where}: negative dim {dim}")
        if isinstance(dim, int) and dim > MAX_DIM:
            raise ManifestError(f"{where}: dim {dim} is larger than {MAX_DIM}")
        if isinstance(dim, str) and not dim:
            raise ManifestError(f"{where}: symbolic dims must be non-empty strings")
    return list(shape)


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _number(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ManifestError(f"{where} must be a number, got {_short(value)}")
    return float(value)


def _integer(value: Any, where: str, minimum: int = 0) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ManifestError(f"{where} must be an integer >= {minimum}, got {_short(value)}")
    return value


def _boolean(value: Any, where: str) -> bool:
    if not isinstance(value, bool):
        raise ManifestError(f"{where} must be true or false, got {_short(value)}")
    return value


def _plain_json(value: Any, where: str) -> None:
    """`value` is strict JSON: objects with string keys, lists, strings, finite numbers, true,
    false, null. (``NaN``/``Infinity`` are not JSON: other readers, the C++ runtime's among
    them, refuse them; so the manifest never holds them.)"""
    stack = [(value, where)]
    while stack:
        item, at = stack.pop()
        if isinstance(item, dict):
            for k, v in item.items():
                if not isinstance(k, str):
                    raise ManifestError(f"{at} has a non-string key {_short(k)}")
                stack.append((v, f"{at}.{k}"))
        elif isinstance(item, list):
            stack.extend((v, f"{at}[{i}]") for i, v in enumerate(item))
        elif isinstance(item, float) and not math.isfinite(item):
            raise ManifestError(f"{at} must be a finite number, got {item!r} (not JSON)")
        elif item is not None and not isinstance(item, (str, int, float, bool)):
            raise ManifestError(f"{at} is not a JSON value: {_short(item)}")


def _object(value: Any, where: str) -> dict:
    if not isinstance(value, dict):
        raise ManifestError(f"{where} must be an object, got {_short(value)}")
    return value


def _list(value: Any, where: str) -> list:
    if not isinstance(value, list):
        raise ManifestError(f"{where} must be a list, got {_short(value)}")
    return value


def _no_unknown(obj: dict, known: tuple[str, ...], where: str) -> None:
    unknown = sorted(str(k) for k in obj if k not in known)
    if unknown:
        raise ManifestError(f"{where}: unknown fields {unknown} (known: {list(known)})")


def _dtype(value: Any, where: str) -> str:
    if not isinstance(value, str) or value not in DTYPES:
        raise ManifestError(f"{where}: unsupported dtype {_short(value)} (expected one of {DTYPES})")
    return value


def _string(value: Any, where: str) -> str:
    if not isinstance(value, str) or not value:
        raise ManifestError(f"{where} must be a non-empty string, got {value!r}")
    return value


def _require(obj: dict, key: str, where: str) -> Any:
    if key not in obj:
        raise ManifestError(f"{where}: missing required field {key!r}")
    return obj[key]


@dataclass
class TensorSpec:
    """A model input or output: its graph name, shape (symbolic dims as strings) and dtype."""

    name: str
    shape: list[Dim]
    dtype: str = "float32"
    #: Valid values ``[low, high)`` of an integer input (token ids: ``[0, vocabulary size)``),
    #: checked by the runtimes; None: integer inputs must be non-negative.
    range: list[int] | None = None

    def __post_init__(self) -> None:
        if self.range is not None:
            where = f"{self.name!r}: range"
            if self.dtype not in ("int64", "int32", "int16", "int8", "uint8"):
                raise ManifestError(f"{where} is only defined for integer inputs, not {self.dtype}")
            if not isinstance(self.range, (list, tuple)) or len(self.range) != 2:
                raise ManifestError(f"{where} must be [low, high], got {_short(self.range)}")
            low = _integer(self.range[0], f"{where}[0]", minimum=-(2**63))
            high = _integer(self.range[1], f"{where}[1]", minimum=-(2**63))
            if not low < high:
                raise ManifestError(f"{where} must satisfy low < high, got [{low}, {high}]")
            self.range = [low, high]

    @classmethod
    def from_dict(cls, obj: Any, where: str) -> TensorSpec:
        if not isinstance(obj, dict):
            raise ManifestError(f"{where}: expected an object, got {type(obj).__name__}")
        _no_unknown(obj, ("name", "shape", "dtype", "range"), where)
        name = _require(obj, "name", where)
        if not isinstance(name, str) or not name:
            raise ManifestError(f"{where}: 'name' must be a non-empty string")
        return cls(
            name,
            _check_shape(_require(obj, "shape", where), where),
            _dtype(obj.get("dtype", "float32"), f"{where}.dtype"),
            obj.get("range"),
        )


@dataclass
class NoiseSpec:
    """One noise input: the ``eps`` of distribution `parameter` (its dotted path in the model).

    `shape` is the distribution's shape, prefixed by ``"samples"`` when the graph has a
    sample axis. Local-reparameterization noise (see :class:`LocalVariant`) has shape
    ``["samples", "batch", out_features]`` and `parameter` names the Linear layer.
    """

    name: str
    parameter: str
    shape: list[Dim]
    distribution: str = DISTRIBUTION
    kind: str = "weight"
    transform: str = "affine"

    @property
    def event_shape(self) -> list[int]:
        """The integer dims of the noise (without symbolic sample/batch dims)."""
        return [d for d in self.shape if isinstance(d, int)]

    @classmethod
    def from_dict(cls, obj: Any, where: str, root_allowed: bool = False) -> NoiseSpec:
        """`root_allowed`: an empty `parameter` names the model itself (local-variant noise of a
        model that is one Linear layer); weight noise always names a distribution."""
        if not isinstance(obj, dict):
            raise ManifestError(f"{where}: expected an object, got {type(obj).__name__}")
        _no_unknown(obj, ("name", "parameter", "shape", "distribution", "kind", "transform"), where)
        shape = _check_shape(_require(obj, "shape", where), where)
        for axis, dim in enumerate(shape):
            if isinstance(dim, str) and not (
                (dim == SAMPLE_DIM and axis == 0) or dim_factor(dim) is not None
            ):
                raise ManifestError(
                    f"{where}: symbolic noise dim {_short(dim)} at axis {axis}; only 'samples' (axis 0), "
                    "'<name>' and '<k>*<name>' naming a symbolic input dim ('batch', 'seq_len', ...) are allowed"
                )
        dist = obj.get("distribution", DISTRIBUTION)
        if dist != DISTRIBUTION:
            raise ManifestError(
                f"{where}: unsupported noise distribution {dist!r} (expected {DISTRIBUTION!r})"
            )
        kind = obj.get("kind", "weight")
        if kind not in NOISE_KINDS:
            raise ManifestError(f"{where}: unknown noise kind {kind!r} (expected one of {NOISE_KINDS})")
        transform = obj.get("transform", "affine")
        if transform not in NOISE_TRANSFORMS:
            raise ManifestError(
                f"{where}: unknown noise transform {transform!r} (expected one of {NOISE_TRANSFORMS})"
            )
        return cls(
            name=_string(_require(obj, "name", where), f"{where}.name"),
            parameter=(
                _require(obj, "parameter", where)
                if root_allowed and _require(obj, "parameter", where) == ""
                else _string(_require(obj, "parameter", where), f"{where}.parameter")
            ),
            shape=shape,
            distribution=dist,
            kind=kind,
            transform=transform,
        )


@dataclass
class Validation:
    """What the exporter checked: worst abs difference to the source model for the same noise."""

    max_abs_diff: float
    tolerance: float
    num_noise_draws: int
    includes_zero_noise: bool = True
    per_output: dict[str, float] = field(default_factory=dict)
    batch_sizes: list[int] = field(default_factory=list)
    #: Relative tolerance: an element passes when ``|a - b| <= tolerance + rtol * |b|``.
    rtol: float = 0.0
    #: Whether every element was within tolerance (None in manifests written before ``rtol``).
    within_tolerance: bool | None = None
    #: Per output, the distribution check: the artifact's MC samples against the source model's
    #: own sampling (``std_ratio``, ``mean_z_median``, ``samples``).
    distribution: dict[str, dict[str, float]] = field(default_factory=dict)

    @property
    def passed(self) -> bool:
        if self.within_tolerance is not None:
            return self.within_tolerance
        return self.max_abs_diff <= self.tolerance


#: Checks of the fields of :class:`Validation` read from JSON (fields not listed are passed as is).
def _validation_from_dict(obj: dict, where: str) -> Validation:
    known = tuple(f.name for f in fields(Validation))
    _no_unknown(obj, known, where)
    values: dict[str, Any] = dict(obj)
    for key in ("max_abs_diff", "tolerance", "num_noise_draws"):
        _require(obj, key, where)
    values["max_abs_diff"] = _number(obj["max_abs_diff"], f"{where}.max_abs_diff")
    values["tolerance"] = _number(obj["tolerance"], f"{where}.tolerance")
    values["num_noise_draws"] = _integer(obj["num_noise_draws"], f"{where}.num_noise_draws")
    if "includes_zero_noise" in obj:
        values["includes_zero_noise"] = _boolean(obj["includes_zero_noise"], f"{where}.includes_zero_noise")
    if "per_output" in obj:
        per = _object(obj["per_output"], f"{where}.per_output")
        values["per_output"] = {str(k): _number(v, f"{where}.per_output[{k!r}]") for k, v in per.items()}
    if "batch_sizes" in obj:
        values["batch_sizes"] = [
            _integer(b, f"{where}.batch_sizes[{i}]", minimum=1)
            for i, b in enumerate(_list(obj["batch_sizes"], f"{where}.batch_sizes"))
        ]
    return Validation(**values)


@dataclass
class LocalVariant:
    """A second graph for the ``local`` strategy (local reparameterization, Linear-only models).

    `file` is relative to the artifact's folder. Its inputs are the model inputs plus one
    pre-activation noise per Linear layer (`noise`); outputs are as in the main graph with a
    sample axis.
    """

    file: str
    noise: list[NoiseSpec]
    #: ``sha256:<hex>`` of the local graph's bytes (the v1 graph digest of that file, see
    #: :mod:`illia_export.artifact.digest`); covered by the main artifact's scheme-2 digest.
    digest: str | None = None


@dataclass
class Likelihood:
    """A regression head that predicts a distribution per input (contract v2).

    `mean` and `scale` name the outputs holding the location and the scale parameter;
    `scale_kind` says how the scale is parameterized (:data:`SCALE_PARAMETERIZATIONS`);
    `df` is the Student-t degrees of freedom.
    """

    name: str
    mean: str
    scale: str
    scale_kind: str
    df: float | None = None

    def __post_init__(self) -> None:
        if self.name not in LIKELIHOODS:
            raise ManifestError(f"unknown likelihood {self.name!r}; expected one of {LIKELIHOODS}")
        if self.scale_kind not in SCALE_PARAMETERIZATIONS:
            raise ManifestError(
                f"unknown scale parameterization {self.scale_kind!r}; expected one of {SCALE_PARAMETERIZATIONS}"
            )
        if self.name == "student_t":
            if isinstance(self.df, bool) or not isinstance(self.df, (int, float)) or not 0 < self.df < float("inf"):
                raise ManifestError(f"a student_t likelihood needs a finite df > 0, got {self.df!r}")
        elif self.df is not None:
            raise ManifestError(f"df (={self.df!r}) is for the student_t likelihood only, not {self.name!r}")
        for role in ("mean", "scale"):
            if not isinstance(getattr(self, role), str) or not getattr(self, role):
                raise ManifestError(f"likelihood.{role} must name an output, got {getattr(self, role)!r}")


@dataclass
class DropoutSite:
    """A dropout module of the source model and whether the artifact samples it."""

    #: Dotted module path; ``""`` is the model itself (a functional dropout in its own forward).
    path: str
    p: float
    sampled: bool


@dataclass
class Manifest:
    """The artifact contract, version 2 (see docs/formats.md)."""

    format: str
    source: str
    inputs: list[TensorSpec]
    noise: list[NoiseSpec]
    outputs: list[TensorSpec]
    sample_axis: int | None
    task: str = "raw"
    validation: Validation | None = None
    local: LocalVariant | None = None
    contract: int = CONTRACT_VERSION
    extra: dict[str, Any] = field(default_factory=dict)
    noise_generator: str = NOISE_GENERATOR
    likelihood: Likelihood | None = None
    dropout: list[DropoutSite] = field(default_factory=list)
    #: Why there is no local variant (None when there is one, or when none was asked for).
    local_unavailable: str | None = None
    #: ``sha256:<hex>``, written at export and checked at load (:mod:`illia_export.artifact.digest`).
    digest: str | None = None
    #: What `digest` covers: 2 = the graph bytes and every manifest field but ``digest``,
    #: ``validation`` and ``extra``; 1 (or absent) = the graph bytes only (older artifacts).
    digest_scheme: int | None = None

    def __post_init__(self) -> None:
        if self.format not in FORMATS:
            raise ManifestError(f"unknown format {self.format!r}; expected one of {FORMATS}")
        if self.source not in SOURCES:
            raise ManifestError(f"unknown source {self.source!r}; expected one of {SOURCES}")
        if self.task not in TASKS:
            raise ManifestError(f"unknown task {self.task!r}; expected one of {TASKS}")
        if self.sample_axis is not None and (isinstance(self.sample_axis, bool) or self.sample_axis != 0 or not isinstance(self.sample_axis, int)):
            raise ManifestError(f"sample_axis must be 0 or null, got {self.sample_axis!r}")
        if isinstance(self.contract, bool) or not isinstance(self.contract, int) or self.contract not in READABLE_CONTRACTS:
            raise ManifestError(
                f"manifest contract version {self.contract!r} is not supported (this illia-export "
                f"reads versions {', '.join(map(str, READABLE_CONTRACTS))})"
            )
        if self.likelihood is not None:
            names = {t.name for t in self.outputs}
            for role in ("mean", "scale"):
                out = getattr(self.likelihood, role)
                if out not in names:
                    raise ManifestError(f"likelihood.{role} names output {out!r}, which the artifact does not have")
        check_unique_names([t.name for t in self.inputs] + [n.name for n in self.noise])
        check_unique_names([t.name for t in self.outputs])
        input_dims = {d for t in self.inputs for d in t.shape if isinstance(d, str)} | {BATCH_DIM}
        for where, specs in (("noise", self.noise), ("local.noise", self.local.noise if self.local else [])):
            for n in specs:
                for dim in n.shape:
                    named = dim_factor(dim)
                    if named is not None and named[1] not in input_dims:
                        raise ManifestError(
                            f"{where} {n.name!r}: dim {dim!r} names {named[1]!r}, which no model input's shape has "
                            f"(input dims: {sorted(input_dims)}); a runtime could not size this noise"
                        )
        if self.sample_axis == 0:
            for n in self.noise:
                if not n.shape or n.shape[0] != SAMPLE_DIM:
                    raise ManifestError(f"noise {n.name!r}: a vectorized graph needs shape ['samples', ...]")

    @property
    def vectorized(self) -> bool:
        return self.sample_axis == 0

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        if self.validation is None:
            out["validation"] = None
        if self.local is None:
            out.pop("local")
        for key in ("likelihood", "local_unavailable", "digest", "digest_scheme"):
            if out.get(key) is None:
                out.pop(key, None)
        if out.get("local") is not None and out["local"].get("digest") is None:
            out["local"].pop("digest", None)
        for key in ("inputs", "outputs"):
            for spec in out[key]:
                if spec.get("range") is None:
                    spec.pop("range", None)
        order = [
            "contract",
            "format",
            "source",
            "task",
            "sample_axis",
            "inputs",
            "noise",
            "outputs",
            "validation",
        ]
        return {k: out[k] for k in order} | {k: v for k, v in out.items() if k not in order}

    def to_json(self, indent: int | None = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent, allow_nan=False)

    @classmethod
    def from_dict(cls, obj: Any) -> Manifest:
        """Build a manifest from parsed JSON, checking every field's type and value.

        Raises:
            ManifestError: naming the first offending field (never another exception).
        """
        if not isinstance(obj, dict):
            raise ManifestError(f"a manifest must be a JSON object, got {type(obj).__name__}")
        where = "manifest"
        known = tuple(f.name for f in fields(cls))
        _no_unknown(obj, known, where)
        _plain_json(obj, where)
        for key in ("contract", "format", "source"):
            _require(obj, key, where)
        for key in ("format", "source", "task", "noise_generator"):
            if key in obj and not isinstance(obj[key], str):
                raise ManifestError(f"{where}.{key} must be a string, got {_short(obj[key])}")
        inputs = [
            TensorSpec.from_dict(o, f"{where}.inputs[{i}]")
            for i, o in enumerate(_list(_require(obj, "inputs", where), f"{where}.inputs"))
        ]
        if not inputs:
            raise ManifestError(f"{where}.inputs is empty: the model needs at least one input")
        noise = [
            NoiseSpec.from_dict(o, f"{where}.noise[{i}]")
            for i, o in enumerate(_list(_require(obj, "noise", where), f"{where}.noise"))
        ]
        # An empty noise list is legal (e.g. a BatchEnsemble-only model); a manifest whose list was
        # emptied is caught when the runtime compares it with the graph's inputs.
        outputs = [
            TensorSpec.from_dict(o, f"{where}.outputs[{i}]")
            for i, o in enumerate(_list(_require(obj, "outputs", where), f"{where}.outputs"))
        ]
        if not outputs:
            raise ManifestError(f"{where}.outputs is empty: the model needs at least one output")
        validation = None
        if obj.get("validation") is not None:
            validation = _validation_from_dict(_object(obj["validation"], f"{where}.validation"), f"{where}.validation")
        local = None
        if obj.get("local") is not None:
            loc = _object(obj["local"], f"{where}.local")
            _no_unknown(loc, ("file", "noise", "digest"), f"{where}.local")
            local_digest = loc.get("digest")
            if local_digest is not None and (not isinstance(local_digest, str) or not _DIGEST_OK.match(local_digest)):
                raise ManifestError(
                    f"{where}.local.digest must look like 'sha256:<64 hex digits>', got {_short(local_digest)}"
                )
            file = _string(_require(loc, "file", f"{where}.local"), f"{where}.local.file")
            if "/" in file or "\\" in file or file in (".", "..") or "\x00" in file:
                raise ManifestError(
                    f"{where}.local.file must be a file name beside the artifact, got {_short(file)}"
                )
            local = LocalVariant(
                file=file,
                noise=[
                    NoiseSpec.from_dict(o, f"{where}.local.noise[{i}]", root_allowed=True)
                    for i, o in enumerate(_list(_require(loc, "noise", f"{where}.local"), f"{where}.local.noise"))
                ],
                digest=local_digest,
            )
        likelihood = None
        if obj.get("likelihood") is not None:
            lk = _object(obj["likelihood"], f"{where}.likelihood")
            _no_unknown(lk, ("name", "mean", "scale", "scale_kind", "df"), f"{where}.likelihood")
            likelihood = Likelihood(
                name=_string(_require(lk, "name", f"{where}.likelihood"), f"{where}.likelihood.name"),
                mean=_string(_require(lk, "mean", f"{where}.likelihood"), f"{where}.likelihood.mean"),
                scale=_string(_require(lk, "scale", f"{where}.likelihood"), f"{where}.likelihood.scale"),
                scale_kind=_string(
                    _require(lk, "scale_kind", f"{where}.likelihood"), f"{where}.likelihood.scale_kind"
                ),
                df=None if lk.get("df") is None else _number(lk["df"], f"{where}.likelihood.df"),
            )
        dropout = []
        for i, d in enumerate(_list(obj.get("dropout") or [], f"{where}.dropout")):
            w = f"{where}.dropout[{i}]"
            d = _object(d, w)
            _no_unknown(d, ("path", "p", "sampled"), w)
            p = _number(_require(d, "p", w), f"{w}.p")
            if not 0.0 <= p <= 1.0:
                raise ManifestError(f"{w}.p must lie in [0, 1], got {p}")
            path = _require(d, "path", w)
            if not isinstance(path, str):  # "" is the model itself (F.dropout in its own forward)
                raise ManifestError(f"{w}.path must be a string, got {_short(path)}")
            dropout.append(
                DropoutSite(
                    path=path,
                    p=p,
                    sampled=_boolean(_require(d, "sampled", w), f"{w}.sampled"),
                )
            )
        local_unavailable = obj.get("local_unavailable")
        if local_unavailable is not None and not isinstance(local_unavailable, str):
            raise ManifestError(f"{where}.local_unavailable must be a string or null, got {_short(local_unavailable)}")
        digest = obj.get("digest")
        if digest is not None and (not isinstance(digest, str) or not _DIGEST_OK.match(digest)):
            raise ManifestError(f"{where}.digest must look like 'sha256:<64 hex digits>', got {_short(digest)}")
        scheme = obj.get("digest_scheme")
        if scheme is not None and (isinstance(scheme, bool) or scheme not in DIGEST_SCHEMES):
            raise ManifestError(f"{where}.digest_scheme must be one of {DIGEST_SCHEMES}, got {_short(scheme)}")
        return cls(
            contract=_require(obj, "contract", where),
            format=obj["format"],
            source=obj["source"],
            inputs=inputs,
            noise=noise,
            outputs=outputs,
            sample_axis=obj.get("sample_axis"),
            task=obj.get("task", "raw"),
            validation=validation,
            local=local,
            extra=dict(_object(obj.get("extra", {}), f"{where}.extra")),
            noise_generator=obj.get("noise_generator", LEGACY_NOISE_GENERATOR),
            likelihood=likelihood,
            dropout=dropout,
            local_unavailable=local_unavailable,
            digest=digest,
            digest_scheme=scheme,
        )

    @classmethod
    def from_json(cls, text: str | bytes) -> Manifest:
        try:
            obj = json.loads(text, parse_constant=_not_json)
        except (ValueError, UnicodeDecodeError, TypeError) as exc:
            raise ManifestError(f"the manifest is not valid JSON: {exc}") from exc
        except RecursionError as exc:
            raise ManifestError("the manifest is not valid JSON: nested too deeply") from exc
        return cls.from_dict(obj)


def _not_json(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def sidecar_path(artifact: str | os.PathLike) -> Path:
    """``<artifact>.manifest.json``, where formats without embedded metadata keep the manifest."""
    return Path(str(artifact) + SIDECAR_SUFFIX)


def detect_format(path: str | os.PathLike) -> str:
    """Guess an artifact's format from its path (and, for folders, its content)."""
    p = Path(path)
    if p.is_dir():
        if (p / "saved_model.pb").exists():
            return "savedmodel"
        raise ManifestError(f"{p} is a folder but not a TF SavedModel (no saved_model.pb)")
    suffix = p.suffix.lower()
    if suffix == ".pt2":
        return _pt2_kind(p)
    if suffix == ".onnx":
        return "onnx"
    if suffix in (".pt", ".pth", ".ts", ".torchscript"):
        return "torchscript"
    if suffix == ".tflite":
        return "tflite"
    if suffix == ".ort":
        return "onnx"
    raise ManifestError(
        f"cannot tell the format of {p}: expected .onnx, .pt (TorchScript), .pt2 (torch.export), .tflite or a "
        "SavedModel folder"
    )


def _pt2_members(p: Path) -> list[str]:
    import zipfile

    try:
        with zipfile.ZipFile(p) as zf:
            return zf.namelist()
    except (zipfile.BadZipFile, OSError) as exc:
        raise ManifestError(f"{p} is not a .pt2 archive (not a readable zip file)") from exc


def _pt2_kind(p: Path) -> str:
    """``aoti`` for an AOTInductor package (compiled kernels inside), ``pt2`` for an ExportedProgram."""
    if not p.exists():
        return "pt2"
    return "aoti" if any("/data/aotinductor/" in n for n in _pt2_members(p)) else "pt2"


def read_manifest(path: str | os.PathLike) -> Manifest:
    """Read the manifest of any artifact: embedded where the format allows, else the sidecar."""
    p = Path(path)
    if not p.exists():
        raise ManifestError(f"artifact not found: {p}")
    side = sidecar_path(p)
    fmt = detect_format(p)
    text: str | bytes | None = None
    if fmt == "onnx" and p.suffix.lower() == ".onnx":
        import onnx

        try:
            model = onnx.load(str(p), load_external_data=False)
        except Exception as exc:  # onnx raises DecodeError and friends
            raise ManifestError(f"{p} is not a readable ONNX file: {exc}") from exc
        for prop in model.metadata_props:
            if prop.key == ONNX_METADATA_KEY:
                text = prop.value
    elif fmt == "onnx":  # ORT format (.ort): the metadata survives conversion; onnxruntime reads it
        text = _read_ort_manifest(p)
    elif fmt == "torchscript":
        text = _read_torchscript_manifest(p)
    elif fmt in ("pt2", "aoti"):
        text = _read_pt2_manifest(p, fmt)
    elif fmt == "savedmodel":
        asset = p / "assets" / EMBEDDED_NAME
        if asset.exists():
            text = asset.read_bytes()
    if text is None and side.exists():
        text = side.read_bytes()
    if text is None:
        raise ManifestError(
            f"{p} carries no illia-export manifest (looked for the embedded manifest and for {side.name}); "
            "was it exported by illia-export?"
        )
    return Manifest.from_json(text)


def _read_ort_manifest(p: Path) -> str | None:
    """Read the manifest from an ORT-format model's custom metadata (needs onnxruntime)."""
    try:
        import onnxruntime as ort
    except ImportError:
        return None
    try:
        session = ort.InferenceSession(str(p), providers=["CPUExecutionProvider"])
    except Exception as exc:
        raise ManifestError(f"{p} is not a readable ORT-format model: {exc}") from exc
    return session.get_modelmeta().custom_metadata_map.get(ONNX_METADATA_KEY)


def _read_torchscript_manifest(p: Path) -> bytes | None:
    """Read the manifest from a TorchScript zip without loading the model (no torch needed)."""
    import zipfile

    try:
        with zipfile.ZipFile(p) as zf:
            for name in zf.namelist():
                parts = name.split("/")
                if len(parts) >= 2 and parts[-2] == "extra" and parts[-1] == EMBEDDED_NAME:
                    return zf.read(name)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, ValueError, NotImplementedError) as exc:
        raise ManifestError(f"{p} is not a readable TorchScript archive: {type(exc).__name__}: {exc}") from exc
    return None


def _read_pt2_manifest(p: Path, fmt: str) -> bytes | str | None:
    """From a ``.pt2``: the ``extra/`` file of an ExportedProgram, the metadata of an AOTI package."""
    import zipfile
    import zlib

    from illia_export.errors import ArtifactError

    try:
        with zipfile.ZipFile(p) as zf:
            for info in zf.infolist():
                name = info.filename
                parts = name.split("/")
                wanted = (fmt == "pt2" and len(parts) >= 2 and parts[-2] == "extra" and parts[-1] == EMBEDDED_NAME) or (
                    fmt == "aoti" and name.endswith("_metadata.json") and "/data/aotinductor/" in name
                )
                if not wanted:
                    continue
                if info.file_size > MAX_MANIFEST_BYTES:
                    raise ManifestError(f"{p}: {name!r} is {info.file_size} bytes; a manifest is at most 16 MiB")
                if fmt == "pt2":
                    return zf.read(name)
                try:
                    meta = json.loads(zf.read(name))
                except (ValueError, RecursionError) as exc:
                    raise ManifestError(f"{p}: the AOTInductor metadata is not valid JSON") from exc
                if isinstance(meta, dict) and isinstance(meta.get(ONNX_METADATA_KEY), str):
                    return meta[ONNX_METADATA_KEY]
    except (zipfile.BadZipFile, zipfile.LargeZipFile, zlib.error, EOFError, ValueError, NotImplementedError) as exc:
        raise ArtifactError(f"{p} is a damaged .pt2 archive: {type(exc).__name__}: {exc}") from exc
    return None


def write_sidecar(manifest: Manifest, artifact: str | os.PathLike) -> Path:
    """Write ``<artifact>.manifest.json`` atomically and return its path."""
    from illia_export.artifact.atomic import atomic_write_text

    path = sidecar_path(artifact)
    atomic_write_text(path, manifest.to_json(), part_of=artifact)
    return path


def embed_in_onnx(model: Any, manifest: Manifest) -> None:
    """Store the manifest in an ``onnx.ModelProto``'s ``metadata_props`` (in place)."""
    for prop in list(model.metadata_props):
        if prop.key == ONNX_METADATA_KEY:
            model.metadata_props.remove(prop)
    prop = model.metadata_props.add()
    prop.key = ONNX_METADATA_KEY
    prop.value = manifest.to_json(indent=None)


FROZEN_KEY = "frozen_bank"
"""The manifest ``extra`` key that marks a frozen-bank artifact (``illia-export freeze``)."""


def is_frozen(manifest: Manifest) -> bool:
    """Whether `manifest` describes a frozen-bank artifact (noise baked in, summary outputs)."""
    return FROZEN_KEY in manifest.extra
