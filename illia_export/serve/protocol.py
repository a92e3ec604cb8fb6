"""The KServe open inference protocol (v2) as pure functions: request JSON -> checked numpy
inputs and parameters, summaries -> response tensors, manifest -> model metadata.

Why pure: every rule about what a request may contain lives here, testable without a server
(and without a server), and a bad request is refused here, before it can join a batch
of other clients' rows. Errors are the package's typed errors (`ShapeError` for names, shapes
and datatypes; `InputError` for values and parameters; `StrategyError` for strategies); the
server turns them into HTTP 400 with the message.

Datatype rule: an input's v2 ``datatype`` must be of the manifest dtype's kind. Float inputs
accept ``FP16``/``FP32``/``FP64`` and are cast to the manifest's float dtype (JSON numbers are
decimal text: ``FP64`` data for an ``FP32`` input is rounded to float32 exactly as
``Predictor.predict`` rounds a float64 array); integer inputs accept any ``INT*``/``UINT*``
whose values fit the manifest's integer dtype; ``BOOL`` only for bool inputs.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from illia_export.errors import InputError, ShapeError, StrategyError
from illia_export.runtime import inputs as checks

#: v2 tensor datatypes and their numpy dtypes (``BYTES`` has no numeric meaning here).
V2_DTYPES: dict[str, np.dtype] = {
    "BOOL": np.dtype(np.bool_),
    "UINT8": np.dtype(np.uint8),
    "UINT16": np.dtype(np.uint16),
    "UINT32": np.dtype(np.uint32),
    "UINT64": np.dtype(np.uint64),
    "INT8": np.dtype(np.int8),
    "INT16": np.dtype(np.int16),
    "INT32": np.dtype(np.int32),
    "INT64": np.dtype(np.int64),
    "FP16": np.dtype(np.float16),
    "FP32": np.dtype(np.float32),
    "FP64": np.dtype(np.float64),
}
_NUMPY_TO_V2 = {dt: name for name, dt in V2_DTYPES.items()}

#: Request ``parameters`` this server understands; anything else is refused (a typo such as
#: ``num_sample`` would otherwise silently give the defaults).
PARAMETERS = ("num_samples", "seed", "strategy")
#: Seeds are 64-bit: ``[0, 2**64)``, as in ``Predictor.predict``.
SEED_LIMIT = checks.SEED_LIMIT


@dataclass(frozen=True)
class Limits:
    """What a request may ask for: the server's defaults and bounds."""

    default_samples: int = 32
    max_samples: int = 1024
    default_strategy: str = "fresh"
    #: Strategies this artifact supports (``local`` only with a local variant).
    strategies: tuple[str, ...] = ("fresh", "bank", "local")


@dataclass
class DecodedRequest:
    """A request that passed every check: inputs in manifest order, cast to the manifest's
    dtypes, and its sampling parameters (``seed`` None: the server picks one)."""

    arrays: list[np.ndarray]
    rows: int
    num_samples: int
    seed: int | None
    strategy: str
    outputs: list[str] | None


@dataclass
class OutputTensor:
    """One response tensor: name, batch-first shape, v2 datatype, and the array itself."""

    name: str
    shape: list[int]
    datatype: str
    array: np.ndarray


def v2_datatype(dtype: np.dtype | str) -> str:
    """The v2 datatype of a numpy dtype (``float32`` -> ``FP32``)."""
    dt = np.dtype(dtype)
    if dt not in _NUMPY_TO_V2:
        raise ShapeError(f"dtype {dt} has no KServe v2 datatype")
    return _NUMPY_TO_V2[dt]


def _manifest_dtype(spec) -> np.dtype:
    try:
        return np.dtype(spec.dtype)
    except TypeError:  # bfloat16 has no numpy dtype: requests carry float data for it
        return np.dtype(np.float32)


def _expected(spec) -> str:
    dims = ", ".join(str(d) for d in spec.shape)
    return f"[{dims}] {v2_datatype(_manifest_dtype(spec))}"


