"""Checks of everything a caller hands a predictor: arrays, seeds, counts, row ids.

Why one module: the Python API (``Predictor.predict``), the CLI and the server
(``illia_export.serve.protocol``) must refuse the same inputs with the same words, and a guard
that exists twice drifts (the int-fit check did: an int32 input ``2**32 + 3`` must be refused,
never wrapped to 3, on every surface). Each check raises a typed error from
:mod:`illia_export.errors` that names the input, the problem and the fix.

Only numpy and the artifact's specs are imported here (no backend), so the server can check a
request before it joins a batch.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from illia_export.artifact.manifest import BATCH_DIM, TensorSpec
from illia_export.errors import InputError, ShapeError

#: Seeds are 64-bit: ``[0, 2**64)`` (the generators mix the seed as an unsigned 64-bit word).
SEED_LIMIT = 2**64


# --------------------------------------------------------------------------- scalars
def check_count(value: Any, name: str, allow_none: bool = False) -> int | None:
    """A positive integer (``num_samples``, ``chunk_size``); bools and floats are refused."""
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise InputError(f"`{name}` (={value!r}) must be {'None or ' if allow_none else ''}a positive integer")
    return int(value)


def check_seed(seed: Any, allow_none: bool, what: str = "`seed`") -> int | None:
    """Seeds are integers in ``[0, 2**64)``; refuse anything else instead of wrapping it."""
    if seed is None and allow_none:
        return None
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise InputError(f"{what} (={seed!r}) must be {'None or ' if allow_none else ''}an integer in [0, 2**64)")
    seed = int(seed)
    if not 0 <= seed < SEED_LIMIT:
        raise InputError(f"{what} (={seed}) must lie in [0, 2**64) = [0, {SEED_LIMIT - 1}]")
    return seed


def check_row_ids(row_ids: Any, batch: int) -> np.ndarray:
    """The 64-bit words of `row_ids` (docs/noise.md, "Row-keyed noise"), one per row."""
    from illia_export.runtime.noise import row_words

    try:
        words = row_words(row_ids)
    except (TypeError, ValueError) as exc:
        raise InputError(f"`row_ids`: {exc}") from exc
    if len(words) != batch:
        raise InputError(f"`row_ids` has {len(words)} ids for a batch of {batch} rows; give one id per row")
    return words


# --------------------------------------------------------------------------- arrays
def gather(specs: Sequence[TensorSpec], x: Any) -> list[Any]:
    """The caller's input(s) in manifest order: one array, a list (manifest order) or a dict."""
    names = [s.name for s in specs]
    if isinstance(x, Mapping):
        unknown = sorted(str(k) for k in set(x) - set(names))
        missing = [n for n in names if n not in x]
        if unknown or missing:
            raise ShapeError(
                f"inputs {sorted(str(k) for k in x)} do not match the model's inputs {names} "
                f"(missing {missing}, unknown {unknown})"
            )
        return [x[n] for n in names]
    if isinstance(x, (list, tuple)):
        if len(x) != len(specs):
            raise ShapeError(f"the model takes {len(specs)} inputs {names}, got {len(x)} arrays")
        return list(x)
    if len(specs) != 1:
        raise ShapeError(f"the model takes {len(specs)} inputs {names}; pass a list or a dict")
    return [x]


def check_int_fit(name: str, arr: np.ndarray, want: np.dtype, error: type[Exception] = InputError) -> None:
    """Integer data must fit the input's integer dtype before it is cast (a cast wraps:
    ``2**32 + 3`` would become 3 in int32)."""
    if want.kind not in "iu" or not arr.size or arr.dtype == want:
        return
    info = np.iinfo(want)
    lo, hi = int(arr.min()), int(arr.max())
    if lo < info.min or hi > info.max:
        bad = lo if lo < info.min else hi
        raise error(
            f"input {name!r}: value {bad} does not fit {want} (range [{info.min}, {info.max}]); "
            "casting would wrap it to another id"
        )


def check_shape(
    name: str, shape: Sequence[int], spec: TensorSpec, bound: dict[str, int], expected: Any
) -> None:
    """Rank, fixed dims, symbolic dims equal across inputs (`bound` collects them), no empty batch.
    `expected`: the shape as the caller names it in errors (a string, or a callable building it
    only when an error needs it)."""
    shape = list(shape)
    if callable(expected):
        ok = len(shape) == len(spec.shape) and all(
            (got == dim) if isinstance(dim, int) else (bound.get(dim, got) == got)
            for dim, got in zip(spec.shape, shape)
        )
        expected = "" if ok else expected()
    if len(shape) != len(spec.shape):
        raise ShapeError(f"input {name!r} must have shape {expected}, got {shape} (rank {len(shape)})")
    for axis, (dim, got) in enumerate(zip(spec.shape, shape)):
        if isinstance(dim, int):
            if got != dim:
                raise ShapeError(f"input {name!r} must have shape {expected}, got {shape} (axis {axis})")
        elif dim in bound and bound[dim] != got:
            raise ShapeError(
                f"input {name!r} must have shape {expected}: dim {dim!r} is {bound[dim]} in another input, got {got}"
            )
        else:
            bound[dim] = int(got)
    if shape[:1] == [0] or (BATCH_DIM in spec.shape and shape[spec.shape.index(BATCH_DIM)] == 0):
        raise ShapeError(
            f"input {name!r} is empty (batch of 0): shape {shape}; pass at least one row"
        )


