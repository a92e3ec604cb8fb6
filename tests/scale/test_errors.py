"""Clean errors on the batch-scoring paths (issue #22 item 4): bad data gives the same typed error
on the local and the Ray engine, naming the column and the file row; Ray failures are unwrapped;
impossible actor sizes and unreachable clusters fail at once; unreadable files are named with
the cause; an interrupted write leaves only a file that is obviously ours and that the next run
removes."""

from __future__ import annotations

import gc
import os
import subprocess
import sys
import time

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from illia_export.errors import ArtifactError, InputError, ShapeError
from illia_export.scale import score_file
from illia_export.scale.files import PARTIAL_MARK
from illia_export.scale.ray_engine import probe_address

ray = pytest.importorskip("ray")
pytest.importorskip("ray.data")

BAD_ROW = 450


def _features(x):
    return {f"f{i}": pa.array(x[:, i]) for i in range(6)}


def _bad_tables(x):
    n = len(x)
    return {
        "string column": (dict(_features(x), f2=pa.array([str(v) for v in x[:, 2]])), None,
                          ShapeError, "column 'f2' holds string, not numbers"),
        "null value": (dict(_features(x), f3=pa.array([None if i == BAD_ROW else float(v) for i, v in enumerate(x[:, 3])],
                                                       pa.float32())), None,
                       ShapeError, f"column 'f3' has a missing (null) value at row {BAD_ROW}"),
        "ragged list": ({"input": pa.array([list(map(float, r if i != BAD_ROW else r[:5])) for i, r in enumerate(x)])},
                        None, ShapeError, f"row {BAD_ROW} has 5 values"),
        "NaN id": (dict(_features(x), uid=pa.array([np.nan if i == BAD_ROW else float(i) for i in range(n)])), "uid",
                   InputError, "id column 'uid' holds floats: ids must be integers or strings"),
        "null id": (dict(_features(x), uid=pa.array([None if i == BAD_ROW else i for i in range(n)], pa.int64())), "uid",
                    InputError, f"missing (null) id at row {BAD_ROW}"),
    }


@pytest.mark.parametrize("case", ["string column", "null value", "ragged list", "NaN id", "null id"])
def test_bad_rows_give_the_same_typed_error_on_both_engines(case, scale_files, tmp_path, local_ray):
    columns, id_column, error, message = _bad_tables(scale_files["x"])[case]
    src = tmp_path / "bad.parquet"
    pq.write_table(pa.table(columns), src)
    errors = []
    for engine in ("local", "ray"):
        with pytest.raises(error) as info:
            score_file(scale_files["mlp"], src, tmp_path / f"{engine}.parquet", engine=engine, num_samples=4, seed=0,
                       batch_size=100, id_column=id_column)
        errors.append(str(info.value))
        assert message in str(info.value), (engine, str(info.value))
        assert "RayTaskError" not in str(info.value) and "Traceback" not in str(info.value)
        assert not (tmp_path / f"{engine}.parquet").exists()
    assert errors[0] == errors[1]


