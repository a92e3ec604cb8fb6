"""The v2 protocol functions, without a server: every rule a request must pass."""

from __future__ import annotations

import numpy as np
import pytest

from illia_export.artifact.manifest import TensorSpec
from illia_export.errors import InputError, ShapeError, StrategyError
from illia_export.serve import protocol
from illia_export.serve.protocol import (
    Limits,
    decode_inputs,
    decode_parameters,
    decode_request,
    encode_outputs,
)

X = TensorSpec("input", ["batch", 6], "float32")
TOKENS = TensorSpec("tokens", ["batch", "time"], "int64", range=[0, 50])
LIMITS = Limits(default_samples=32, max_samples=64, default_strategy="fresh", strategies=("fresh", "bank"))


def tensor(name="input", shape=(2, 6), datatype="FP32", data=None):
    n = int(np.prod(shape))
    return {"name": name, "shape": list(shape), "datatype": datatype, "data": list(range(n)) if data is None else data}


def test_good_input_is_cast_to_the_manifest_dtype_in_row_major_order():
    arrays, rows = decode_inputs([tensor(datatype="FP64", data=[0.1 * i for i in range(12)])], [X])
    assert rows == 2 and arrays[0].dtype == np.float32 and arrays[0].shape == (2, 6)
    np.testing.assert_array_equal(arrays[0], (0.1 * np.arange(12)).reshape(2, 6).astype(np.float32))
    nested, _ = decode_inputs([tensor(data=[[1, 2, 3, 4, 5, 6], [7, 8, 9, 10, 11, 12]])], [X])
    np.testing.assert_array_equal(nested[0], np.arange(1, 13, dtype=np.float32).reshape(2, 6))


def test_inputs_in_manifest_order_with_shared_batch_dim():
    specs = [X, TOKENS]
    arrays, rows = decode_inputs(
        [tensor("tokens", (3, 4), "INT32", data=[1] * 12), tensor("input", (3, 6))], specs
    )
    assert rows == 3 and [a.dtype for a in arrays] == [np.float32, np.int64]
    with pytest.raises(ShapeError, match="dim 'batch' is 3 in another input, got 2"):
        decode_inputs([tensor("input", (3, 6)), tensor("tokens", (2, 4), "INT64", data=[1] * 8)], specs)


@pytest.mark.parametrize(
    "item, match",
    [
        (tensor(shape=(2, 5)), r"must have shape \[batch, 6\] FP32, got \[2, 5\] \(axis 1\)"),
        (tensor(shape=(12,)), r"must have shape \[batch, 6\] FP32, got \[12\] \(rank 1\)"),
        (tensor(shape=(2, 6), data=list(range(11))), r"shape \[2, 6\] needs 12 values, `data` holds 11"),
        (tensor(shape=(0, 6), data=[]), r"empty \(batch of 0\)"),
        (tensor(shape=(2, -6)), "non-negative integers"),
        (tensor(datatype="INT64"), "must be .* FP32, got datatype INT64"),
        (tensor(datatype="BYTES"), "not a numeric v2 datatype"),
        (tensor(data=[0, 1, 2, None, 4, 5, 6, 7, 8, 9, 10, 11]), "numbers only"),
        (tensor(data=[[1, 2], [3]]), "not a rectangular array|numbers only"),
        (tensor(data="abc"), "must be a JSON array"),
        (dict(tensor(), data=None), "no `data`"),
    ],
)
def test_bad_tensors_are_refused_naming_the_problem(item, match):
    with pytest.raises(ShapeError, match=match):
        decode_inputs([item], [X])


def test_names_must_match_the_manifest():
    with pytest.raises(ShapeError, match=r"missing \['input'\], unknown \['x'\]"):
        decode_inputs([tensor("x")], [X])
    with pytest.raises(ShapeError, match="given twice"):
        decode_inputs([tensor(), tensor()], [X])
    with pytest.raises(ShapeError, match="non-empty list"):
        decode_inputs([], [X])