def decode_inputs(inputs: Sequence[Mapping[str, Any]], specs: Sequence[Any]) -> tuple[list[np.ndarray], int]:
    """Check v2 request inputs against the manifest's input specs.

    Args:
        inputs: the request's ``inputs``, each ``{"name", "shape", "datatype", "data"}``
            (``data`` flat in row-major order, or nested lists of that shape).
        specs: ``manifest.inputs`` (``TensorSpec``: name, shape with symbolic dims as strings,
            dtype, optional integer ``range``).

    Returns:
        ``(arrays in manifest order, rows)``.

    Raises:
        ShapeError: unknown, missing or repeated input names; a datatype of the wrong kind;
            ``shape`` not matching the data's length or the manifest's shape.
        InputError: NaN/inf (or a value that overflows the input's float dtype); integers
            outside the input's range.
    """
    if not isinstance(inputs, Sequence) or isinstance(inputs, (str, bytes)) or not inputs:
        raise ShapeError(f"`inputs` must be a non-empty list of tensors, one per model input {[s.name for s in specs]}")
    names = [s.name for s in specs]
    by_name: dict[str, Mapping[str, Any]] = {}
    for item in inputs:
        if not isinstance(item, Mapping):
            raise ShapeError(f"each entry of `inputs` must be an object with name, shape, datatype, data; got {type(item).__name__}")
        name = item.get("name")
        if name in by_name:
            raise ShapeError(f"input {name!r} is given twice")
        by_name[name] = item
    unknown = sorted(str(n) for n in by_name if n not in names)
    missing = [n for n in names if n not in by_name]
    if unknown or missing:
        raise ShapeError(
            f"inputs {sorted(str(n) for n in by_name)} do not match the model's inputs {names} "
            f"(missing {missing}, unknown {unknown})"
        )
    bound: dict[str, int] = {}
    arrays = [_decode_one(spec, by_name[spec.name], bound) for spec in specs]
    rows = int(arrays[0].shape[0]) if arrays[0].ndim else 1
    return arrays, rows


def _decode_one(spec, item: Mapping[str, Any], bound: dict[str, int]) -> np.ndarray:
    name = spec.name
    want = _manifest_dtype(spec)
    expected = _expected(spec)
    datatype = item.get("datatype")
    if not isinstance(datatype, str) or datatype.upper() not in V2_DTYPES:
        raise ShapeError(
            f"input {name!r}: datatype {datatype!r} is not a numeric v2 datatype (expected {expected.split()[-1]})"
        )
    datatype = datatype.upper()
    got = V2_DTYPES[datatype]
    same_kind = (got.kind == "f" and want.kind == "f") or (got.kind in "iu" and want.kind in "iu") or (
        got.kind == "b" and want.kind == "b"
    )
    if not same_kind:
        raise ShapeError(f"input {name!r} must be {expected}, got datatype {datatype}")

    shape = item.get("shape")
    if (
        not isinstance(shape, (list, tuple))
        or any(isinstance(d, bool) or not isinstance(d, int) or d < 0 for d in shape)
    ):
        raise ShapeError(f"input {name!r}: `shape` must be a list of non-negative integers, got {shape!r}")
    shape = [int(d) for d in shape]
    data = item.get("data")
    if data is None:
        raise ShapeError(f"input {name!r} has no `data` (binary tensor data is not supported; send JSON data)")
    if not isinstance(data, (list, tuple, np.ndarray)):
        raise ShapeError(f"input {name!r}: `data` must be a JSON array, got {type(data).__name__}")
    try:
        arr = np.asarray(data)
    except ValueError as exc:  # ragged nesting
        raise ShapeError(f"input {name!r}: `data` is not a rectangular array ({' '.join(str(exc).split())[:120]})") from exc
    if arr.dtype.kind not in "biuf":
        raise ShapeError(f"input {name!r}: `data` must hold numbers only (no null, strings or ragged lists)")
    if got.kind == "f" and arr.dtype.kind not in "iuf":
        raise ShapeError(f"input {name!r}: {datatype} data must hold numbers, got booleans")
    if got.kind in "iu" and arr.dtype.kind not in "iu":
        raise ShapeError(f"input {name!r}: {datatype} data must hold integers, got {arr.dtype.kind == 'f' and 'non-integer numbers' or 'booleans'}")
    if got.kind == "b" and arr.dtype.kind != "b":
        raise ShapeError(f"input {name!r}: BOOL data must hold true/false")
    count = math.prod(shape)
    if arr.size != count:
        raise ShapeError(f"input {name!r}: shape {shape} needs {count} values, `data` holds {arr.size}")

    checks.check_shape(name, shape, spec, bound, expected)
    checks.check_int_fit(name, arr, want)
    with np.errstate(over="ignore"):  # an overflow becomes inf, refused just below
        arr = arr.reshape(shape).astype(want, copy=False)
    checks.check_values(spec, arr, hint=False)  # after the cast: float32 overflow is caught too
    return np.ascontiguousarray(arr)


