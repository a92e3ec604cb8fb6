"""Score one table of rows: the step every engine (in-process, Ray actors) runs per batch."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from illia_export.errors import InputError, StrategyError, require
from illia_export.scale.columns import ROW_COLUMN, columns_table
from illia_export.scale.inputs import model_inputs


@dataclass(frozen=True)
class ScoreSettings:
    """How to score: the same on every worker (the seed is fixed by the driver).

    Attributes:
        num_samples: S, Monte Carlo samples per row.
        seed: the noise seed; every engine resolves ``None`` to one seed for the whole run.
        strategy: ``fresh``, ``bank`` or ``local``.
        chunk_size: samples per graph call (memory bound; results do not depend on it).
        task: override the manifest's task.
        id_column: the column of stable row ids; ``None`` uses the ``row`` index column the
            file readers add (absent on a caller's Dataset: then only artifacts without
            per-example noise can be scored).
        columns: feature columns stacked into the model's single input (default: the input's
            own column, else every column but the id).
        allow_nonfinite: accept NaN/inf features.
        keep_inputs: copy the input table's columns before the prediction columns (default:
            only the id column and the predictions).
    """

    num_samples: int = 64
    seed: int | None = None
    strategy: str = "fresh"
    chunk_size: int | None = None
    task: str | None = None
    id_column: str | None = None
    columns: tuple[str, ...] | None = field(default=None)
    allow_nonfinite: bool = False
    keep_inputs: bool = False

    def id_name(self, table_columns) -> str | None:
        """The id column of a table: the named one, else ``row`` when present."""
        if self.id_column is not None:
            return self.id_column
        return ROW_COLUMN if ROW_COLUMN in table_columns else None


def check_ids_needed(predictor, settings: ScoreSettings, has_ids: bool) -> None:
    """Refuse, before any work, a run whose rows' noise would depend on the partitioning."""
    keyed = predictor.row_keyed_streams(settings.strategy)
    if keyed and not has_ids:
        names = [(predictor._local_specs() if settings.strategy == "local" else predictor.manifest.noise)[k].name
                 for k in keyed]
        raise StrategyError(
            f"strategy {settings.strategy!r} on {predictor.path.name} draws per-example noise ({', '.join(names)}), "
            "which must be keyed by a stable row id to give the same answer however the rows are "
            "partitioned: name an id column (id_column / --id-column), or score a file (its row index is used)"
        )


def table_ids(table, settings: ScoreSettings, row_start: int = 0):
    """(id column name or None, the Arrow column or None, the ids as numpy or None), checked:
    no null ids, no NaN ids (a NaN cannot key a row: it equals nothing). Errors name the row
    (``row_start`` + its index in `table`)."""
    import numpy as np

    id_name = settings.id_name(table.column_names)
    if id_name is not None and id_name not in table.column_names:
        raise InputError(f"id column {id_name!r} is not in the table (has {table.column_names})")
    if id_name is None:
        return None, None, None
    ids_col = table.column(id_name)
    if ids_col.null_count:
        nulls = ids_col.is_null().to_numpy(zero_copy_only=False) if hasattr(ids_col, "is_null") else None
        where = f" at row {row_start + int(np.argmax(nulls))}" if nulls is not None else ""
        raise InputError(f"id column {id_name!r} has a missing (null) id{where}; every row needs an id")
    ids = ids_col.to_numpy(zero_copy_only=False)
    if ids.dtype.kind == "f":
        finite = np.isfinite(ids)
        where = f"; row {row_start + int(np.argmax(~finite))} has {ids[int(np.argmax(~finite))]}" if not finite.all() else ""
        raise InputError(
            f"id column {id_name!r} holds floats{where}: ids must be integers or strings (a float id is not "
            "a stable key: NaN equals nothing); cast the column"
        )
    if ids.dtype.kind not in "iu" and not all(isinstance(v, (str, bytes)) for v in ids[:1]):
        raise InputError(f"id column {id_name!r} holds {ids_col.type}; ids must be integers or strings")
    return id_name, ids_col, ids


def check_table(predictor, table, settings: ScoreSettings, row_start: int = 0) -> None:
    """Every check :func:`score_table` makes before predicting (ids, columns, types, shapes),
    without predicting: the Ray engine runs it on the driver so that bad rows fail there with
    the same typed error as the local engine, naming the column and the row."""
    id_name, _, ids = table_ids(table, settings, row_start)
    check_ids_needed(predictor, settings, ids is not None)
    exclude = (id_name,) if id_name is not None else ()
    inputs = model_inputs(table, predictor.manifest, list(settings.columns) if settings.columns else None, exclude,
                          row_start)
    predictor.prepare_inputs(inputs, allow_nonfinite=settings.allow_nonfinite)


def score_table(predictor, table, settings: ScoreSettings, row_start: int = 0):
    """Prediction columns for the rows of a pyarrow Table: the id column (when there is one),
    then one column per ``Prediction`` summary."""
    require("pyarrow", "scale", "batch scoring")
    if settings.seed is None:
        raise InputError("score_table needs an explicit seed (one seed for the whole run)")
    id_name, ids_col, ids = table_ids(table, settings, row_start)
    check_ids_needed(predictor, settings, ids is not None)
    exclude = (id_name,) if id_name is not None else ()
    inputs = model_inputs(table, predictor.manifest, list(settings.columns) if settings.columns else None, exclude,
                          row_start)
    pred = predictor.predict(
        inputs,
        num_samples=settings.num_samples,
        seed=settings.seed,
        strategy=settings.strategy,
        chunk_size=settings.chunk_size,
        task=settings.task,
        allow_nonfinite=settings.allow_nonfinite,
        row_ids=ids,
    )
    out = columns_table(pred.summary_arrays(), ids=(id_name, ids_col) if ids_col is not None else None)
    if settings.keep_inputs:
        clash = [c for c in out.column_names if c in table.column_names and c != id_name]
        if clash:
            raise InputError(f"input columns {clash} have the names of prediction columns; rename them to keep inputs")
        for name in out.column_names:
            if name != id_name:
                table = table.append_column(name, out.column(name))
        return table
    return out


class BatchScorer:
    """A callable class for Ray Data's ``map_batches``: loads the artifact once per actor, with
    as many backend threads as CPUs the actor was given, warmed up before the first batch."""

    def __init__(self, artifact: str, settings: ScoreSettings, threads: int | None = None, device: str = "cpu",
                 **load_options: Any) -> None:
        from illia_export.runtime import load

        self.settings = settings
        self.predictor = load(artifact, device=device, threads=threads or assigned_threads(), warmup=True,
                              **load_options)

    def __call__(self, batch):
        return score_table(self.predictor, batch, self.settings)


def assigned_threads() -> int:
    """Backend threads for this worker: the CPUs Ray assigned to it (at least 1), or this
    process's usable cores outside Ray. onnxruntime would otherwise use every core of the node."""
    try:
        import ray

        if ray.is_initialized():
            cpus = ray.get_runtime_context().get_assigned_resources().get("CPU")
            if cpus:
                return max(1, int(cpus))
    except Exception:  # not in a Ray worker
        pass
    from illia_export.runtime.predictor import default_threads

    return default_threads()