def check_values(spec: TensorSpec, arr: np.ndarray, allow_nonfinite: bool = False, hint: bool = True) -> None:
    """Refuse NaN/inf floats (unless allowed) and integers outside the input's ``range``
    (non-negative without one: an ONNX vectorized embedding would read another sample's rows)."""
    if arr.dtype.kind == "f" and not allow_nonfinite:
        bad = ~np.isfinite(arr)
        if bad.any():
            first = np.unravel_index(int(np.argmax(bad)), arr.shape)
            raise InputError(
                f"input {spec.name!r} holds {int(bad.sum())} non-finite values (NaN, inf, or beyond {arr.dtype} "
                f"range), the first at index {list(map(int, first))}; the model's outputs for them would be "
                "meaningless. Clean the data"
                + (", or pass allow_nonfinite=True (CLI: --allow-nonfinite) to run anyway" if hint else "")
            )
    elif arr.dtype.kind in "iu" and arr.size:
        low, high = spec.range if spec.range is not None else (0, None)
        lo_val, hi_val = int(arr.min()), int(arr.max())
        if lo_val < low or (high is not None and hi_val >= high):
            bad_val = lo_val if lo_val < low else hi_val
            where = [int(i) for i in np.argwhere(arr == bad_val)[0]]
            allowed = f"[{low}, {high})" if high is not None else f">= {low}"
            raise InputError(
                f"input {spec.name!r}: value {bad_val} at index {where} is outside the model's values {allowed}"
                + (" (token ids: the vocabulary)" if spec.range is not None and low == 0 else "")
                + ("" if spec.range is not None else " (the manifest records no range; negative ids are never valid)")
            )


def spec_dtype(spec: TensorSpec) -> np.dtype:
    """The numpy dtype of an input (bfloat16, which numpy lacks, takes float32 data)."""
    try:
        return np.dtype(spec.dtype)
    except TypeError:
        return np.dtype(np.float32)


def check_array(spec: TensorSpec, value: Any, bound: dict[str, int]) -> np.ndarray:
    """One input as a contiguous array of the manifest's dtype: floats cast to its float dtype,
    integers (that fit) to its integer dtype; any other kind, rank or size is a ShapeError."""
    try:
        arr = np.asarray(value)
    except (ValueError, TypeError) as exc:
        raise ShapeError(f"input {spec.name!r} is not an array: {exc}") from exc
    if arr.dtype.kind not in "fiub":
        raise ShapeError(f"input {spec.name!r} must be a numeric array ({spec.dtype}), got dtype {arr.dtype}")
    want = np.dtype(spec.dtype)

    def expected() -> str:
        return f"[{', '.join(str(d) for d in spec.shape)}] {spec.dtype}"

    if arr.dtype != want:
        same_kind = (arr.dtype.kind == "f" and want.kind == "f") or (arr.dtype.kind in "iu" and want.kind in "iu")
        if not same_kind:
            raise ShapeError(f"input {spec.name!r} must be {expected()}, got dtype {arr.dtype}")
        check_int_fit(spec.name, arr, want, error=ShapeError)
        arr = arr.astype(want)
    check_shape(spec.name, arr.shape, spec, bound, expected)
    return np.ascontiguousarray(arr)


def prepare(specs: Sequence[TensorSpec], x: Any, allow_nonfinite: bool = False) -> tuple[list[np.ndarray], int]:
    """Check `x` against the manifest's inputs; ``(arrays in manifest order, batch size)``."""
    values = gather(specs, x)
    bound: dict[str, int] = {}
    arrays = [check_array(spec, value, bound) for spec, value in zip(specs, values)]
    for spec, arr in zip(specs, arrays):
        check_values(spec, arr, allow_nonfinite)
    batch = bound.get(BATCH_DIM, arrays[0].shape[0] if arrays and arrays[0].ndim else 1)
    return arrays, int(batch)


def symbolic_sizes(specs: Sequence[TensorSpec], shapes: Sequence[Sequence[int]]) -> dict[str, int]:
    """Each symbolic dim's size: from the first input (manifest order) that has it (dims.md)."""
    sizes: dict[str, int] = {}
    for spec, shape in zip(specs, shapes):
        for dim, got in zip(spec.shape, shape):
            if isinstance(dim, str) and dim not in sizes:
                sizes[dim] = int(got)
    return sizes