def _all_cpus_free(timeout: float = 20.0) -> bool:
    """Whether the local cluster's CPUs all come back within `timeout` (actors die asynchronously)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if ray.available_resources().get("CPU", 0.0) >= ray.cluster_resources().get("CPU", 0.0):
            return True
        time.sleep(0.2)
    return False


def test_a_failed_ray_run_gives_its_cpus_back_and_the_callers_settings(scale_files, local_ray, monkeypatch):
    """A run that fails inside the cluster releases its actors at once: the failed Dataset,
    kept alive through the error's traceback, would hold its actor's CPUs, which a later run
    waits for. The caller's Ray Data settings (row order, progress bars) are theirs again after
    the run, failed or not."""
    from ray.data import DataContext

    from illia_export.scale import ray_engine

    real = ray_engine.score_dataset

    def failing(*args, **kwargs):  # a stage after the scorer that fails on the cluster
        def boom(batch):
            raise ShapeError("boom on the cluster")

        return real(*args, **kwargs).map_batches(boom, batch_format="pyarrow")

    monkeypatch.setattr(ray_engine, "score_dataset", failing)
    ctx = DataContext.get_current()
    monkeypatch.setattr(ctx, "enable_progress_bars", False)  # the caller's choices, which the run changes
    monkeypatch.setattr(ctx.execution_options, "preserve_order", False)
    before = (False, False)
    assert _all_cpus_free()
    gc.disable()  # no incidental collection while we wait: the run must let go of its actors itself
    try:
        with pytest.raises(ShapeError, match="boom on the cluster") as info:
            score_file(scale_files["mlp"], scale_files["root"] / "x.parquet", engine="ray", num_samples=4, seed=0,
                       actors=1, progress=True)
        assert _all_cpus_free(), "the failed run's actor still holds its CPUs"
    finally:
        gc.enable()
    assert info.value.__context__ is None  # Ray's error (its traceback holds the run) is not carried
    assert (ctx.execution_options.preserve_order, ctx.enable_progress_bars) == before
    monkeypatch.setattr(ray_engine, "score_dataset", real)
    score_file(scale_files["mlp"], scale_files["root"] / "x.parquet", engine="ray", num_samples=4, seed=0,
               progress=True)
    assert (ctx.execution_options.preserve_order, ctx.enable_progress_bars) == before


def test_an_actor_larger_than_any_node_is_refused_before_submitting(scale_files, local_ray):
    with pytest.raises(InputError, match=r"--cpus-per-actor 1000 exceeds the CPUs of the largest node in the cluster \(2\)"):
        score_file(scale_files["mlp"], scale_files["root"] / "x.parquet", engine="ray", num_samples=4, seed=0,
                   cpus_per_actor=1000)
    with pytest.raises(InputError, match="Ray Data's reads need one free"):
        score_file(scale_files["mlp"], scale_files["root"] / "x.parquet", engine="ray", num_samples=4, seed=0,
                   actors=2, cpus_per_actor=1)


def test_an_unreachable_cluster_address_fails_at_once():
    with socket_closed_port() as port:
        with pytest.raises(InputError, match=f"cannot reach the Ray cluster at 127.0.0.1:{port}"):
            probe_address(f"127.0.0.1:{port}", timeout=5)
        with pytest.raises(InputError, match="cannot reach"):
            probe_address(f"ray://127.0.0.1:{port}", timeout=5)
    with pytest.raises(InputError, match="must be 'auto', 'HOST:PORT'"):
        probe_address("nonsense")


def socket_closed_port():
    """A port nothing listens on (bound, then closed)."""
    import contextlib
    import socket

    @contextlib.contextmanager
    def cm():
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        yield port

    return cm()


def test_the_cli_with_an_unreachable_address_exits_with_a_clean_error(scale_files, tmp_path):
    """`--address 127.0.0.1:1` in a fresh process (no Ray running): an error naming the
    address, not Ray's minutes of retries nor a traceback."""
    env = dict(os.environ, PYTHONPATH=os.getcwd())
    proc = subprocess.run(
        [sys.executable, "-m", "illia_export.cli", "predict", str(scale_files["mlp"]), "--input",
         str(scale_files["root"] / "x.parquet"), "-o", str(tmp_path / "o.parquet"), "--engine", "ray",
         "--address", "127.0.0.1:1", "--no-progress"],
        capture_output=True, text=True, env=env, timeout=300,
    )
    assert proc.returncode != 0
    assert "cannot reach the Ray cluster at 127.0.0.1:1" in proc.stderr and "Traceback" not in proc.stderr


@pytest.mark.parametrize("engine", ["local", "ray"])
def test_a_truncated_parquet_file_is_named_with_the_cause(engine, scale_files, tmp_path, local_ray):
    data = (scale_files["root"] / "x.parquet").read_bytes()
    bad = tmp_path / "cut.parquet"
    bad.write_bytes(data[: len(data) // 2])
    with pytest.raises(ArtifactError, match=r"cannot read .*cut\.parquet"):
        score_file(scale_files["mlp"], bad, engine=engine, num_samples=4, seed=0)
    # the footer intact, a data page damaged: found while reading the batches
    broken = bytearray(data)
    for i in range(4, len(data) // 3):
        broken[i] = 0xFF
    bad.write_bytes(bytes(broken))
    with pytest.raises(ArtifactError, match=r"cut\.parquet.*(truncated or corrupt|as Parquet)"):
        score_file(scale_files["mlp"], bad, engine=engine, num_samples=4, seed=0)


@pytest.mark.parametrize("suffix, content", [(".npy", b"\x93NUMPY\x01\x00v\x00{'descr': '<f4', 'fortran_order': False, "
                                                         b"'shape': (600, 6), }" + b" " * 60 + b"\n" + b"\0" * 64),
                                             (".npz", b"PK\x03\x04 not really a zip")])
def test_a_corrupt_npy_or_npz_is_named_with_the_cause(suffix, content, scale_files, tmp_path):
    bad = tmp_path / f"bad{suffix}"
    bad.write_bytes(content)
    with pytest.raises(ArtifactError, match=rf"cannot read .*bad\{suffix} as \.npy/\.npz: \S"):
        score_file(scale_files["mlp"], bad, num_samples=4, seed=0)


def test_an_interrupted_write_leaves_nothing_and_stale_partials_are_removed(scale_files, tmp_path, monkeypatch):
    out = tmp_path / "scores.parquet"
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale = tmp_path / f"scores.parquet{PARTIAL_MARK}{dead.pid}"  # what a SIGKILLed run leaves
    stale.write_bytes(b"half a parquet file")
    live = tmp_path / f"scores.parquet{PARTIAL_MARK}{os.getppid()}"  # another run, still writing
    live.write_bytes(b"in progress")
    import illia_export.scale.files as files

    calls = {"n": 0}
    real = files.score_table

    def failing(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(files, "score_table", failing)
    with pytest.raises(KeyboardInterrupt):
        score_file(scale_files["mlp"], scale_files["root"] / "x.parquet", out, num_samples=4, seed=0, batch_size=100)
    assert not out.exists() and not stale.exists() and live.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == [live.name]
    monkeypatch.setattr(files, "score_table", real)
    run = score_file(scale_files["mlp"], scale_files["root"] / "x.parquet", out, num_samples=4, seed=0, batch_size=100)
    assert run.rows == 600 and out.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([out.name, live.name])
