"""Unit tests of the pieces predictor.py orchestrates: the noise sources and their cache keys
(runtime/strategies.py), the shared input checks (runtime/inputs.py, also serve's), and the
memory limits (runtime/memory.py). No export: each test runs in well under a second, so the
mutants of tests/mutants/runtime.json are checked fast."""

from __future__ import annotations

import numpy as np
import pytest

from illia_export.artifact.manifest import NoiseSpec, TensorSpec
from illia_export.errors import InputError, ResourceError, ShapeError
from illia_export.runtime import inputs, memory
from illia_export.runtime import noise as nz
from illia_export.runtime.backends import Backend
from illia_export.runtime.sampling import NoiseMaker
from illia_export.runtime.strategies import (
    BankSource,
    FreshSource,
    LocalSource,
    NoiseRequest,
    keyed_streams,
    row_noise,
)

GEN = nz.GENERATOR_V2


class FakeBackend(Backend):
    """What a source asks of a backend: the base class's answers (no weight plan, no
    precomputed bank values)."""

    def __init__(self) -> None:  # no graph to open
        pass

    def run(self, inputs, noise):  # pragma: no cover - sources never run the graph
        raise AssertionError("a noise source ran the graph")


def request(seed=7, S=5, B=3, specs=None, keyed=None, words=None, explicit=True, impl="numpy") -> NoiseRequest:
    specs = specs or [
        NoiseSpec("eps_w", "w", ["samples", 4, 2]),
        NoiseSpec("eps_a", "a", ["samples", "batch", 3]),
        NoiseSpec("eps_b", "b", ["samples", "batch", 2, 2]),
    ]
    from illia_export.runtime.strategies import resolve_noise_shapes

    shapes = resolve_noise_shapes(specs, B, {})
    keyed = keyed_streams(specs) if keyed is None else keyed
    words = np.arange(B, dtype=np.uint64) if words is None else words
    return NoiseRequest(FakeBackend(), NoiseMaker("numpy", "cpu", impl), specs, shapes, keyed, words, seed, explicit,
                        S, GEN, True, use_kernel=impl == "auto")


def reference_row(seed, stream, word, n_row, s, i):
    key = nz.mix64_int(nz.stream_key(seed, stream) + nz.GOLDEN * (word + 1))
    return nz.v2_value(nz.v2_hash_int(key, s * n_row + i))


# ------------------------------------------------------------------------ row keys
@pytest.mark.parametrize("impl", ["numpy", "auto"])
def test_each_row_keyed_stream_uses_its_own_stream_key(impl):
    """Guard (mutant 'every stream keyed as stream 0'): streams 1 and 2 are keyed with their
    own position, checked against the scalar reference of docs/noise.md."""
    req = request(impl=impl)
    assert req.keyed == [1, 2]
    noise = row_noise(req, 0, req.num_samples, [np.zeros((req.num_samples, *s), np.float32) for s in req.shapes])
    for k, n_row in ((1, 3), (2, 4)):
        flat = noise[k].reshape(req.num_samples, 3, n_row)
        for b in range(3):
            for s in (0, 4):
                for i in (0, n_row - 1):
                    assert flat[s, b, i] == pytest.approx(reference_row(7, k, b, n_row, s, i), abs=2e-6)
    assert not np.allclose(noise[1][:, :, :2], noise[2][:, :, 0])


@pytest.mark.parametrize("impl", ["numpy", "auto"])
def test_row_noise_of_a_chunk_continues_the_sample_counter(impl):
    """Guard (mutant 'row noise restarting at sample 0 in each chunk'): the chunk [3, 5) is
    samples 3 and 4 of the stream, not samples 0 and 1."""
    req = request(impl=impl)
    empty = [np.zeros((0,), np.float32)] * 3
    whole = row_noise(req, 0, 5, empty)
    part = row_noise(req, 3, 2, empty)
    for k in req.keyed:
        np.testing.assert_array_equal(part[k], whole[k][3:5])
        assert not np.allclose(part[k], whole[k][:2])


