"""Score a Parquet or NumPy file, in this process or on Ray, to a Parquet file.

Both engines read the same rows, key them by the same ids and write the same columns, so the
output is the same per row (up to float rounding across machines) whichever engine ran it.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from illia_export.errors import ArtifactError, InputError, require
from illia_export.scale.columns import ROW_COLUMN, run_metadata
from illia_export.scale.inputs import arrays_table, load_inputs
from illia_export.scale.ray_engine import DEFAULT_BATCH_SIZE
from illia_export.scale.scorer import ScoreSettings, check_ids_needed, score_table

ENGINES = ("local", "ray")
#: Input file types.
INPUT_SUFFIXES = (".parquet", ".npy", ".npz")


@dataclass
class ScoreRun:
    """What a scoring run did: rows scored, the seed (reproduces it), the output written (or the
    table, when no output was asked), the engine and the seconds it took."""

    rows: int
    seed: int
    engine: str
    seconds: float
    output: Path | None = None
    table: Any = None


def _check_row_column(names: list[str], settings: ScoreSettings, path: Path) -> None:
    if settings.id_column is None and ROW_COLUMN in names:
        raise InputError(
            f"{path.name} has a column named {ROW_COLUMN!r}, the name of the row index the scorer adds: "
            f"pass id_column={ROW_COLUMN!r} (--id-column {ROW_COLUMN}) to use it as the row id, or rename it"
        )


def _local_batches(path: Path, predictor, settings: ScoreSettings, batch_size: int):
    """Tables of at most `batch_size` rows, with the ``row`` index column unless an id column
    is named."""
    pa = require("pyarrow", "scale", "batch scoring")
    if path.suffix.lower() == ".parquet":
        import pyarrow.parquet as pq

        try:
            pf = pq.ParquetFile(path)
        except Exception as exc:
            raise ArtifactError(f"cannot read {path} as Parquet: {' '.join(str(exc).split())}") from exc
        _check_row_column(pf.schema_arrow.names, settings, path)
        start = 0
        for batch in pf.iter_batches(batch_size=batch_size):
            table = pa.Table.from_batches([batch])
            if settings.id_column is None:
                table = table.append_column(ROW_COLUMN, pa.array(np.arange(start, start + len(table), dtype=np.int64)))
            start += len(table)
            yield table
        return
    arrays = load_inputs(str(path), [t.name for t in predictor.manifest.inputs])
    n = len(next(iter(arrays.values())))
    for start in range(0, n, batch_size):
        yield arrays_table({k: a[start : start + batch_size] for k, a in arrays.items()}, row_start=start)


def _ray_dataset(path: Path, predictor, settings: ScoreSettings, actors: int):
    import ray

    pa = require("pyarrow", "scale", "batch scoring")
    if path.suffix.lower() == ".parquet":
        if settings.id_column is not None:  # stable ids: let the cluster read the file
            return ray.data.read_parquet(str(path), override_num_blocks=2 * actors)
        # No id column: the row index is the id, assigned here in file order.
        import pyarrow.parquet as pq

        try:
            table = pq.read_table(path)
        except Exception as exc:
            raise ArtifactError(f"cannot read {path} as Parquet: {' '.join(str(exc).split())}") from exc
        _check_row_column(table.column_names, settings, path)
        table = table.append_column(ROW_COLUMN, pa.array(np.arange(len(table), dtype=np.int64)))
    else:
        table = arrays_table(load_inputs(str(path), [t.name for t in predictor.manifest.inputs]))
    blocks = max(1, min(len(table) // 1024 or 1, 4 * actors))
    return ray.data.from_arrow(table, override_num_blocks=blocks)


def score_file(
    artifact: str | os.PathLike,
    input_path: str | os.PathLike,
    output: str | os.PathLike | None = None,
    *,
    engine: str = "local",
    batch_size: int = DEFAULT_BATCH_SIZE,
    address: str | None = None,
    actors: int | None = None,
    cpus_per_actor: float | None = None,
    threads: int | None = None,
    device: str = "cpu",
    progress: bool = False,
    settings: ScoreSettings | None = None,
    **options: Any,
) -> ScoreRun:
    """Score every row of a ``.parquet``/``.npy``/``.npz`` file.

    Rows are keyed by the `id_column` (a setting) or else by their index in the file, so the
    answer for a row does not depend on `batch_size`, the engine or the actor count.

    Args:
        artifact: the exported model.
        input_path: a Parquet file (a column per model input, or numeric feature columns), a
            ``.npy`` (one input) or a ``.npz`` (one array per input name).
        output: a ``.parquet`` file to write (atomically; the run's seed, S, strategy and the
            artifact's digest go into its metadata); ``None`` returns the table instead.
        engine: ``"local"`` (this process) or ``"ray"`` (Ray Data; a local instance unless
            `address` names a cluster).
        batch_size: rows per graph call.
        address, actors, cpus_per_actor, threads: the Ray cluster and actor pool.
        settings / options: :class:`ScoreSettings` or its fields (``num_samples``, ``seed``,
            ``strategy``, ``id_column``, ...).

    Returns:
        A :class:`ScoreRun`.
    """
    from illia_export.artifact.atomic import atomic_output, check_output_path
    from illia_export.runtime import load
    from illia_export.runtime.sampling import random_seed

    pa = require("pyarrow", "scale", "batch scoring")
    import pyarrow.parquet as pq

    if engine not in ENGINES:
        raise InputError(f"engine (={engine!r}) must be one of {ENGINES}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise InputError(f"batch_size (={batch_size!r}) must be a positive integer")
    src = Path(input_path)
    if src.suffix.lower() not in INPUT_SUFFIXES:
        raise ArtifactError(f"input {src.name} must be a {', '.join(INPUT_SUFFIXES)} file")
    if not src.is_file():
        raise ArtifactError(f"input file not found: {src}" if not src.exists() else f"input {src} is not a file")
    out = Path(output) if output is not None else None
    if out is not None:
        if out.suffix.lower() != ".parquet":
            raise ArtifactError(f"output {out.name} must end in .parquet")
        check_output_path(out, sources=[input_path, artifact], create_parents=False, what="output")
    settings = replace(settings or ScoreSettings(), **options)
    if settings.seed is None:
        settings = replace(settings, seed=random_seed())
    predictor = load(artifact, device=device, **({"threads": threads} if threads else {}))
    check_ids_needed(predictor, settings, True)  # files always have ids; this checks the strategy
    meta = run_metadata(predictor, settings, settings.seed)
    t0 = time.perf_counter()
    started_ray = False
    if engine == "ray":
        from illia_export.scale.ray_engine import ensure_ray, plan_actors, score_dataset

        started_ray = ensure_ray(address)
    try:
        if engine == "ray":
            import ray
            from ray.data import DataContext

            ctx = DataContext.get_current()
            ctx.execution_options.preserve_order = True  # output rows in input order
            if progress:
                ctx.enable_progress_bars = True
            n_actors, _ = plan_actors(float(ray.cluster_resources().get("CPU", 1.0)), actors, cpus_per_actor)
            ds = _ray_dataset(src, predictor, settings, n_actors)
            scored = score_dataset(
                ds, artifact, settings, batch_size=batch_size, actors=actors, cpus_per_actor=cpus_per_actor,
                threads=threads, device=device,
            )
            tables = (t for t in scored.iter_batches(batch_format="pyarrow", batch_size=None))
        else:
            bar = _bar(progress)
            tables = _tracked((score_table(predictor, t, settings) for t in _local_batches(src, predictor, settings, batch_size)), bar)
        rows = 0
        if out is None:
            parts = list(tables)
            rows = sum(len(t) for t in parts)
            table = pa.concat_tables(parts) if parts else None
            return ScoreRun(rows, settings.seed, engine, time.perf_counter() - t0, None, table)
        with atomic_output(out, sources=[input_path, artifact]) as tmp:
            writer = None
            try:
                for t in tables:
                    if writer is None:
                        schema = t.schema.with_metadata({**(t.schema.metadata or {}), **meta})
                        writer = pq.ParquetWriter(tmp, schema)
                    writer.write_table(t.replace_schema_metadata(writer.schema.metadata))
                    rows += len(t)
            finally:
                if writer is not None:
                    writer.close()
            if writer is None:
                raise InputError(f"{src.name} has no rows to score")
        return ScoreRun(rows, settings.seed, engine, time.perf_counter() - t0, out)
    finally:
        if started_ray:
            import ray

            ray.shutdown()


def _bar(enabled: bool):
    if not enabled:
        return None
    from tqdm.auto import tqdm

    return tqdm(unit="row", desc="scoring", leave=False)


def _tracked(tables, bar):
    for t in tables:
        if bar is not None:
            bar.update(len(t))
        yield t
    if bar is not None:
        bar.close()
