"""Engine-ready predictors: picklable (for worker processes), thread count from the CPU
affinity, warmup."""

from __future__ import annotations

import multiprocessing
import os
import pickle

import numpy as np
import pytest

from illia_export.errors import InputError
from illia_export.runtime import load
from illia_export.runtime.predictor import default_threads

SEED = 1234
S = 7


def _x(batch: int = 5) -> np.ndarray:
    return np.random.default_rng(0).normal(size=(batch, 6)).astype(np.float32)


def _affinity() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - non-Linux
        return os.cpu_count() or 1


def _predict_in_worker(args):
    """Runs in a spawned process: unpickle the predictor, predict, return the samples."""
    blob, x, strategy = args
    pred = pickle.loads(blob)
    out = pred.predict(x, num_samples=S, seed=SEED, strategy=strategy)
    return {k: np.asarray(v) for k, v in out.outputs.items()}, pred.threads


KEYS = ["mlp_onnx_vectorized", "mlp_onnx_per-call", "mlp_torchscript_vectorized", "mlp_torchscript_per-call"]


@pytest.mark.parametrize("key", KEYS)
@pytest.mark.parametrize("strategy", ["fresh", "bank"])
def test_pickled_predictor_is_bit_identical(artifacts, key, strategy):
    pred = load(artifacts[key])
    x = _x()
    before = pred.predict(x, num_samples=S, seed=SEED, strategy=strategy)  # fills the caches
    clone = pickle.loads(pickle.dumps(pred))
    assert clone is not pred and clone.backend is not pred.backend
    assert not clone._sources["bank"]._banks and clone._sources["local"]._cache is None  # caches are not shipped
    assert clone.threads == pred.threads and clone.device == pred.device
    after = clone.predict(x, num_samples=S, seed=SEED, strategy=strategy)
    for name, value in before.outputs.items():
        np.testing.assert_array_equal(np.asarray(after.outputs[name]), np.asarray(value))
    # the clone's lock is its own
    assert clone._lock is not pred._lock


@pytest.mark.parametrize("key", ["mlp_onnx_vectorized", "mlp_torchscript_vectorized"])
def test_pickled_predictor_in_spawned_worker(artifacts, key):
    pred = load(artifacts[key], threads=1)
    x = _x()
    blob = pickle.dumps(pred)
    expected = {s: pred.predict(x, num_samples=S, seed=SEED, strategy=s).outputs for s in ("fresh", "bank")}
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(1) as pool:
        results = pool.map(_predict_in_worker, [(blob, x, "fresh"), (blob, x, "bank")])
    for (samples, threads), strategy in zip(results, ("fresh", "bank")):
        assert threads == 1  # the load options travel with the predictor
        for name, value in expected[strategy].items():
            np.testing.assert_array_equal(samples[name], np.asarray(value))


def test_default_threads_follow_affinity(artifacts):
    assert default_threads() == _affinity()
    pred = load(artifacts["mlp_onnx_vectorized"])
    assert pred.threads == _affinity()
    assert pred.backend._so.intra_op_num_threads == _affinity()
    ts = load(artifacts["mlp_torchscript_vectorized"])
    assert ts.threads == _affinity()
    assert ts.backend.options["num_threads"] == _affinity()


def test_threads_option(artifacts):
    pred = load(artifacts["mlp_onnx_vectorized"], threads=1)
    assert pred.threads == 1 and pred.backend._so.intra_op_num_threads == 1
    assert load(artifacts["mlp_onnx_vectorized"], intra_op_num_threads=1).threads == 1
    with pytest.raises(InputError, match="threads"):
        load(artifacts["mlp_onnx_vectorized"], threads=0)
    with pytest.raises(InputError, match="disagree"):
        load(artifacts["mlp_onnx_vectorized"], threads=1, intra_op_num_threads=2)


def test_session_options_predictor_is_refused_by_pickle(artifacts):
    import onnxruntime as ort

    pred = load(artifacts["mlp_onnx_vectorized"], session_options=ort.SessionOptions())
    with pytest.raises(InputError, match="session_options"):
        pickle.dumps(pred)


@pytest.mark.parametrize("key", ["mlp_onnx_vectorized", "mlp_torchscript_per-call", "lstm_onnx", "cnn_onnx"])
def test_warmup_runs(artifacts, key, monkeypatch):
    pred = load(artifacts[key])
    calls = []
    original = pred._predict
    monkeypatch.setattr(pred, "_predict", lambda *a: calls.append(a) or original(*a))
    pred.warmup()
    assert len(calls) == 1
    assert calls[0][1] == 1  # S = 1
    assert not pred._sources["bank"]._banks  # no bank drawn


def test_warmup_load_option(artifacts, monkeypatch):
    from illia_export.runtime.predictor import Predictor

    seen = []
    original = Predictor.warmup
    monkeypatch.setattr(Predictor, "warmup", lambda self: seen.append(self) or original(self))
    load(artifacts["lstm_onnx"])
    assert seen == []
    pred = load(artifacts["lstm_onnx"], warmup=True)
    assert seen == [pred]
    pickle.loads(pickle.dumps(pred))  # the option travels: the worker warms up too
    assert len(seen) == 2


def test_running_onnx_on_the_cpu_does_not_import_torch(artifacts):
    """Every worker (CLI, Ray actor, server replica) pays for its imports: an ONNX artifact on the
    CPU needs onnxruntime and the noise kernel, not torch (a ~1 s import)."""
    import subprocess
    import sys

    from illia_export.runtime.noise import kernel_available

    if not kernel_available():
        pytest.skip("without the compiled noise kernel the noise comes from torch's port")
    code = (
        "import sys, numpy as np; from illia_export.runtime import load; "
        f"p = load({str(artifacts['mlp_onnx_vectorized'])!r}, warmup=True); x = np.zeros((3, 6), np.float32); "
        "[p.predict(x, num_samples=4, seed=1, strategy=s) for s in ('fresh', 'bank', 'local')]; "
        "p.predict(x, num_samples=4, seed=1, row_ids=[1, 2, 3]); print('torch' in sys.modules)"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert res.stdout.strip() == "False", res.stdout + res.stderr
