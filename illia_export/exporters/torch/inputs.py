"""Example inputs of a PyTorch export: checked tensors, names, dynamic axes, resized copies.

Every input axis is fixed at the example's size except the named dynamic ones: axis 0
(``"batch"``), axis 1 of integer token inputs (``"seq_len"``) and whatever the user names or
fixes through ``dynamic_axes``. Discovery and validation run the model at other sizes of those
dims (:func:`resize_to`), which is how a noise dim learns which input dim it follows.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import numpy as np

from illia_export.artifact import manifest as mf
from illia_export.errors import ExportError, ShapeError

DTYPES = {"float32", "float64", "int64", "int32"}
#: The default name of the sequence axis (axis 1) of integer token inputs.
SEQ_DIM = "seq_len"
_DIM_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def as_inputs(example_inputs) -> list[Any]:
    """One tensor per model input (numpy arrays converted), each with a batch axis."""
    import torch

    items = list(example_inputs) if isinstance(example_inputs, (tuple, list)) else [example_inputs]
    out = []
    for i, x in enumerate(items):
        if isinstance(x, np.ndarray):
            x = torch.from_numpy(x)
        if not isinstance(x, torch.Tensor):
            raise ShapeError(f"example input {i} must be a tensor or numpy array, got {type(x).__name__}")
        if x.dim() < 1:
            raise ShapeError(f"example input {i} needs a batch axis, got a scalar")
        if x.shape[0] < 1:
            raise ShapeError(f"example input {i} has an empty batch")
        if dtype_name(x) not in DTYPES:
            raise ShapeError(f"example input {i} has dtype {x.dtype}; supported: {sorted(DTYPES)}")
        out.append(x)
    return out


def dtype_name(x) -> str:
    return str(x.dtype).replace("torch.", "")


def default_names(prefix: str, count: int) -> list[str]:
    return [prefix] if count == 1 else [f"{prefix}_{i}" for i in range(count)]


def check_names(names: Sequence[str], count: int, what: str) -> list[str]:
    names = list(names)
    if len(names) != count:
        raise ExportError(f"{len(names)} {what} names given for {count} {what}s")
    for name in names:
        if not isinstance(name, str) or not name.isidentifier():
            raise ExportError(f"{what} name {name!r} must be a valid identifier")
        if name.startswith("eps_"):
            raise ExportError(f"{what} name {name!r} starts with 'eps_', which is reserved for noise inputs")
    return names


def input_axes(inputs: Sequence[Any], names: Sequence[str], dynamic_axes: dict | None) -> list[dict[int, str]]:
    """Dynamic axes per input: the batch, the sequence axis of token inputs, and the user's choices.

    `dynamic_axes` maps an input (index or name) to ``{axis: name}``: a name makes that axis
    dynamic under it (inputs that share a name share the size), ``None`` fixes the axis at the
    example's size (e.g. ``{"input_ids": {1: None}}`` for a fixed sequence length). Axis 0 is
    always the batch.
    """
    dynamic_axes = dict(dynamic_axes or {})
    known = set(range(len(inputs))) | set(names)
    unknown = [k for k in dynamic_axes if k not in known]
    if unknown:
        raise ExportError(
            f"dynamic_axes names inputs {unknown}, which the model does not have; its inputs are {list(names)} "
            f"(or indices 0..{len(inputs) - 1})"
        )
    axes_list = []
    for i, x in enumerate(inputs):
        axes: dict[int, str] = {0: mf.BATCH_DIM}
        if not x.is_floating_point() and x.dim() >= 2:
            axes[1] = SEQ_DIM  # token inputs: the sequence axis is dynamic too
        for key in (i, names[i]):
            extra = dynamic_axes.get(key)
            if extra is None:
                continue
            if not isinstance(extra, dict):
                raise ExportError(
                    f"dynamic_axes[{key!r}] must be a dict {{axis: name or None}}, got {type(extra).__name__}"
                )
            for axis, name in extra.items():
                axes_update(axes, x, names[i], axis, name)
        axes_list.append(axes)
    return axes_list


def default_axes_fixing(
    inputs: Sequence[Any], names: Sequence[str], dynamic_axes: dict | None, dims: set[str]
) -> dict | None:
    """`dynamic_axes` with the default (not user-named) axes called one of `dims` fixed, or None
    when one of `dims` was named by the user (then it is theirs to fix)."""
    user = dict(dynamic_axes or {})
    for extra in user.values():
        if isinstance(extra, dict) and set(map(str, extra.values())) & dims:
            return None
    out = {k: dict(v) if isinstance(v, dict) else v for k, v in user.items()}
    for i, axes in enumerate(input_axes(inputs, names, dynamic_axes)):
        for axis, name in axes.items():
            if name in dims:
                out.setdefault(i, {})[axis] = None
    return out


def axes_update(axes: dict[int, str], x, input_name: str, axis: Any, name: Any) -> None:
    """Set one axis of `axes` from the user's choice (a dim name, or None to fix it)."""
    if isinstance(axis, str) and axis.isdigit():  # JSON keys
        axis = int(axis)
    if isinstance(axis, bool) or not isinstance(axis, int) or not 0 <= axis < x.dim():
        raise ExportError(f"dynamic axis {axis!r} of input {input_name!r} is not an axis of its shape {list(x.shape)}")
    if axis == 0:
        if name != mf.BATCH_DIM:
            raise ExportError(
                f"axis 0 of input {input_name!r} is the batch axis, always dynamic and named 'batch'; got {name!r}"
            )
        return
    if name is None:
        axes.pop(axis, None)
        return
    if not isinstance(name, str) or not _DIM_NAME.match(name) or name == mf.SAMPLE_DIM:
        raise ExportError(
            f"dynamic axis {axis} of input {input_name!r} is named {name!r}: a dim name must be an identifier "
            f"other than {mf.SAMPLE_DIM!r} (or None to fix the axis)"
        )
    if name == mf.BATCH_DIM:
        raise ExportError(f"axis {axis} of input {input_name!r} cannot be named 'batch': only axis 0 is the batch")
    axes[axis] = name