def test_weight_streams_use_their_own_stream_key():
    """Guard (mutant 'every stream keyed as stream 0', NoiseMaker side): stream k of a draw is
    standard_normal_v2(seed, k), for the kernel and the references."""
    shapes = [(4,), (3,), (2, 2)]
    for impl in ("numpy", "auto"):
        drawn = NoiseMaker("numpy", "cpu", impl).draw(11, shapes, 2, 3, generator=GEN)
        for k, s in enumerate(shapes):
            np.testing.assert_allclose(drawn[k], nz.standard_normal_v2(11, k, s, 2, 3), atol=2e-6)


# ------------------------------------------------------------------------ caches
def test_local_cache_is_keyed_by_the_seed():
    """Guard (mutant 'the local noise cache ignoring the seed'): seed 2 after seed 1 gets seed
    2's noise, not the cached seed-1 noise."""
    src = LocalSource()
    a = src.open(request(seed=1)).chunk(0, 5).noise
    b = src.open(request(seed=2)).chunk(0, 5).noise
    fresh = FreshSource().open(request(seed=2)).chunk(0, 5).noise
    for k in range(3):
        np.testing.assert_array_equal(b[k], fresh[k])
        assert not np.allclose(a[k], b[k])
    again = src.open(request(seed=2))
    assert again.noise is src._cache[1]  # reused for the same key


def test_local_cache_is_keyed_by_the_row_ids():
    src = LocalSource()
    a = src.open(request(words=np.array([0, 1, 2], np.uint64))).chunk(0, 5).noise
    b = src.open(request(words=np.array([5, 1, 2], np.uint64))).chunk(0, 5).noise
    assert not np.allclose(a[1][:, 0], b[1][:, 0])
    np.testing.assert_array_equal(a[1][:, 1:], b[1][:, 1:])


def test_bank_keeps_one_bank_per_seed_lru_bounded():
    """Two clients alternating seeds: each seed's bank is drawn once (the old single-bank cache
    redrew on every switch, making bank slower than fresh)."""
    req_a, req_b = request(seed=1, specs=[NoiseSpec("w", "w", ["samples", 100])]), None
    nbytes = 4 * req_a.num_samples * 100
    src = BankSource(max_bytes=2 * nbytes)
    draws = []
    real = NoiseMaker.draw

    def counting(self, seed, *args, **kwargs):
        draws.append(seed)
        return real(self, seed, *args, **kwargs)

    NoiseMaker.draw, saved = counting, NoiseMaker.draw
    try:
        for _ in range(3):
            for seed in (1, 2):
                req_b = request(seed=seed, specs=[NoiseSpec("w", "w", ["samples", 100])])
                src.open(req_b).chunk(0, 5)
        assert draws == [1, 2] and src.cached_seeds() == [1, 2]
        src.open(request(seed=3, specs=[NoiseSpec("w", "w", ["samples", 100])]))
        assert src.cached_seeds() == [2, 3]  # the budget holds two: the least recently used went
    finally:
        NoiseMaker.draw = saved
    src.clear()
    assert src.cached_seeds() == [] and src.default_seed is None


# ------------------------------------------------------------------------ inputs
INT32 = TensorSpec("ids", ["batch", 2], "int32")


@pytest.mark.parametrize("value", [2**32 + 3, 2**31, -(2**31) - 1])
def test_int_fit_runtime(value):
    """Guard (mutant 'int-fit check off in the runtime'): 2**32 + 3 would wrap to 3 in int32."""
    with pytest.raises(ShapeError, match=f"value {value} does not fit int32"):
        inputs.check_array(INT32, np.array([[1, value]], np.int64), {})
    ok = inputs.check_array(INT32, np.array([[1, 2**31 - 1]], np.int64), {})
    assert ok.dtype == np.int32 and ok[0, 1] == 2**31 - 1


def test_int_fit_serve():
    """Guard (mutant 'int-fit check off in serve'): the server refuses it too."""
    from illia_export.serve.protocol import decode_inputs

    item = {"name": "ids", "shape": [1, 2], "datatype": "INT64", "data": [1, 2**32 + 3]}
    with pytest.raises(InputError, match="does not fit int32"):
        decode_inputs([item], [INT32])