def test_integer_inputs_need_integers_in_range():
    with pytest.raises(ShapeError, match="must hold integers, got non-integer numbers"):
        decode_inputs([tensor("tokens", (1, 2), "INT64", data=[1.5, 2])], [TOKENS])
    with pytest.raises(InputError, match=r"value 50 at index \[0, 1\] is outside the model's values \[0, 50\)"):
        decode_inputs([tensor("tokens", (1, 2), "INT64", data=[3, 50])], [TOKENS])
    with pytest.raises(ShapeError, match="got datatype FP32"):
        decode_inputs([tensor("tokens", (1, 2), "FP32", data=[3, 4])], [TOKENS])


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), 1e39])
def test_non_finite_values_are_refused_after_the_cast(bad):
    data = [0.0] * 12
    data[7] = bad
    with pytest.raises(InputError, match=r"1 non-finite values .* index \[1, 1\]"):
        decode_inputs([tensor(datatype="FP64", data=data)], [X])


def test_parameters_defaults_and_bounds():
    assert decode_parameters(None, LIMITS) == (32, None, "fresh")
    assert decode_parameters({"num_samples": 64, "seed": 2**64 - 1, "strategy": "bank"}, LIMITS) == (64, 2**64 - 1, "bank")
    assert decode_parameters({"seed": "18446744073709551615"}, LIMITS)[1] == 2**64 - 1
    for bad, match in [
        ({"num_samples": 65}, r"num_samples \(=65\) must lie in \[1, 64\].*--max-samples"),
        ({"num_samples": 0}, r"must lie in \[1, 64\]"),
        ({"num_samples": True}, "must be an integer"),
        ({"num_samples": 2.0}, "must be an integer"),
        ({"seed": -1}, r"seed \(=-1\) must lie in \[0, 2\*\*64\)"),
        ({"seed": 2**64}, r"must lie in \[0, 2\*\*64\)"),
        ({"seed": "abc"}, "must be an integer"),
        ({"seed": 1.5}, "must be an integer"),
        ({"num_sample": 3}, r"unknown request parameters \['num_sample'\]"),
    ]:
        with pytest.raises(InputError, match=match):
            decode_parameters(bad, LIMITS)
    with pytest.raises(StrategyError, match="no local-reparameterization variant"):
        decode_parameters({"strategy": "local"}, LIMITS)
    with pytest.raises(StrategyError, match=r"must be one of \['fresh', 'bank'\]"):
        decode_parameters({"strategy": "nope"}, LIMITS)


def test_requested_outputs_must_exist():
    req = decode_request([tensor()], {"seed": 1}, [X], LIMITS, ["mean"], ["mean", "std"])
    assert req.outputs == ["mean"] and req.seed == 1 and req.rows == 2
    with pytest.raises(ShapeError, match=r"requested outputs \['nope'\] do not exist"):
        decode_request([tensor()], None, [X], LIMITS, ["nope"], ["mean", "std"])


def test_outputs_are_batch_first_with_v2_datatypes():
    summaries = {
        "mean": np.zeros((2, 3), np.float32),
        "probabilities": np.full((2, 3), np.nan),
        "predicted_class": np.array([1, 2], np.int64),
    }
    out = encode_outputs(summaries)
    assert [(o.name, o.shape, o.datatype) for o in out] == [
        ("mean", [2, 3], "FP32"),
        ("probabilities", [2, 3], "FP64"),
        ("predicted_class", [2], "INT64"),
    ]
    assert [o.name for o in encode_outputs(summaries, ["predicted_class"])] == ["predicted_class"]


def test_metadata_marks_symbolic_dims():
    assert protocol.input_metadata([X, TOKENS]) == [
        {"name": "input", "datatype": "FP32", "shape": [-1, 6]},
        {"name": "tokens", "datatype": "INT64", "shape": [-1, -1]},
    ]
    meta = protocol.output_metadata(
        {"mean": np.zeros((1, 3), np.float32), "predicted_class": np.zeros(1, np.int64)}, ["batch", 3]
    )
    assert meta == [
        {"name": "mean", "datatype": "FP32", "shape": [-1, 3]},
        {"name": "predicted_class", "datatype": "INT64", "shape": [-1]},
    ]
