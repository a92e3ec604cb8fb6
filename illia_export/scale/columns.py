"""Prediction summaries as table columns: one row per input row, list columns for arrays."""

from __future__ import annotations

from typing import Any

import numpy as np

from illia_export.errors import require

#: Column holding the row index when the caller names no id column.
ROW_COLUMN = "row"
#: Parquet key-value metadata keys, under this prefix.
META_PREFIX = "illia_export."


def to_arrow_column(values: np.ndarray):
    """A batch-first array as an Arrow column: scalars per row stay scalars, an array per row
    becomes a (nested) list column, so any Parquet reader gets plain lists."""
    pa = require("pyarrow", "scale", "table output")
    values = np.asarray(values)
    if values.ndim == 1:
        return pa.array(values)
    flat = pa.array(np.ascontiguousarray(values).reshape(-1))
    for size in reversed(values.shape[1:]):
        flat = pa.FixedSizeListArray.from_arrays(flat, int(size)).cast(pa.list_(flat.type))
    return flat


def columns_table(columns: dict[str, np.ndarray], ids: tuple[str, Any] | None = None):
    """A pyarrow Table of the id column (if any) followed by the summary columns."""
    pa = require("pyarrow", "scale", "table output")
    names, arrays = [], []
    if ids is not None:
        names.append(ids[0])
        arrays.append(ids[1] if isinstance(ids[1], (pa.Array, pa.ChunkedArray)) else pa.array(ids[1]))
    for name, values in columns.items():
        names.append(name)
        arrays.append(to_arrow_column(values))
    return pa.table(arrays, names=names)


def run_metadata(predictor, settings, seed: int) -> dict[str, str]:
    """What reproduces a scoring run, stored in every output file (Parquet key-value metadata)."""
    m = predictor.manifest
    meta = {
        "artifact": predictor.path.name,
        "artifact_digest": str(m.digest or ""),
        "seed": str(seed),
        "num_samples": str(settings.num_samples),
        "strategy": settings.strategy,
        "noise_generator": predictor.generator,
        "task": settings.task or m.task,
        "row_ids": settings.id_column or f"{ROW_COLUMN} (row index)",
    }
    return {META_PREFIX + k: v for k, v in meta.items()}