def test_empty_batch_is_a_shape_error_naming_the_input():
    with pytest.raises(ShapeError, match="'ids' is empty"):
        inputs.prepare([INT32], np.zeros((0, 2), np.int32))


def test_seed_and_count_checks():
    assert inputs.check_seed(2**64 - 1, allow_none=False) == 2**64 - 1
    for bad in (-1, 2**64, 1.5, True):
        with pytest.raises(InputError):
            inputs.check_seed(bad, allow_none=False)
    assert inputs.check_count(None, "chunk_size", allow_none=True) is None
    with pytest.raises(InputError, match="positive integer"):
        inputs.check_count(0, "num_samples")


# ------------------------------------------------------------------------ memory
def test_available_memory_is_the_smallest_limit(monkeypatch):
    monkeypatch.setattr(memory, "_meminfo_available", lambda: 8 << 30)
    monkeypatch.setattr(memory, "cgroup_headroom", lambda: 1 << 30)
    monkeypatch.setattr(memory, "address_space_headroom", lambda: None)
    assert memory.available_memory() == 1 << 30
    monkeypatch.setattr(memory, "address_space_headroom", lambda: 1 << 20)
    assert memory.available_memory() == 1 << 20


@pytest.mark.parametrize("version", ["v2", "v1"])
def test_cgroup_headroom_reads_limit_minus_usage(tmp_path, version):
    root = tmp_path / "cg"
    if version == "v2":
        leaf = root / "app" / "job"
        leaf.mkdir(parents=True)
        (leaf / "memory.max").write_text("1000000\n")
        (leaf / "memory.current").write_text("300000\n")
        (root / "app" / "memory.max").write_text("max\n")
        line = "0::/app/job\n"
    else:
        leaf = root / "memory" / "job"
        leaf.mkdir(parents=True)
        (leaf / "memory.limit_in_bytes").write_text("1000000\n")
        (leaf / "memory.usage_in_bytes").write_text("250000\n")
        (root / "memory" / "memory.limit_in_bytes").write_text("9223372036854771712\n")
        line = "4:memory:/job\n"
    proc = tmp_path / "cgroup"
    proc.write_text(line)
    want = 700000 if version == "v2" else 750000
    assert memory.cgroup_headroom(str(root), str(proc)) == want
    proc.write_text("0::/elsewhere\n")
    assert memory.cgroup_headroom(str(root), str(proc)) is None


def test_rlimit_as_bounds_the_memory_check():
    """A process under `ulimit -v` sees its address-space headroom, not the machine's memory."""
    import subprocess
    import sys

    code = (
        "import resource; from illia_export.runtime import memory as m; "
        "resource.setrlimit(resource.RLIMIT_AS, (4 << 30, resource.RLIM_INFINITY)); "
        "a = m.available_memory(); print(a, m.address_space_headroom())"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    avail, room = int(out[0]), int(out[1])
    assert 0 < room < 4 << 30 and avail <= room


def test_plan_counts_bank_weights_and_chunks_to_fit(monkeypatch):
    monkeypatch.setattr(memory, "available_memory", lambda: 10_000_000)
    monkeypatch.setattr(memory, "_cache", [0.0, 0.0])
    common = dict(num_samples=100, batch=1, input_bytes=0, output_bytes=40, vectorized=True,
                  budget=1 << 40, chunk_size=None)
    # the bank's noise alone (4 MB) fits, noise + its precomputed weights (8 MB) + chunk do not
    memory.plan(noise_elements=10_000, cached_copies=1, **common)
    with pytest.raises(ResourceError, match="noise bank"):
        memory.plan(noise_elements=10_000, cached_copies=2 + 1, **common)
    # fresh: the chunk shrinks to what the process can hold, instead of the budget's 100
    p = memory.plan(noise_elements=10_000, cached_copies=0, **common)
    assert p.chunk < 100 and p.total <= 10_000_000
