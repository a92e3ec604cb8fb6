"""Prediction summaries against hand computations on tiny arrays."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from illia_export.runtime import Prediction, TaskError

# S=2 samples, B=2 rows, C=2 classes.
LOGITS = np.array(
    [
        [[0.0, 0.0], [math.log(3.0), 0.0]],  # softmax: [.5, .5], [.75, .25]
        [[math.log(3.0), 0.0], [math.log(3.0), 0.0]],  # softmax: [.75, .25], [.75, .25]
    ],
    dtype=np.float32,
)


def _h(*p):
    return -sum(x * math.log(x) for x in p if x > 0)


def test_classification_measures_match_hand_values():
    pred = Prediction({"logits": LOGITS}, task="classification", seed=3, strategy="fresh")
    np.testing.assert_allclose(pred.probabilities, [[0.625, 0.375], [0.75, 0.25]], atol=1e-6)
    np.testing.assert_array_equal(pred.predicted_class, [0, 0])
    pe = [_h(0.625, 0.375), _h(0.75, 0.25)]
    ee = [(_h(0.5, 0.5) + _h(0.75, 0.25)) / 2, _h(0.75, 0.25)]
    np.testing.assert_allclose(pred.predictive_entropy, pe, atol=1e-6)
    np.testing.assert_allclose(pred.expected_entropy, ee, atol=1e-6)
    np.testing.assert_allclose(pred.mutual_information, [pe[0] - ee[0], 0.0], atol=1e-6)
    assert pred.mutual_information[0] > 0.01
    assert pred.num_samples == 2 and pred.output_name == "logits"


def test_mean_std_quantiles_interval():
    samples = np.array([[1.0], [2.0], [3.0], [4.0], [5.0]], dtype=np.float32)[:, :, None]  # [5, 1, 1]
    pred = Prediction({"y": samples}, task="regression")
    assert pred.mean.shape == (1, 1) and pred.mean[0, 0] == pytest.approx(3.0)
    assert pred.std[0, 0] == pytest.approx(math.sqrt(2.0))  # ddof=0
    assert pred.quantiles(0.5)[0, 0] == pytest.approx(3.0)
    q = pred.quantiles([0.25, 0.75])
    assert q.shape == (2, 1, 1) and q[:, 0, 0].tolist() == pytest.approx([2.0, 4.0])
    lo, hi = pred.interval(0.5)
    assert (lo[0, 0], hi[0, 0]) == pytest.approx((2.0, 4.0))
    lo, hi = pred.interval(0.9)
    assert (lo[0, 0], hi[0, 0]) == pytest.approx((1.2, 4.8))


def test_task_specific_measures_refuse_other_tasks():
    reg = Prediction({"y": np.zeros((3, 2, 1), np.float32)}, task="regression")
    for name in (
        "probabilities",
        "predicted_class",
        "predictive_entropy",
        "expected_entropy",
        "mutual_information",
    ):
        with pytest.raises(TaskError, match="classification"):
            getattr(reg, name)
    cls = Prediction({"y": LOGITS}, task="classification")
    with pytest.raises(TaskError, match="regression"):
        cls.interval(0.9)
    with pytest.raises(TaskError, match="between 0 and 1"):
        reg.interval(1.5)
    with pytest.raises(TaskError, match=r"\[0, 1\]"):
        reg.quantiles(1.2)


def test_multi_output_summarizes_the_first_and_keeps_all():
    a = np.arange(12, dtype=np.float32).reshape(3, 2, 2)
    pred = Prediction({"first": a, "second": a + 100})
    np.testing.assert_array_equal(pred.samples, a)
    np.testing.assert_allclose(pred.mean, a.mean(0))
    np.testing.assert_array_equal(pred.outputs["second"], a + 100)


def test_to_dict_json_and_npz_round_trip(tmp_path):
    pred = Prediction({"logits": LOGITS, "aux": LOGITS * 2}, task="classification", seed=9, strategy="bank")
    d = pred.to_dict()
    assert (
        d["task"] == "classification" and d["seed"] == 9 and d["strategy"] == "bank" and d["num_samples"] == 2
    )
    np.testing.assert_allclose(d["probabilities"], pred.probabilities)
    assert "samples" not in d
    js = json.loads(pred.to_json(include_samples=True))
    np.testing.assert_allclose(js["samples"]["aux"], LOGITS * 2)
    np.testing.assert_allclose(js["mutual_information"], pred.mutual_information)
    path = tmp_path / "p.npz"
    pred.save_npz(path)
    with np.load(path) as z:
        np.testing.assert_array_equal(z["samples"], LOGITS)
        np.testing.assert_array_equal(z["samples/aux"], LOGITS * 2)
        np.testing.assert_allclose(z["predictive_entropy"], pred.predictive_entropy)
        assert str(z["task"]) == "classification" and int(z["seed"]) == 9


def test_regression_dict_has_interval():
    pred = Prediction({"y": np.arange(10, dtype=np.float32).reshape(10, 1, 1)}, task="regression", seed=None)
    d = pred.to_dict()
    assert d["interval_90_lower"][0][0] == pytest.approx(0.45) and d["interval_90_upper"][0][
        0
    ] == pytest.approx(8.55)
    assert d["seed"] is None


def test_softmax_is_stable_for_large_logits():
    logits = np.array([[[1000.0, 0.0]], [[0.0, 1000.0]]], dtype=np.float32)
    pred = Prediction({"l": logits}, task="classification")
    np.testing.assert_allclose(pred.probabilities, [[0.5, 0.5]], atol=1e-12)
    assert pred.expected_entropy[0] == pytest.approx(0.0, abs=1e-12)
    assert pred.mutual_information[0] == pytest.approx(math.log(2))
