"""Memory is bounded up front: chunk sizes from noise + activations + outputs, and a clear
ResourceError before any large allocation when the result cannot fit."""

from __future__ import annotations

import time

import numpy as np
import pytest

import illia_export.runtime.memory as memory_module
from illia_export.errors import ResourceError
from illia_export.runtime import load
from illia_export.runtime.sampling import ACTIVATION_FACTOR, NOISE_COPIES, default_chunk

from .conftest import assert_one_line_error, cli

X = np.ones((4, 6), np.float32)


@pytest.fixture(autouse=True)
def _no_cached_limit(monkeypatch):
    """Each test sees its own (possibly patched) memory limit, not one measured earlier."""
    monkeypatch.setattr(memory_module, "_cache", [0.0, 0.0])


def test_huge_sample_count_fails_fast_before_allocating(art, monkeypatch):
    p = load(art["mlp_onnx_vectorized"])
    t = time.perf_counter()
    with pytest.raises(ResourceError, match="the result .* needs .* available"):
        p.predict(X, num_samples=10**12, seed=0)
    assert time.perf_counter() - t < 5
    # one row: the result (3 floats a sample) fits, the bank (83 noise floats a sample) does not
    monkeypatch.setattr(memory_module, "available_memory", lambda: 1_000_000)
    with pytest.raises(ResourceError, match="noise bank"):
        p.predict(X[:1], num_samples=10_000, seed=0, strategy="bank")


def test_cli_huge_samples_is_one_line(art, tmp_path):
    np.save(tmp_path / "x.npy", X)
    r = cli("predict", str(art["mlp_onnx_vectorized"]), "-i", str(tmp_path / "x.npy"), "-S", str(10**12))
    assert_one_line_error(r, "needs")


def test_result_that_does_not_fit_is_refused(art, monkeypatch):
    p = load(art["mlp_onnx_vectorized"])
    monkeypatch.setattr(memory_module, "available_memory", lambda: 10_000)
    with pytest.raises(ResourceError, match="lower the number of samples"):
        p.predict(np.ones((400, 6), np.float32), num_samples=64, seed=0)


def test_default_chunk_counts_activations_and_outputs():
    # noise only: 1000 elements -> 4 * 3 * 1000 bytes per sample
    assert default_chunk(10**6, 1000, max_bytes=12_000 * 50) == 50
    # activations and outputs shrink the chunk
    assert default_chunk(10**6, 1000, max_bytes=12_000 * 50, other_bytes_per_sample=12_000) == 25
    assert default_chunk(7, 10, max_bytes=1 << 30) == 7  # never more than S
    assert default_chunk(10, 10**9, max_bytes=1) == 1  # never less than 1
    assert NOISE_COPIES >= 2 and ACTIVATION_FACTOR >= 8


def test_memory_budget_bounds_the_chunk_and_results_do_not_depend_on_it(art):
    """400 rows: the default chunk is sized from the activations, not only the noise."""
    x = np.random.default_rng(0).standard_normal((400, 6)).astype(np.float32)
    big = load(art["mlp_onnx_vectorized"])
    expected = big.predict(x, num_samples=16, seed=3).samples
    small = load(art["mlp_onnx_vectorized"], memory_budget=ACTIVATION_FACTOR * 400 * (6 + 3) * 4 * 3)
    calls = []
    run, run_weights = small.backend.run, small.backend.run_weights
    small.backend.run = lambda inputs, noise: calls.append(noise[0].shape[0]) or run(inputs, noise)
    # fresh noise may be fed as weights (mu + sigma * eps written by the noise kernel)
    small.backend.run_weights = lambda inputs, noise, plan: calls.append(noise[0].shape[0]) or run_weights(
        inputs, noise, plan
    )
    got = small.predict(x, num_samples=16, seed=3).samples
    assert max(calls) <= 3 and sum(calls) == 16, calls
    np.testing.assert_allclose(got, expected, atol=1e-6)


def test_bad_memory_budget_is_refused(art):
    from illia_export.errors import InputError

    with pytest.raises(InputError):
        load(art["mlp_onnx_vectorized"], memory_budget=0)
