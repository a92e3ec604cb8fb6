"""NaN/inf inputs, token ids outside the vocabulary, seeds outside [0, 2**64), strict JSON."""

from __future__ import annotations

import json

import numpy as np
import pytest

from illia_export.errors import InputError, ShapeError
from illia_export.runtime import load
from illia_export.runtime.prediction import Prediction
from illia_export.strict_json import dumps

from .conftest import VOCAB, assert_one_line_error, cli

X = np.ones((4, 6), np.float32)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("key", ["mlp_onnx_vectorized", "mlp_torchscript_per-call"])
def test_nonfinite_inputs_are_refused_unless_allowed(art, key, bad):
    p = load(art[key])
    x = X.copy()
    x[2, 3] = bad
    with pytest.raises(InputError, match=r"non-finite.*\[2, 3\].*allow_nonfinite"):
        p.predict(x, num_samples=2, seed=0)
    pred = p.predict(x, num_samples=2, seed=0, allow_nonfinite=True)
    assert pred.samples.shape[:2] == (2, 4)


def test_cli_nonfinite_and_evaluate_on_nan_rows(art, tmp_path):
    x = np.full((3, 6), np.nan, np.float32)
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "y.npy", np.zeros(3, np.int64))
    onnx_path = str(art["mlp_onnx_vectorized"])
    assert_one_line_error(cli("predict", onnx_path, "-i", str(tmp_path / "x.npy")), "non-finite")
    r = cli(
        "predict",
        onnx_path,
        "-i",
        str(tmp_path / "x.npy"),
        "--allow-nonfinite",
        "-S",
        "2",
        "-o",
        str(tmp_path / "p.json"),
    )
    assert r.returncode == 0, r.stderr
    json.loads((tmp_path / "p.json").read_text(), parse_constant=lambda c: pytest.fail(f"bare {c} in JSON"))
    # evaluate used to print accuracy 1.0 for all-NaN rows labelled 0
    assert_one_line_error(
        cli("evaluate", onnx_path, "-i", str(tmp_path / "x.npy"), "-y", str(tmp_path / "y.npy"), "--json"),
        "non-finite",
    )


@pytest.mark.parametrize("fmt", ["onnx", "torchscript"])
def test_token_ids_are_checked_against_the_vocabulary(art, fmt):
    p = load(art[f"tok_{fmt}"])
    assert p.manifest.inputs[0].range == [0, VOCAB]
    ok = np.array([[0, 1, VOCAB - 1]], np.int64)
    p.predict(ok, num_samples=2, seed=0)
    for bad, value in (([[0, -1, 2]], -1), ([[0, VOCAB, 2]], VOCAB), ([[0, 2**40, 2]], 2**40)):
        with pytest.raises(InputError, match=rf"value {value} .*\[0, {VOCAB}\)"):
            p.predict(np.array(bad, np.int64), num_samples=2, seed=0)


def test_negative_ids_are_refused_without_a_recorded_range(art):
    """Guard: ONNX artifacts read another MC sample's embedding rows for negative ids."""
    p = load(art["tok_onnx_norange"])
    assert p.manifest.inputs[0].range is None
    with pytest.raises(InputError, match="negative"):
        p.predict(np.array([[0, -3, 1]], np.int64), num_samples=2, seed=0)
    with pytest.raises(ShapeError):
        p.predict(np.array([[0.5, 1.0]], np.float32), num_samples=2, seed=0)


def test_cli_token_out_of_range_is_one_line(art, tmp_path):
    np.save(tmp_path / "t.npy", np.array([[1, VOCAB + 5]], np.int64))
    assert_one_line_error(cli("predict", str(art["tok_onnx"]), "-i", str(tmp_path / "t.npy")), str(VOCAB + 5))


@pytest.mark.parametrize("seed", [2**64, 2**64 + 5, 2**70, -1])
def test_seed_range_is_enforced(art, seed):
    """Guard: seeds >= 2**64 used to wrap silently (2**64 gave seed 0's noise)."""
    p = load(art["mlp_onnx_vectorized"])
    with pytest.raises(InputError, match=r"\[0, 2\*\*64\)"):
        p.predict(X, num_samples=2, seed=seed)
    with pytest.raises(InputError):
        p.noise(2, seed)


def test_largest_seed_works_and_differs_from_zero(art, tmp_path):
    p = load(art["mlp_onnx_vectorized"])
    a = p.predict(X, num_samples=2, seed=2**64 - 1).samples
    b = p.predict(X, num_samples=2, seed=0).samples
    assert not np.allclose(a, b)
    np.save(tmp_path / "x.npy", X)
    assert_one_line_error(
        cli("predict", str(art["mlp_onnx_vectorized"]), "-i", str(tmp_path / "x.npy"), "--seed", str(2**64)),
        "2**64",
    )


@pytest.mark.parametrize("bad", [0, -3, 2.5, "8", True])
def test_bad_counts_are_input_errors(art, bad):
    p = load(art["mlp_onnx_vectorized"])
    with pytest.raises(InputError):
        p.predict(X, num_samples=bad, seed=0)
    with pytest.raises(InputError):
        p.predict(X, num_samples=2, seed=0, chunk_size=bad if bad != 0 else -1)


def test_strict_json_writes_null_for_nonfinite():
    text = dumps({"a": float("nan"), "b": [np.float32("inf"), 1.5], "c": np.array([np.nan, 2.0])})
    assert json.loads(text) == {"a": None, "b": [None, 1.5], "c": [None, 2.0]}
    pred = Prediction({"y": np.array([[[np.nan, 1.0]], [[np.inf, 2.0]]], np.float32)}, task="regression")
    json.loads(pred.to_json(), parse_constant=lambda c: pytest.fail(f"bare {c} in JSON"))


def test_integer_outputs_get_float_means():
    pred = Prediction({"y": np.array([[1], [2]], np.int64)}, task="raw")
    assert pred.mean.dtype == np.float64 and pred.mean[0] == 1.5


@pytest.mark.parametrize(
    "content",
    [b"", b"\x93NUMPY garbage", "object", "badcrc", "folder"],
)
def test_unreadable_input_files_are_one_line_errors(art, tmp_path, content):
    path = tmp_path / ("x.npz" if content in ("object", "badcrc") else "x.npy")
    if content == "object":
        np.savez(path, input=np.array([{"a": 1}, None], dtype=object))
    elif content == "badcrc":
        np.savez(path, input=np.ones((2, 6), np.float32))
        data = bytearray(path.read_bytes())
        pos = data.find(b"\x00\x00\x80\x3f")  # a 1.0f inside the stored array
        data[pos + 3] ^= 0x01
        path.write_bytes(bytes(data))
    elif content == "folder":
        path.mkdir()
    else:
        path.write_bytes(content)
    assert_one_line_error(cli("predict", str(art["mlp_onnx_vectorized"]), "-i", str(path)))


@pytest.mark.parametrize("fmt", ["onnx", "torchscript"])
def test_ids_beyond_an_unrecorded_vocabulary_are_a_typed_error(art, fmt):
    """Without a recorded range the runtime cannot know the vocabulary: the backend's failure
    becomes an ArtifactError naming the likely cause (no raw onnxruntime/torch exception)."""
    from illia_export.errors import IlliaExportError

    p = load(art[f"tok_{fmt}_norange"])
    with pytest.raises(IlliaExportError, match="vocabulary"):
        p.predict(np.array([[0, VOCAB + 100, 1]], np.int64), num_samples=2, seed=0)
