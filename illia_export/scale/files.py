"""Score a Parquet or NumPy file, in this process or on Ray, to a Parquet file.

Both engines read the same rows, key them by the same ids and write the same columns, so the
output is the same per row (up to float rounding across machines) whichever engine ran it.
"""

from __future__ import annotations

import contextlib
import os
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from illia_export.errors import ArtifactError, IlliaExportError, InputError, require
from illia_export.scale.columns import ROW_COLUMN, run_metadata
from illia_export.scale.inputs import arrays_table, load_inputs
from illia_export.scale.ray_engine import DEFAULT_BATCH_SIZE
from illia_export.scale.scorer import ScoreSettings, check_ids_needed, check_table, score_table

#: Marks the file a run writes before renaming it to the output: ``OUT.illia-export-partial-PID``.
#: Visible and named after the output, so a user can tell whose it is; a later run writing the
#: same output removes the ones whose process is gone (a SIGKILL leaves one behind).
PARTIAL_MARK = ".illia-export-partial-"

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
        for batch in _parquet_batches(pf, path, batch_size):
            table = pa.Table.from_batches([batch])
            if settings.id_column is None:
                table = table.append_column(ROW_COLUMN, pa.array(np.arange(start, start + len(table), dtype=np.int64)))
            yield start, table
            start += len(table)
        return
    arrays = load_inputs(str(path), [t.name for t in predictor.manifest.inputs])
    n = len(next(iter(arrays.values())))
    for start in range(0, n, batch_size):
        yield start, arrays_table({k: a[start : start + batch_size] for k, a in arrays.items()}, row_start=start)


def _parquet_batches(pf, path: Path, batch_size: int):
    """Record batches of a Parquet file; a truncated or corrupt file is an ArtifactError naming
    the file and the cause (pyarrow's own error names neither the file nor what to do)."""
    batches = pf.iter_batches(batch_size=batch_size)
    while True:
        try:
            batch = next(batches)
        except StopIteration:
            return
        except Exception as exc:  # ArrowInvalid, OSError ("Unexpected end of stream"), ...
            raise ArtifactError(
                f"cannot read {path}: the Parquet data is truncated or corrupt ({type(exc).__name__}: "
                f"{' '.join(str(exc).split())[:200]}); re-create the file"
            ) from exc
        yield batch


def _validated_batches(path: Path, predictor, settings: ScoreSettings, batch_size: int):
    """The local engine's batches, checked (not scored) one by one: what the Ray engine runs on
    the driver before submitting, so that bad data fails with the local engine's typed error,
    naming the column and the file row."""
    for start, table in _local_batches(path, predictor, settings, batch_size):
        check_table(predictor, table, settings, start)
        yield table


