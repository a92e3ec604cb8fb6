"""Example inputs of a PyTorch export: checked tensors, names, dynamic axes, resized copies."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from illia_export.artifact import manifest as mf
from illia_export.errors import ExportError, ShapeError

DTYPES = {"float32", "float64", "int64", "int32"}


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
    """Dynamic axes per input: the batch, the sequence axis of token inputs, and the user's extras."""
    axes_list = []
    for i, x in enumerate(inputs):
        axes = {0: mf.BATCH_DIM}
        if not x.is_floating_point() and x.dim() >= 2:
            axes[1] = "seq_len"  # token inputs: the sequence axis is dynamic too
        extra = (dynamic_axes or {}).get(names[i], (dynamic_axes or {}).get(i))
        if extra:
            axes.update({int(k): str(v) for k, v in extra.items()})
        axes_list.append(axes)
    return axes_list


def spec_shape(x, axes: dict[int, str]) -> list[mf.Dim]:
    return [axes.get(d, int(s)) for d, s in enumerate(x.shape)]


def resize(inputs: Sequence[Any], axes_list: Sequence[dict[int, str]], batch: int, extra_len: int = 0) -> list[Any]:
    """Inputs tiled to `batch` rows (and, for token inputs, `extra_len` more steps)."""
    import torch

    out = []
    for x, axes in zip(inputs, axes_list):
        idx = torch.arange(batch) % x.shape[0]
        y = x.index_select(0, idx)
        if extra_len and 1 in axes and axes[1] != mf.BATCH_DIM:
            steps = torch.arange(y.shape[1] + extra_len) % y.shape[1]
            y = y.index_select(1, steps)
        out.append(y)
    return out
