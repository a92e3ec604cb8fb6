"""Rows -> model inputs: ``.npy``/``.npz`` arrays, or table columns named after the manifest's
inputs, or numeric feature columns stacked into the single input."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from illia_export.errors import ArtifactError, ShapeError


def load_inputs(path: str, input_names: list[str]) -> dict[str, np.ndarray]:
    """Read the model inputs from a .npy or .npz file, by input name."""
    p = Path(path)
    if not p.exists():
        raise ArtifactError(f"input file not found: {p}")
    if p.is_dir():
        raise ArtifactError(f"input {p} is a folder, not a .npy/.npz file")
    try:
        data = np.load(p, allow_pickle=False)
        if isinstance(data, np.ndarray):
            if len(input_names) != 1:
                raise ShapeError(
                    f"{p} holds one array but the model takes inputs {input_names}: "
                    "use a .npz with one array per input name"
                )
            return {input_names[0]: data}
        if not hasattr(data, "keys"):
            raise ValueError(f"expected an array, got {type(data).__name__}")
        with data:
            keys = list(data.keys())
            if len(input_names) == 1 and len(keys) == 1:
                return {input_names[0]: data[keys[0]]}
            missing = [n for n in input_names if n not in keys]
            if missing:
                raise ShapeError(
                    f"{p} must hold one array per model input {input_names}; missing {missing} (has {keys})"
                )
            return {n: data[n] for n in input_names}
    except ShapeError:
        raise
    except Exception as exc:  # ValueError (pickled/object arrays), EOFError (empty), BadZipFile (bad CRC), ...
        detail = " ".join(str(exc).split()) or type(exc).__name__
        raise ArtifactError(f"cannot read {p} as .npy/.npz: {detail}") from exc


def _first(mask: np.ndarray) -> int:
    return int(np.argmax(mask))


def _column_array(col, name: str, row_start: int = 0) -> np.ndarray:
    """One Arrow column as a numpy array ``[rows, ...]`` (list and tensor columns stacked).
    Problems name the column and the first bad row (``row_start`` + its index in `col`)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    arr = col.combine_chunks() if isinstance(col, pa.ChunkedArray) else col
    if isinstance(arr.type, pa.ExtensionType):  # e.g. Ray Data's tensor columns
        if hasattr(arr, "to_numpy"):
            try:
                return np.asarray(arr.to_numpy())
            except (pa.ArrowException, ValueError) as exc:  # ragged tensors
                raise ShapeError(f"column {name!r} holds tensors of different shapes ({' '.join(str(exc).split())[:160]})") from exc
        arr = arr.storage
    rows = len(arr)
    dims = []
    # row index of each element at the current nesting level (lists flatten several per row)
    owner = np.arange(rows)
    while pa.types.is_list(arr.type) or pa.types.is_large_list(arr.type) or pa.types.is_fixed_size_list(arr.type):
        if arr.null_count:
            nulls = arr.is_null().to_numpy(zero_copy_only=False)
            raise ShapeError(f"column {name!r} has a missing (null) value at row {row_start + int(owner[_first(nulls)])}")
        lengths = pc.list_value_length(arr).to_numpy(zero_copy_only=False)
        if len(lengths) and (lengths != lengths[0]).any():
            bad = _first(lengths != lengths[0])
            raise ShapeError(
                f"column {name!r} has lists of different lengths ({int(lengths.min())}..{int(lengths.max())}): "
                f"row {row_start + int(owner[bad])} has {int(lengths[bad])} values where row "
                f"{row_start + int(owner[0])} has {int(lengths[0])}; every row must have the same shape"
            )
        dims.append(int(lengths[0]) if len(lengths) else 0)
        owner = np.repeat(owner, lengths.astype(np.int64))
        arr = arr.flatten()
    if not (pa.types.is_integer(arr.type) or pa.types.is_floating(arr.type) or pa.types.is_boolean(arr.type)):
        raise ShapeError(f"column {name!r} holds {arr.type}, not numbers (convert it, or leave it out with --columns)")
    if arr.null_count:
        nulls = arr.is_null().to_numpy(zero_copy_only=False)
        raise ShapeError(f"column {name!r} has a missing (null) value at row {row_start + int(owner[_first(nulls)])}")
    return arr.to_numpy(zero_copy_only=False).reshape((rows, *dims))


def _cast(values: np.ndarray, spec, what: str) -> np.ndarray:
    want = np.dtype(spec.dtype)
    if values.dtype == want:
        return values
    if want.kind in "iu" and values.dtype.kind not in "iub":
        raise ShapeError(f"{what} holds {values.dtype} values but input {spec.name!r} takes {want} (integer ids)")
    return values.astype(want)


def model_inputs(table, manifest, columns: list[str] | None = None, exclude: tuple[str, ...] = (),
                 row_start: int = 0) -> dict:
    """The model's inputs from a pyarrow Table.

    Each manifest input is read from the column of its name. A model with one input and no
    such column takes the numeric scalar columns (`columns`, in that order, or every column
    but `exclude`), stacked as its features ``[rows, F]``. Errors name the row as
    ``row_start`` + its index in `table` (the file's row number when the caller knows it).
    """
    specs = manifest.inputs
    names = table.column_names
    if columns is None and all(s.name in names for s in specs):
        return {
            s.name: _cast(_column_array(table.column(s.name), s.name, row_start), s, f"column {s.name!r}") for s in specs
        }
    if len(specs) != 1:
        missing = [s.name for s in specs if s.name not in names]
        raise ShapeError(
            f"the model takes inputs {[s.name for s in specs]}: the table needs one column per input; "
            f"missing {missing} (has {names})"
        )
    spec = specs[0]
    chosen = list(columns) if columns is not None else [n for n in names if n not in exclude]
    unknown = [c for c in chosen if c not in names]
    if unknown:
        raise ShapeError(f"feature columns {unknown} are not in the table (has {names})")
    if not chosen:
        raise ShapeError(f"the table has no feature columns for input {spec.name!r} (has {names})")
    feats = []
    for c in chosen:
        a = _column_array(table.column(c), c, row_start)
        if a.ndim != 1:
            raise ShapeError(
                f"column {c!r} holds arrays; name it {spec.name!r} (the model's input) to feed it whole, "
                "or give scalar feature columns"
            )
        feats.append(a)
    x = np.stack(feats, axis=1)
    per_row = spec.shape[1:]
    if per_row and all(isinstance(d, int) for d in per_row):
        size = int(np.prod(per_row))
        if x.shape[1] != size:
            raise ShapeError(
                f"input {spec.name!r} takes {size} features per row ({list(per_row)}); the table gives "
                f"{x.shape[1]} feature columns {chosen}"
            )
        x = x.reshape((len(x), *per_row))
    return {spec.name: _cast(x, spec, f"feature columns {chosen}")}


def arrays_table(arrays: dict[str, np.ndarray], row_start: int = 0):
    """Arrays by input name (batch-first) as a table, with the row index column."""
    import pyarrow as pa

    from illia_export.scale.columns import ROW_COLUMN, to_arrow_column

    rows = {len(a) for a in arrays.values()}
    if len(rows) != 1:
        raise ShapeError(f"the inputs have different numbers of rows: { {k: len(a) for k, a in arrays.items()} }")
    (n,) = rows
    cols = {ROW_COLUMN: pa.array(np.arange(row_start, row_start + n, dtype=np.int64))}
    cols.update({k: to_arrow_column(np.asarray(a)) for k, a in arrays.items()})
    return pa.table(cols)
