"""One Predictor shared by threads returns, for every call, exactly what it returns alone."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from illia_export.runtime import load

CASES = ["mlp_onnx_vectorized", "mlp_onnx_per-call", "mlp_torchscript_vectorized", "mlp_torchscript_per-call"]


def _jobs():
    rng = np.random.default_rng(0)
    return [
        (rng.standard_normal((int(rng.integers(1, 9)), 6)).astype(np.float32), seed, strategy)
        for seed in range(24)
        for strategy in (("fresh", "bank") if seed % 3 else ("fresh",))
    ]


@pytest.mark.parametrize("key", CASES)
def test_shared_predictor_matches_single_threaded_results(art, key):
    jobs = _jobs()
    reference = load(art[key])
    expected = [reference.predict(x, num_samples=6, seed=s, strategy=st).samples for x, s, st in jobs]
    shared = load(art[key])
    barrier = threading.Barrier(8)

    def run(i):
        if i < 8:
            barrier.wait()
        x, s, st = jobs[i]
        return shared.predict(x, num_samples=6, seed=s, strategy=st).samples

    for _ in range(2):
        with ThreadPoolExecutor(8) as pool:
            got = list(pool.map(run, range(len(jobs))))
        for i, (g, e) in enumerate(zip(got, expected)):
            np.testing.assert_array_equal(g, e, err_msg=f"job {i} {jobs[i][1:]} got another call's noise")


def test_bank_depends_on_the_seed(art):
    """Guard: a bank cache that ignored the seed would return seed 1's ensemble for seed 2."""
    p = load(art["mlp_onnx_vectorized"])
    x = np.ones((3, 6), np.float32)
    b1 = p.predict(x, num_samples=5, seed=1, strategy="bank").samples
    b2 = p.predict(x, num_samples=5, seed=2, strategy="bank").samples
    assert not np.allclose(b1, b2)
    np.testing.assert_allclose(b2, p.predict(x, num_samples=5, seed=2, strategy="fresh").samples, atol=1e-5)
    np.testing.assert_allclose(p.predict(x, num_samples=5, seed=1, strategy="bank").samples, b1, atol=0)
    # and on S: a bank of 3 samples is not the first 3 of a cached bank of 5 by accident only
    b3 = p.predict(x, num_samples=3, seed=1, strategy="bank").samples
    np.testing.assert_allclose(b3, b1[:3], atol=1e-5)