def spec_shape(x, axes: dict[int, str]) -> list[mf.Dim]:
    return [axes.get(d, int(s)) for d, s in enumerate(x.shape)]


def base_sizes(inputs: Sequence[Any], axes_list: Sequence[dict[int, str]]) -> dict[str, int]:
    """``{dim name: size}`` of the examples; an input that disagrees on a shared name is an error."""
    sizes: dict[str, int] = {}
    for i, (x, axes) in enumerate(zip(inputs, axes_list)):
        for axis, name in axes.items():
            size = int(x.shape[axis])
            if sizes.setdefault(name, size) != size and name != mf.BATCH_DIM:
                raise ShapeError(
                    f"dim {name!r} is {sizes[name]} in one example input and {size} at axis {axis} of input {i}: "
                    "inputs that share a dim name need the same size"
                )
    return sizes


def resize_to(inputs: Sequence[Any], axes_list: Sequence[dict[int, str]], sizes: dict[str, int]) -> list[Any]:
    """Inputs with every named axis tiled (cyclically) to ``sizes[name]``."""
    import torch

    out = []
    for x, axes in zip(inputs, axes_list):
        y = x
        for axis, name in axes.items():
            if name in sizes and sizes[name] != y.shape[axis]:
                idx = torch.arange(sizes[name]) % x.shape[axis]
                y = y.index_select(axis, idx)
        out.append(y)
    return out


def resize(inputs: Sequence[Any], axes_list: Sequence[dict[int, str]], batch: int, extra_len: int = 0) -> list[Any]:
    """Inputs tiled to `batch` rows and every other dynamic axis `extra_len` longer."""
    sizes = {mf.BATCH_DIM: batch}
    if extra_len:
        for x, axes in zip(inputs, axes_list):
            for axis, name in axes.items():
                if name != mf.BATCH_DIM:
                    sizes.setdefault(name, int(x.shape[axis]) + extra_len)
    return resize_to(inputs, axes_list, sizes)