def decode_parameters(parameters: Mapping[str, Any] | None, limits: Limits) -> tuple[int, int | None, str]:
    """Read ``num_samples``, ``seed`` and ``strategy`` from the request's ``parameters``.

    ``num_samples``: an integer in ``[1, max_samples]`` (default: the server's). ``seed``: an
    integer in ``[0, 2**64)``, or its decimal string (for clients without 64-bit integers);
    absent: None (the server picks one and returns it). ``strategy``: one the artifact supports.

    Raises:
        InputError: an unknown parameter, a bad count or seed. StrategyError: a strategy that
            is unknown or that the artifact does not support.
    """
    params = dict(parameters or {})
    unknown = sorted(k for k in params if k not in PARAMETERS)
    if unknown:
        raise InputError(f"unknown request parameters {unknown}; this server understands {list(PARAMETERS)}")
    num_samples = params.get("num_samples", limits.default_samples)
    if isinstance(num_samples, bool) or not isinstance(num_samples, (int, np.integer)):
        raise InputError(f"parameter num_samples (={num_samples!r}) must be an integer in [1, {limits.max_samples}]")
    if not 1 <= num_samples <= limits.max_samples:
        raise InputError(
            f"parameter num_samples (={num_samples}) must lie in [1, {limits.max_samples}] "
            "(the server's --max-samples)"
        )
    seed = params.get("seed")
    if seed is not None:
        if isinstance(seed, str) and seed.strip().isascii() and seed.strip().isdigit() and len(seed.strip()) <= 20:
            seed = int(seed)  # ASCII digits only, and short: int() of other digit strings raises
        if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
            shown = repr(seed) if len(repr(seed)) <= 60 else repr(seed)[:40] + f"... ({len(str(seed))} characters)"
            raise InputError(f"parameter seed (={shown}) must be an integer in [0, 2**64) (or its decimal string)")
        seed = checks.check_seed(seed, allow_none=False, what="parameter seed")
    strategy = params.get("strategy", limits.default_strategy)
    if strategy not in limits.strategies:
        why = "" if strategy not in ("fresh", "bank", "local") else " (this artifact has no local-reparameterization variant)"
        raise StrategyError(f"parameter strategy (={strategy!r}) must be one of {list(limits.strategies)}{why}")
    return int(num_samples), seed, strategy


def decode_request(
    inputs: Sequence[Mapping[str, Any]],
    parameters: Mapping[str, Any] | None,
    specs: Sequence[Any],
    limits: Limits,
    outputs: Sequence[str] | None = None,
    available_outputs: Sequence[str] | None = None,
) -> DecodedRequest:
    """:func:`decode_parameters` and :func:`decode_inputs` together, plus the requested
    ``outputs`` (names of summaries; None: all), checked against `available_outputs`."""
    num_samples, seed, strategy = decode_parameters(parameters, limits)
    arrays, rows = decode_inputs(inputs, specs)
    wanted = None
    if outputs:
        wanted = list(outputs)
        if available_outputs is not None:
            unknown = [n for n in wanted if n not in available_outputs]
            if unknown:
                raise ShapeError(f"requested outputs {unknown} do not exist; this model returns {list(available_outputs)}")
    return DecodedRequest(arrays, rows, num_samples, seed, strategy, wanted)


