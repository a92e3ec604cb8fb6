"""Batch scoring in one process: columns, partition invariance, metadata, bad inputs."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from illia_export.errors import ArtifactError, InputError, MissingBackendError, ShapeError, StrategyError
from illia_export.runtime import load
from illia_export.scale import ScoreSettings, score_file, score_table
from tests.scale.conftest import ROWS

S = 8
SEED = 17


def _arrays(table) -> dict[str, np.ndarray]:
    return {c: np.asarray(table.column(c).to_pylist(), dtype=object if c == "user" else float) for c in table.column_names}


def assert_same_rows(a, b, rtol=1e-6):
    assert a.column_names == b.column_names
    aa, bb = _arrays(a), _arrays(b)
    for c in a.column_names:
        if aa[c].dtype == object:
            assert aa[c].tolist() == bb[c].tolist(), c
        else:
            np.testing.assert_allclose(aa[c], bb[c], rtol=rtol, atol=1e-7, err_msg=c)


CASES = [("mlp", "fresh"), ("mlp", "bank"), ("mlp", "local"), ("dropout", "fresh"), ("dropout", "bank"), ("single", "fresh")]


@pytest.mark.parametrize("model,strategy", CASES)
def test_rows_do_not_depend_on_batch_size_or_file_type(model, strategy, scale_files):
    art = scale_files[model]
    runs = [
        score_file(art, scale_files["root"] / src, num_samples=S, seed=SEED, strategy=strategy, batch_size=bs)
        for src, bs in (("x.parquet", ROWS), ("x.parquet", 77), ("x.npy", 250))
    ]
    for r in runs[1:]:
        assert_same_rows(runs[0].table, r.table)
    # ... and equal to one in-process predict keyed by the row index
    pred = load(art).predict(scale_files["x"], num_samples=S, seed=SEED, strategy=strategy, row_ids=np.arange(ROWS))
    for name, values in pred.summary_arrays().items():
        np.testing.assert_allclose(_arrays(runs[1].table)[name], values, rtol=1e-6, atol=1e-7, err_msg=name)


def test_columns_are_the_prediction_summaries(scale_files):
    run = score_file(scale_files["mlp"], scale_files["root"] / "x.npy", num_samples=S, seed=SEED)
    t = run.table
    assert t.column_names == ["row", "mean", "std", "probabilities", "predicted_class", "predictive_entropy",
                              "expected_entropy", "mutual_information"]
    assert pa.types.is_list(t.schema.field("probabilities").type)
    assert t.column("row").to_pylist() == list(range(ROWS))
    assert len(t.column("probabilities")[0].as_py()) == 3
    reg = score_file(scale_files["single"], scale_files["root"] / "x.npy", num_samples=S, seed=SEED).table
    assert {"mean", "std", "interval_90_lower", "interval_90_upper"} <= set(reg.column_names)
    assert "predicted_class" not in reg.column_names


def test_output_file_records_the_run(scale_files, tmp_path):
    out = tmp_path / "scores.parquet"
    run = score_file(scale_files["dropout"], scale_files["root"] / "x.parquet", out, num_samples=S, batch_size=100)
    assert run.output == out and run.rows == ROWS
    meta = {k.decode(): v.decode() for k, v in pq.read_schema(out).metadata.items() if k.startswith(b"illia_export.")}
    assert meta["illia_export.seed"] == str(run.seed)  # seed=None: drawn once, recorded
    assert meta["illia_export.num_samples"] == str(S)
    assert meta["illia_export.strategy"] == "fresh"
    assert meta["illia_export.artifact_digest"].startswith("sha256:")
    again = score_file(scale_files["dropout"], scale_files["root"] / "x.npy", num_samples=S, seed=run.seed).table
    assert_same_rows(pq.read_table(out), again)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["scores.parquet"]  # no temp files left


def test_id_column_keys_the_rows_and_tensor_columns_feed_the_input(scale_files):
    """Rows keyed by a string id: the same row gets the same answer in any order or batch."""
    path = scale_files["root"] / "ids.parquet"
    a = score_file(scale_files["dropout"], path, num_samples=S, seed=SEED, id_column="user", batch_size=64).table
    assert a.column_names[0] == "user"
    assert a.column("user").to_pylist() == scale_files["ids"].tolist()
    order = np.random.default_rng(0).permutation(ROWS)
    pred = load(scale_files["dropout"]).predict(
        scale_files["x"][order], num_samples=S, seed=SEED, row_ids=scale_files["ids"][order]
    )
    np.testing.assert_allclose(np.asarray(a.column("mean").to_pylist())[order], pred.mean, rtol=1e-6, atol=1e-7)


def test_keep_inputs_and_a_caller_table(scale_files):
    p = load(scale_files["mlp"])
    table = pa.table({"a": scale_files["x"][:5, 0], **{f"f{i}": scale_files["x"][:5, i] for i in range(1, 6)}})
    out = score_table(p, table, ScoreSettings(num_samples=S, seed=SEED, keep_inputs=True))
    assert out.column_names[:6] == ["a", "f1", "f2", "f3", "f4", "f5"] and "mean" in out.column_names
    ref = p.predict(scale_files["x"][:5], num_samples=S, seed=SEED)
    np.testing.assert_allclose(np.asarray(out.column("mean").to_pylist()), ref.mean, rtol=1e-6)


def test_per_example_noise_without_ids_is_refused(scale_files):
    """A caller's table without an id column: fine for weight noise, refused for dropout masks
    (their answers would change with the partitioning)."""
    table = pa.table({f"f{i}": scale_files["x"][:5, i] for i in range(6)})
    settings = ScoreSettings(num_samples=S, seed=SEED)
    score_table(load(scale_files["mlp"]), table, settings)
    with pytest.raises(StrategyError, match="stable row id"):
        score_table(load(scale_files["dropout"]), table, settings)
    with pytest.raises(StrategyError, match="stable row id"):
        score_table(load(scale_files["mlp"]), table, ScoreSettings(num_samples=S, seed=SEED, strategy="local"))


def _write(tmp_path, name, **cols):
    p = tmp_path / name
    pq.write_table(pa.table(cols), p)
    return p


@pytest.mark.parametrize(
    "cols,kwargs,err,match",
    [
        ({"f0": [1.0], "f1": [2.0]}, {}, ShapeError, "takes 6 features per row"),
        ({f"f{i}": [1.0] for i in range(6)} | {"s": ["x"]}, {}, ShapeError, "holds string"),
        ({f"f{i}": [1.0, None] for i in range(6)}, {}, ShapeError, "missing"),
        ({f"f{i}": [1.0] for i in range(6)}, {"columns": ("f0", "nope")}, ShapeError, r"\['nope'\] are not in the table"),
        ({f"f{i}": [1.0] for i in range(6)} | {"row": [5]}, {}, InputError, "column named 'row'"),
        ({f"f{i}": [1.0] for i in range(6)}, {"id_column": "uid"}, InputError, "id column 'uid'"),
        ({"input": pa.array([[1.0, 2.0], [1.0]])}, {}, ShapeError, "different lengths"),
    ],
)
def test_bad_tables_are_refused_with_the_problem_named(cols, kwargs, err, match, scale_files, tmp_path):
    path = _write(tmp_path, "bad.parquet", **cols)
    with pytest.raises(err, match=match):
        score_file(scale_files["mlp"], path, tmp_path / "out.parquet", num_samples=2, seed=0, **kwargs)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.parquet"]


def test_bad_arguments(scale_files, tmp_path):
    x = scale_files["root"] / "x.parquet"
    with pytest.raises(ArtifactError, match="must end in .parquet"):
        score_file(scale_files["mlp"], x, tmp_path / "o.csv", seed=0)
    with pytest.raises(ArtifactError, match=r"\.parquet, \.npy, \.npz"):
        score_file(scale_files["mlp"], tmp_path / "x.csv", seed=0)
    with pytest.raises(InputError, match="engine"):
        score_file(scale_files["mlp"], x, engine="spark", seed=0)
    with pytest.raises(InputError, match="batch_size"):
        score_file(scale_files["mlp"], x, batch_size=0, seed=0)
    with pytest.raises(ArtifactError, match="cannot read"):
        score_file(scale_files["mlp"], _bytes(tmp_path / "junk.parquet"), seed=0)


def _bytes(p):
    p.write_bytes(b"not parquet at all")
    return p


def test_ray_engine_without_ray_names_the_extra(scale_files, monkeypatch):
    # A None entry in sys.modules makes every import of it fail, as when ray is not installed.
    monkeypatch.setitem(sys.modules, "ray", None)
    monkeypatch.setitem(sys.modules, "ray.data", None)
    with pytest.raises(MissingBackendError, match=r"illia-export\[scale\]"):
        score_file(scale_files["mlp"], scale_files["root"] / "x.npy", engine="ray", seed=0)


def test_cli_help_does_not_import_ray_or_pyarrow():
    code = (
        "import sys, illia_export.cli as c; c.build_parser(); import illia_export.scale; "
        "print(sorted(m for m in ('ray', 'pyarrow', 'pandas') if m in sys.modules))"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert res.stdout.strip() == "[]", res.stdout + res.stderr


def test_npy_for_a_multi_input_model_names_the_inputs(tmp_path):
    from illia_export.scale.inputs import load_inputs

    np.save(tmp_path / "x.npy", np.zeros((2, 3), np.float32))
    assert list(load_inputs(str(tmp_path / "x.npy"), ["a"])) == ["a"]
    with pytest.raises(ShapeError, match=r"one array but the model takes inputs \['a', 'b'\].*\.npz"):
        load_inputs(str(tmp_path / "x.npy"), ["a", "b"])