def _ray_dataset(path: Path, predictor, settings: ScoreSettings, actors: int, batch_size: int):
    import ray

    pa = require("pyarrow", "scale", "batch scoring")
    if path.suffix.lower() == ".parquet" and settings.id_column is not None:
        # stable ids: let the cluster read the file, after the driver checked it (streaming)
        for _ in _validated_batches(path, predictor, settings, batch_size):
            pass
        return ray.data.read_parquet(str(path), override_num_blocks=2 * actors)
    # No id column (the row index is the id, assigned here in file order), or a NumPy file.
    parts = list(_validated_batches(path, predictor, settings, batch_size))
    if not parts:
        raise InputError(f"{path.name} has no rows to score")
    table = pa.concat_tables(parts)
    blocks = max(1, min(len(table) // 1024 or 1, 4 * actors))
    return ray.data.from_arrow(table, override_num_blocks=blocks)


_REMOTE_ERROR = re.compile(r"^illia_export\.errors\.([A-Za-z]+Error): (.+)$", re.MULTILINE)


def unwrap_ray_error(exc: BaseException) -> BaseException:
    """The user-facing error inside a Ray failure: Ray Data wraps an actor's exception as
    ``RayTaskError(UserCodeException)`` and only the remote traceback's text crosses the wire
    (the exception object does not). The package's typed error, found in the chain
    (``.cause``, ``__cause__``, ``__context__``) or else rebuilt from the traceback's last
    ``illia_export.errors.X: message`` line, is what the local engine would have raised.
    Returns `exc` itself when there is none."""
    from illia_export import errors

    seen: set[int] = set()
    todo = [exc]
    while todo:
        e = todo.pop(0)
        if e is None or id(e) in seen:
            continue
        seen.add(id(e))
        if isinstance(e, IlliaExportError):
            return e
        todo.extend([getattr(e, "cause", None), e.__cause__, e.__context__])
    found = _REMOTE_ERROR.findall(str(exc))
    if found:
        name, message = found[-1]
        cls = getattr(errors, name, None)
        if isinstance(cls, type) and issubclass(cls, errors.IlliaExportError):
            rebuilt = cls.__new__(cls)  # some typed errors take other constructor arguments
            Exception.__init__(rebuilt, message.strip())
            return rebuilt
    return exc


@contextlib.contextmanager
def _partial_output(out: Path) -> Iterator[Path]:
    """A temporary file beside `out` (``PARTIAL_MARK``), renamed to `out` on success, removed on
    an error; stale ones of dead runs are removed first."""
    for old in out.parent.glob(out.name + PARTIAL_MARK + "*"):
        pid = old.name.rsplit("-", 1)[-1]
        if pid.isdigit() and not _alive(int(pid)):
            with contextlib.suppress(OSError):
                old.unlink()
    tmp = out.with_name(out.name + PARTIAL_MARK + str(os.getpid()))
    try:
        yield tmp
        os.replace(tmp, out)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


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
    load_options: dict[str, Any] | None = None,
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
        load_options: ``runtime.load``'s trust options (``trust_native_code``,
            ``expected_digest``, ``allow_unverified``), on both engines.

    Returns:
        A :class:`ScoreRun`.
    """
    from illia_export.artifact.atomic import check_output_path
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
    load_options = dict(load_options or {})
    predictor = load(artifact, device=device, **({"threads": threads} if threads else {}), **load_options)
    check_ids_needed(predictor, settings, True)  # files always have ids; this checks the strategy
    meta = run_metadata(predictor, settings, settings.seed)
    t0 = time.perf_counter()
    started_ray, restore = False, None
    if engine == "ray":
        from illia_export.scale.ray_engine import check_resources, ensure_ray, plan_actors, score_dataset

        started_ray = ensure_ray(address)
    try:
        if engine == "ray":
            import ray
            from ray.data import DataContext

            ctx = DataContext.get_current()
            # the caller's own Ray Data settings are put back in the finally below
            restore = (ctx.execution_options.preserve_order, ctx.enable_progress_bars)
            ctx.execution_options.preserve_order = True  # output rows in input order
            if progress:
                ctx.enable_progress_bars = True
            n_actors, cpus = plan_actors(float(ray.cluster_resources().get("CPU", 1.0)), actors, cpus_per_actor)
            check_resources(ray, n_actors, cpus)  # before reading anything: Ray would wait forever
            ds = _ray_dataset(src, predictor, settings, n_actors, batch_size)
            scored = score_dataset(
                ds, artifact, settings, batch_size=batch_size, actors=actors, cpus_per_actor=cpus_per_actor,
                threads=threads, device=device, load_options=load_options,
            )
            tables = _unwrapped(scored.iter_batches(batch_format="pyarrow", batch_size=None))
        else:
            bar = _bar(progress)
            tables = _tracked(
                (score_table(predictor, t, settings, start) for start, t in _local_batches(src, predictor, settings, batch_size)),
                bar,
            )
        rows = 0
        if out is None:
            parts = list(tables)
            rows = sum(len(t) for t in parts)
            table = pa.concat_tables(parts) if parts else None
            return ScoreRun(rows, settings.seed, engine, time.perf_counter() - t0, None, table)
        with _partial_output(out) as tmp:
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
    except BaseException:
        if engine == "ray":
            # A failed Ray Data run keeps its actors (CPUs of the cluster) while its Dataset
            # lives, and this frame, held by the error's traceback, would keep it alive for as
            # long as the caller holds the error: a later run would wait for those CPUs.
            ds = scored = tables = None  # noqa: F841
        raise
    finally:
        if restore is not None:
            ctx.execution_options.preserve_order, ctx.enable_progress_bars = restore
        if started_ray:
            import ray

            ray.shutdown()


def _unwrapped(tables):
    """Ray's batches, with a failure on a worker raised as the typed error it carries."""
    try:
        yield from tables
        return
    except Exception as exc:
        cause = unwrap_ray_error(exc)
        if cause is exc:
            raise
    # raised outside the except block, so without a __context__: Ray's error, whose traceback
    # holds the failed run's executor and its actors, does not travel with the caller's error
    raise cause.with_traceback(None)


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