def encode_outputs(summaries: Mapping[str, np.ndarray], wanted: Sequence[str] | None = None) -> list[OutputTensor]:
    """Response tensors from ``Prediction.summary_arrays()``: batch-first, row-major, with
    their v2 datatypes (float32 -> FP32, float64 -> FP64, int64 -> INT64). Non-finite values
    stay NaN/inf in the arrays; the server's JSON writer (orjson, ``wire``) writes them as ``null``, as
    ``illia_export.strict_json`` does (tested on the server)."""
    names = list(wanted) if wanted else list(summaries)
    out = []
    for name in names:
        arr = np.ascontiguousarray(summaries[name])
        out.append(OutputTensor(name, [int(d) for d in arr.shape], v2_datatype(arr.dtype), arr))
    return out


def tensor_metadata(name: str, shape: Sequence[Any], dtype: np.dtype | str) -> dict[str, Any]:
    """A v2 metadata tensor: symbolic dims become -1."""
    return {
        "name": name,
        "datatype": v2_datatype(dtype),
        "shape": [d if isinstance(d, int) and not isinstance(d, bool) else -1 for d in shape],
    }


def input_metadata(specs: Sequence[Any]) -> list[dict[str, Any]]:
    """v2 metadata of the model inputs (manifest order)."""
    return [tensor_metadata(s.name, s.shape, _manifest_dtype(s)) for s in specs]


#: What each response tensor is, by task: (description, units). Shown in the model metadata
#: (``outputs[i].parameters``) so that a client knows ``mean``/``std`` of a classifier are over
#: logits, not probabilities, and that entropies are in nats (natural logarithms).
OUTPUT_MEANING: dict[str, dict[str, tuple[str, str]]] = {
    "classification": {
        "mean": ("mean over the S samples of the logits (not probabilities)", "logits"),
        "std": ("standard deviation (ddof=0) over the S samples of the logits", "logits"),
        "probabilities": ("mean over the S samples of softmax(logits): the predictive distribution", "probability"),
        "predicted_class": ("argmax of probabilities", "class index"),
        "predictive_entropy": ("entropy of probabilities: total uncertainty", "nats"),
        "expected_entropy": ("mean over the S samples of the entropy of softmax(logits): aleatoric part", "nats"),
        "mutual_information": ("predictive_entropy - expected_entropy: epistemic part", "nats"),
    },
    "regression": {
        "mean": ("predictive mean: mean over the S samples of the output (of the predicted mean with a likelihood)",
                 "output units"),
        "std": ("predictive standard deviation: over the S samples of the output (sqrt(predictive_variance) "
                "with a likelihood)", "output units"),
        "aleatoric_variance": ("mean over the S samples of the likelihood's variance", "output units squared"),
        "epistemic_variance": ("variance over the S samples of the predicted mean", "output units squared"),
        "predictive_variance": ("aleatoric_variance + epistemic_variance", "output units squared"),
        "interval_90_lower": ("5 % quantile of the predictive distribution", "output units"),
        "interval_90_upper": ("95 % quantile of the predictive distribution", "output units"),
    },
}


def output_meaning(task: str, name: str) -> dict[str, str]:
    """``{"description", "units"}`` of one response tensor (raw-task outputs: over the S
    samples of the model's output, in its units)."""
    table = OUTPUT_MEANING.get(task, OUTPUT_MEANING["regression"])
    if task not in OUTPUT_MEANING and name in ("mean", "std"):
        what = "mean" if name == "mean" else "standard deviation (ddof=0)"
        return {"description": f"{what} over the S samples of the model output", "units": "output units"}
    description, units = table.get(name, (name, "unspecified"))
    return {"description": description, "units": units}


def output_metadata(
    summaries: Mapping[str, np.ndarray], row_shape: Sequence[Any], task: str | None = None
) -> list[dict[str, Any]]:
    """v2 metadata of the response tensors, from one probe prediction's summaries.

    Args:
        summaries: ``summary_arrays()`` of a prediction (dtypes and ranks are taken from it).
        row_shape: the summarized output's shape without the sample axis, batch first, from
            the manifest (symbolic dims as strings become -1).
        task: the prediction's task; with it each tensor gets ``parameters`` saying what it is
            (:data:`OUTPUT_MEANING`).
    """
    out = []
    for name, arr in summaries.items():
        dims = [row_shape[i] if i < len(row_shape) else arr.shape[i] for i in range(arr.ndim)]
        meta = tensor_metadata(name, dims, arr.dtype)
        if task is not None:
            meta["parameters"] = output_meaning(task, name)
        out.append(meta)
    return out
