"""The Ray Data engine on a local Ray instance: the same per-row answers as one process, for
every strategy and for different partitionings."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from illia_export.errors import InputError, ShapeError, StrategyError
from illia_export.runtime import load
from illia_export.scale import score_dataset, score_file
from illia_export.scale.ray_engine import plan_actors
from tests.scale.test_errors import _features
from tests.scale.test_local_engine import assert_same_rows

ray = pytest.importorskip("ray")
pytest.importorskip("ray.data")

S = 8
SEED = 5


ONE_ACTOR = dict(batch_size=64, actors=1)
TWO_ACTORS = dict(batch_size=150, actors=2)


@pytest.mark.parametrize(
    "model,strategy,partition",
    [
        ("mlp", "fresh", ONE_ACTOR),
        ("mlp", "fresh", TWO_ACTORS),
        ("mlp", "bank", TWO_ACTORS),
        ("mlp", "local", ONE_ACTOR),
        ("dropout", "fresh", TWO_ACTORS),
        ("dropout", "bank", ONE_ACTOR),
    ],
)
def test_ray_rows_equal_one_process(model, strategy, partition, scale_files, local_ray):
    """Each strategy under one partitioning (fresh under both), each partitioning under several
    strategies: the rows never depend on which actor or batch scored them (the local engine's
    batches differ from both)."""
    src = scale_files["root"] / "x.parquet"
    local = score_file(scale_files[model], src, num_samples=S, seed=SEED, strategy=strategy).table
    got = score_file(scale_files[model], src, engine="ray", num_samples=S, seed=SEED, strategy=strategy, **partition)
    assert got.engine == "ray" and got.rows == len(local)
    assert_same_rows(local, got.table)


def test_ray_cli_writes_the_same_file_as_the_local_engine(scale_files, local_ray, tmp_path, capsys):
    from illia_export.cli import main

    src = str(scale_files["root"] / "ids.parquet")
    common = [scale_files["dropout"], "--input", src, "-S", str(S), "--seed", "4", "--id-column", "user"]
    assert main(["predict", *map(str, common), "-o", str(tmp_path / "local.parquet"), "--batch-size", "100"]) == 0
    assert main(["predict", *map(str, common), "-o", str(tmp_path / "ray.parquet"), "--engine", "ray",
                 "--batch-size", "33", "--actors", "2"]) == 0
    assert "engine ray" in capsys.readouterr().out
    a, b = pq.read_table(tmp_path / "local.parquet"), pq.read_table(tmp_path / "ray.parquet")
    assert a.schema.metadata == b.schema.metadata
    assert_same_rows(a, b)


def test_score_dataset_on_a_callers_dataset(scale_files, local_ray):
    x, ids = scale_files["x"][:200], scale_files["ids"][:200]
    table = pa.table({"user": ids, **{f"f{i}": x[:, i] for i in range(6)}})
    ds = ray.data.from_arrow(table, override_num_blocks=3)
    with pytest.raises(StrategyError, match="stable row id"):  # refused on the driver, before any actor
        score_dataset(ds, scale_files["dropout"], num_samples=S, seed=SEED)
    scored = score_dataset(ds, scale_files["dropout"], num_samples=S, seed=SEED, id_column="user", batch_size=50)
    rows = scored.to_arrow_refs()
    out = pa.concat_tables(ray.get(rows))
    by_id = dict(zip(out.column("user").to_pylist(), out.column("mean").to_pylist()))
    ref = load(scale_files["dropout"]).predict(x, num_samples=S, seed=SEED, row_ids=ids)
    np.testing.assert_allclose(np.asarray([by_id[i] for i in ids]), ref.mean, rtol=1e-6, atol=1e-7)
    with pytest.raises(InputError, match="id column 'nope'"):
        score_dataset(ds, scale_files["mlp"], num_samples=S, seed=SEED, id_column="nope")


def test_actor_threads_follow_the_cpu_allocation(local_ray):
    from illia_export.scale.scorer import assigned_threads

    @ray.remote
    def threads():
        return assigned_threads()

    assert ray.get(threads.options(num_cpus=0.5).remote()) == 1
    assert ray.get(threads.options(num_cpus=2).remote()) == 2


@pytest.mark.parametrize(
    "total,actors,cpus,want",
    [(2, None, None, (2, 0.5)), (16, None, None, (16, 0.937)), (8, 2, None, (2, 3.5)), (8, None, 2, (3, 2.0)),
     (1, None, None, (1, 0.5))],
)
def test_plan_actors_leaves_a_cpu_for_reads(total, actors, cpus, want):
    got = plan_actors(total, actors, cpus)
    assert got == want
    assert got[0] * got[1] <= max(total - 1, total / 2) + 1e-9  # reads must get a CPU, or Ray Data hangs


@pytest.mark.parametrize("actors,cpus", [(0, None), (None, 0), (None, -1.0)])
def test_plan_actors_refuses_bad_sizes(actors, cpus):
    with pytest.raises(InputError):
        plan_actors(4, actors, cpus)


def test_no_seed_means_one_seed_for_every_actor(scale_files, local_ray):
    """seed=None is drawn once on the driver: with a bank per actor drawn from its own seed, the
    two actors' rows would disagree with any single-process run."""
    src = scale_files["root"] / "x.parquet"
    run = score_file(scale_files["mlp"], src, engine="ray", num_samples=S, strategy="bank", batch_size=50, actors=2)
    assert isinstance(run.seed, int)
    local = score_file(scale_files["mlp"], src, num_samples=S, seed=run.seed, strategy="bank").table
    assert_same_rows(local, run.table)


# Last in the Ray group (tests/conftest.py): a caller's own failed Dataset keeps its actor's
# CPUs while Ray Data holds on to it, which would slow every Ray test after this one.
def test_a_failure_inside_a_ray_actor_is_unwrapped_to_its_typed_error(scale_files, local_ray):
    """A caller's Dataset is not checked on the driver: the actor raises, Ray wraps it as
    RayTaskError(UserCodeException), and the engine hands back the ShapeError it carries."""
    from illia_export.scale.files import _unwrapped, unwrap_ray_error

    x = scale_files["x"][:50]
    table = pa.table(dict(_features(x), f1=pa.array(["a"] * 50)))
    scored = score_dataset(ray.data.from_arrow(table), scale_files["mlp"], num_samples=4, seed=0, batch_size=25)
    with pytest.raises(Exception) as raw:
        list(scored.iter_batches(batch_format="pyarrow", batch_size=None))
    assert not isinstance(raw.value, ShapeError)  # what Ray raises on its own
    assert isinstance(unwrap_ray_error(raw.value), ShapeError)
    with pytest.raises(ShapeError, match="column 'f1' holds string"):
        list(_unwrapped(scored.iter_batches(batch_format="pyarrow", batch_size=None)))
