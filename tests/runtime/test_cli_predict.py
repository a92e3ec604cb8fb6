"""``illia-export predict``."""

from __future__ import annotations

import json

import numpy as np
import pytest

from illia_export.cli import main
from tests.runtime.conftest import MULTI_MANIFEST, write_multi_output_onnx

X = np.random.default_rng(1).normal(size=(4, 6)).astype(np.float32)


@pytest.fixture()
def x_file(tmp_path):
    path = tmp_path / "x.npy"
    np.save(path, X)
    return path


def test_predict_prints_a_summary_and_saves_npz(artifacts, x_file, tmp_path, capsys):
    out = tmp_path / "out.npz"
    rc = main(
        [
            "predict",
            str(artifacts["mlp_onnx_vectorized"]),
            "--input",
            str(x_file),
            "--samples",
            "8",
            "--seed",
            "0",
            "--output",
            str(out),
        ]
    )
    assert rc == 0
    text = capsys.readouterr().out
    assert "8 samples, strategy fresh, seed 0, task classification" in text
    assert "mutual_info" in text and f"saved {out}" in text
    from illia_export.runtime import load

    ref = load(artifacts["mlp_onnx_vectorized"]).predict(X, num_samples=8, seed=0)
    with np.load(out) as z:
        np.testing.assert_array_equal(z["samples"], ref.samples)
        np.testing.assert_allclose(z["mutual_information"], ref.mutual_information)


def test_predict_json_with_options(artifacts, x_file, tmp_path, capsys):
    out = tmp_path / "out.json"
    args = [
        "predict",
        str(artifacts["mlp_torchscript_vectorized"]),
        "-i",
        str(x_file),
        "-S",
        "6",
        "--seed",
        "3",
    ]
    rc = main(args + ["--strategy", "local", "--chunk-size", "2", "-o", str(out), "--no-progress"])
    assert rc == 0
    d = json.loads(out.read_text())
    assert d["strategy"] == "local" and d["num_samples"] == 6 and len(d["probabilities"]) == 4
    assert "samples" not in d


def test_predict_regression_summary(artifacts, tmp_path, capsys):
    path = tmp_path / "x3.npy"
    np.save(path, X[:, :3])
    assert (
        main(
            ["predict", str(artifacts["single_onnx"]), "--input", str(path), "--samples", "5", "--seed", "1"]
        )
        == 0
    )
    assert "90% interval" in capsys.readouterr().out


def test_predict_npz_inputs_by_name(tmp_path, capsys):
    model = tmp_path / "multi.onnx"
    write_multi_output_onnx(model, MULTI_MANIFEST)
    xs = tmp_path / "x.npz"
    np.savez(xs, input=X[:, :2])
    assert main(["predict", str(model), "--input", str(xs), "--samples", "3", "--seed", "0"]) == 0
    assert "output y [3, 4, 2]" in capsys.readouterr().out


@pytest.mark.parametrize(
    "extra,message",
    [
        (["--strategy", "local"], "exact only for Linear layers"),
        (["--device", "cuda"], "cuda"),
        (["--samples", "0"], "--samples"),
        (["--output", "out.txt"], ".npz, .json or .parquet"),
        (["--batch-size", "0"], "--batch-size"),
        (["--id-column", "uid"], "--id-column applies to Parquet"),
        (["--input", "x.parquet", "--output", "o.npz"], "per-row summaries to a .parquet file"),
    ],
)
def test_predict_user_errors_exit_2_with_one_line(artifacts, x_file, capsys, extra, message):
    import onnxruntime

    if "cuda" in extra and "CUDAExecutionProvider" in onnxruntime.get_available_providers():
        pytest.skip("CUDA is available here")
    rc = main(["predict", str(artifacts["mlp_onnx_per-call"]), "--input", str(x_file)] + extra)
    err = capsys.readouterr().err.strip()
    assert rc == 2 and err.startswith("illia-export: error:") and message in err and "\n" not in err


def test_predict_bad_input_shape_exit_2(artifacts, tmp_path, capsys):
    bad = tmp_path / "bad.npy"
    np.save(bad, np.zeros((4, 5), np.float32))
    assert main(["predict", str(artifacts["mlp_onnx_vectorized"]), "--input", str(bad)]) == 2
    assert "[batch, 6]" in capsys.readouterr().err


def test_predict_missing_input_file_exit_2(artifacts, tmp_path, capsys):
    assert (
        main(["predict", str(artifacts["mlp_onnx_vectorized"]), "--input", str(tmp_path / "none.npy")]) == 2
    )
    assert "not found" in capsys.readouterr().err


def test_predict_empty_batch_is_one_clear_line(artifacts, tmp_path, capsys):
    """Guard: an input with 0 rows used to end in 'internal error: ValueError: range() arg 3'."""
    np.save(tmp_path / "empty.npy", np.zeros((0, 6), np.float32))
    code = main(["predict", str(artifacts["mlp_onnx_vectorized"]), "-i", str(tmp_path / "empty.npy")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1
    assert "holds no rows" in err and "internal error" not in err


def test_ctrl_c_during_the_monte_carlo_run_is_one_line_and_130(artifacts, x_file, tmp_path, capsys, monkeypatch):
    """Ctrl-C in the middle of the chunks (the third graph call): exit 130, one line, no
    traceback, no output file."""
    import illia_export.runtime.predictor as predictor_module

    calls = []
    real = predictor_module.run_feed

    def interrupted(*args):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real(*args)

    monkeypatch.setattr(predictor_module, "run_feed", interrupted)
    out = tmp_path / "out.npz"
    code = main(["predict", str(artifacts["mlp_onnx_vectorized"]), "-i", str(x_file), "-S", "64",
                 "--chunk-size", "4", "--seed", "0", "-o", str(out)])
    err = capsys.readouterr().err.strip()
    assert code == 130 and err == "illia-export: interrupted", err
    assert len(calls) == 3 and not out.exists()
