"""illia-noise-v1: the numpy reference against the spec, the torch implementation against numpy."""

from __future__ import annotations

import math

import numpy as np
import pytest

from illia_export.runtime import noise

torch = pytest.importorskip("torch")


def _spec_scalar(seed: int, stream: int, n: int, sample: int, element: int) -> float:
    """One element, straight from the docstring of illia_export.runtime.noise (pure Python)."""
    mask = (1 << 64) - 1

    def mix(z: int) -> int:
        z &= mask
        z ^= z >> 30
        z = (z * 0xBF58476D1CE4E5B9) & mask
        z ^= z >> 27
        z = (z * 0x94D049BB133111EB) & mask
        return z ^ (z >> 31)

    golden = 0x9E3779B97F4A7C15
    key = mix(seed + golden * (stream + 1))
    m = (n + 1) // 2
    c = sample * m + element // 2
    z = mix(key + golden * (c + 1))
    u1 = ((z >> 40) + 0.5) / 2**24
    u2 = (((z >> 16) & 0xFFFFFF) + 0.5) / 2**24
    r = math.sqrt(-2.0 * math.log(u1))
    t = 2.0 * math.pi * u2
    return float(np.float32(r * math.cos(t) if element % 2 == 0 else r * math.sin(t)))


@pytest.mark.parametrize("seed,stream,shape", [(0, 0, (5,)), (7, 3, (2, 3)), (2**63 - 1, 1, (4, 1))])
def test_numpy_reference_follows_the_documented_spec(seed, stream, shape):
    n = math.prod(shape)
    got = noise.standard_normal(seed, stream, shape, sample_start=2, num_samples=3)
    assert got.shape == (3, *shape) and got.dtype == np.float32
    flat = got.reshape(3, n)
    for s in range(3):
        for e in range(n):
            assert flat[s, e] == pytest.approx(_spec_scalar(seed, stream, n, 2 + s, e), abs=1e-7)


def test_pinned_values_do_not_change():
    # Fixed by the spec: a regression guard for every reimplementation (C++, Kotlin, Swift).
    got = noise.standard_normal(0, 0, (4,), 0, 1)[0]
    expected = [_spec_scalar(0, 0, 4, 0, e) for e in range(4)]
    np.testing.assert_array_equal(got, np.float32(expected))


@pytest.mark.parametrize("shape", [(1,), (7,), (3, 5), (512, 33), (40000,)])
@pytest.mark.parametrize("seed", [0, 123456789, 2**62 + 11])
def test_torch_matches_numpy(shape, seed):
    ref = noise.standard_normal(seed, 2, shape, sample_start=3, num_samples=4)
    got = noise.standard_normal_torch(seed, 2, shape, sample_start=3, num_samples=4)
    assert got.dtype == torch.float32 and tuple(got.shape) == (4, *shape)
    np.testing.assert_allclose(got.numpy(), ref, rtol=0, atol=1e-6)


def test_torch_matches_numpy_on_a_large_draw():
    # Several worker threads and blocks; covers the extreme tails (|z| up to ~5.9).
    ref = noise.standard_normal(5, 0, (300_001,), 0, 8)
    got = noise.standard_normal_torch(5, 0, (300_001,), 0, 8).numpy()
    np.testing.assert_allclose(got, ref, rtol=0, atol=1e-6)


@pytest.mark.parametrize("impl", ["numpy", "torch"])
def test_chunking_does_not_change_the_stream(impl):
    gen = noise.standard_normal if impl == "numpy" else (lambda *a: noise.standard_normal_torch(*a).numpy())
    whole = gen(11, 4, (9, 3), 0, 10)
    parts = np.concatenate([gen(11, 4, (9, 3), 0, 3), gen(11, 4, (9, 3), 3, 1), gen(11, 4, (9, 3), 4, 6)])
    np.testing.assert_array_equal(whole, parts)


def test_torch_block_and_thread_layout_do_not_change_the_stream(monkeypatch):
    ref = noise.standard_normal_torch(3, 1, (70_000,), 0, 3).numpy()
    monkeypatch.setattr(noise, "_CPU_BLOCK", 1000)
    monkeypatch.setattr(noise, "_MIN_SHARE", 5000)
    monkeypatch.setattr(noise, "_cpu_workers", lambda: 3)
    np.testing.assert_array_equal(noise.standard_normal_torch(3, 1, (70_000,), 0, 3).numpy(), ref)


def test_torch_out_buffer_is_written_in_place():
    out = torch.full((2, 6), float("nan"))
    res = noise.standard_normal_torch(1, 0, (6,), 0, 2, out=out)
    assert res is out
    np.testing.assert_allclose(out.numpy(), noise.standard_normal(1, 0, (6,), 0, 2), atol=1e-6)
    with pytest.raises(ValueError, match="shape"):
        noise.standard_normal_torch(1, 0, (6,), 0, 3, out=out)


def test_streams_and_seeds_differ_and_look_standard_normal():
    a = noise.standard_normal_torch(0, 0, (200_000,), 0, 1).numpy().ravel()
    b = noise.standard_normal_torch(0, 1, (200_000,), 0, 1).numpy().ravel()
    c = noise.standard_normal_torch(1, 0, (200_000,), 0, 1).numpy().ravel()
    for v in (a, b, c):
        assert abs(v.mean()) < 0.01 and abs(v.std() - 1) < 0.01
        assert abs(np.mean(v**4) - 3) < 0.05  # kurtosis of a normal
    assert abs(np.corrcoef(a, b)[0, 1]) < 0.01 and abs(np.corrcoef(a, c)[0, 1]) < 0.01
    # even/odd elements (cos/sin of one pair) are uncorrelated
    assert abs(np.corrcoef(a[0::2], a[1::2])[0, 1]) < 0.01


def test_negative_seed_is_rejected():
    with pytest.raises(ValueError, match="non-negative"):
        noise.standard_normal(-1, 0, (2,))


def test_documented_test_vectors():
    # docs/noise.md, "Test vectors"
    assert noise.stream_key(0, 0) == 0xE220A8397B1DCDAF
    assert noise.stream_key(0, 1) == 0x6E789E6AA1B965F4
    assert noise.stream_key(42, 3) == 0x581CE1FF0E4AE394
    expected = [
        [0.36824694, 0.84760857, 0.8335688, 0.1226892, -0.6785614],
        [-0.8745516, -0.27764657, 0.635246, 0.27047816, -1.6727827],
    ]
    np.testing.assert_allclose(noise.standard_normal(0, 0, (5,), 0, 2), expected, rtol=0, atol=1e-7)
    np.testing.assert_allclose(
        noise.standard_normal(42, 3, (2, 2), 7, 1),
        [[[-0.24189511, 0.018521747], [1.5180649, 0.019061686]]],
        atol=1e-7,
    )


def test_noise_maker_falls_back_to_cpu_noise_when_torch_has_no_cuda():
    from illia_export.runtime.sampling import NoiseMaker

    if torch.cuda.is_available():
        pytest.skip("torch has CUDA here")
    maker = NoiseMaker("torch", "cuda")
    assert (maker.kind, maker.device) == ("numpy", "cpu")
    (eps,) = maker.draw(4, [(3,)], 0, 2)
    np.testing.assert_allclose(eps, noise.standard_normal(4, 0, (3,), 0, 2), atol=1e-6)


# =============================================================================================
# illia-noise-v2
# =============================================================================================
from illia_export.runtime.noise import (  # noqa: E402
    GENERATOR_V1,
    GENERATOR_V2,
    fill_v2,
    kernel_available,
    standard_normal_v2,
    standard_normal_v2_torch,
)

needs_kernel = pytest.mark.skipif(
    not kernel_available(), reason="the compiled v2 kernel is not built (pip install -e . builds it)"
)


def _v2_spec_scalar(seed: int, stream: int, n: int, sample: int, element: int) -> float:
    """One v2 element straight from docs/noise.md, written independently of the package."""
    m64, m32 = (1 << 64) - 1, (1 << 32) - 1

    def mix(z: int) -> int:
        z &= m64
        z ^= z >> 30
        z = (z * 0xBF58476D1CE4E5B9) & m64
        z ^= z >> 27
        z = (z * 0x94D049BB133111EB) & m64
        return z ^ (z >> 31)

    def lowbias32(x: int) -> int:
        x ^= x >> 16
        x = (x * 0x21F0AAAD) & m32
        x ^= x >> 15
        x = (x * 0x735A2D97) & m32
        return x ^ (x >> 15)

    key = mix(seed + 0x9E3779B97F4A7C15 * (stream + 1))
    c = sample * n + element
    h = lowbias32(lowbias32((c & m32) ^ (key & m32)) ^ (((key >> 32) + 0x9E3779B9 * (c >> 32)) & m32))
    j = h & 0x7FFFFFFF
    p = (j + 0.5) / 2**32
    if p >= 0.075:
        q = p - 0.5
        r = 0.180625 - q * q
        x = (
            q
            * (((59.109374720 * r + 159.29113202) * r + 50.434271938) * r + 3.3871327179)
            / (((67.187563600 * r + 78.757757664) * r + 17.895169469) * r + 1.0)
        )
    else:
        t = math.sqrt(-math.log(p)) - 1.6
        x = -(((0.17023821103 * t + 1.3067284816) * t + 2.7568153900) * t + 1.4234372777) / (
            (0.12021132975 * t + 0.73700164250) * t + 1.0
        )
    return float(np.float32(-x if h >> 31 else x))


@pytest.mark.parametrize(
    "seed,stream,shape,start",
    [(0, 0, (5,), 0), (7, 3, (2, 3), 2), (2**63 - 1, 1, (4, 1), 5), (1, 2, (3,), (2**32 - 4) // 3)],
)
def test_v2_reference_follows_the_documented_spec(seed, stream, shape, start):
    # the last case crosses counter 2**32 (hi word 0 -> 1)
    n = math.prod(shape)
    got = standard_normal_v2(seed, stream, shape, sample_start=start, num_samples=3)
    assert got.shape == (3, *shape) and got.dtype == np.float32
    flat = got.reshape(3, n)
    for s in range(3):
        for e in range(n):
            assert flat[s, e] == pytest.approx(_v2_spec_scalar(seed, stream, n, start + s, e), abs=1e-7)


def test_v2_documented_test_vectors():
    # docs/noise.md, "Test vectors (v2)"
    from illia_export.runtime.noise import stream_key, v2_hash_int

    assert v2_hash_int(stream_key(0, 0), 0) == 0x1DA4112D
    np.testing.assert_allclose(
        standard_normal_v2(0, 0, (5,), 0, 2),
        [
            [-1.1963259, 1.6444299, 1.3074988, -0.1244752, -0.002103322],
            [2.3204765, 1.7000899, -0.45977551, -1.4248199, -0.23841004],
        ],
        rtol=0,
        atol=1e-7,
    )
    np.testing.assert_allclose(
        standard_normal_v2(42, 3, (2, 2), 7, 1),
        [[[-1.5894138, 0.58981943], [2.0874908, -0.4150011]]],
        rtol=0,
        atol=1e-7,
    )


def test_v2_is_accurate_and_looks_standard_normal():
    a = standard_normal_v2(0, 0, (400_000,), 0, 1).ravel().astype(np.float64)
    b = standard_normal_v2(0, 1, (400_000,), 0, 1).ravel().astype(np.float64)
    c = standard_normal_v2(1, 0, (400_000,), 0, 1).ravel().astype(np.float64)
    for v in (a, b, c):
        assert abs(v.mean()) < 0.008 and abs(v.std() - 1) < 0.006
        assert abs(np.mean(v**4) - 3) < 0.04
        # a quantile transform: the fraction below a few points matches Phi
        for z, phi in ((-2.0, 0.0227501), (-1.0, 0.1586553), (0.0, 0.5), (1.5, 0.9331928)):
            assert abs(np.mean(v < z) - phi) < 0.003
    # the generator does not ignore its seed or its stream
    assert abs(np.corrcoef(a, b)[0, 1]) < 0.01 and abs(np.corrcoef(a, c)[0, 1]) < 0.01
    assert abs(np.corrcoef(a[:-1], a[1:])[0, 1]) < 0.01  # neighbours are independent
    # the transform is PPND7: within 1.2e-7 (relative) of the exact quantile
    from illia_export.runtime.noise import _v2_hash_np, _v2_transform_np, stream_key

    h = _v2_hash_np(stream_key(3, 0), 0, 200_000)
    p = ((h & np.uint32(0x7FFFFFFF)).astype(np.float64) + 0.5) / 2**32
    exact = torch.special.ndtri(torch.from_numpy(p)).numpy()
    approx = -np.abs(_v2_transform_np(h))
    assert np.max(np.abs(approx - exact) / np.maximum(np.abs(exact), 1.0)) < 2e-7


def test_v2_seed_and_stream_change_every_value():
    base = standard_normal_v2(5, 0, (1000,), 0, 2)
    for other in (standard_normal_v2(6, 0, (1000,), 0, 2), standard_normal_v2(5, 1, (1000,), 0, 2)):
        assert np.mean(base == other) < 0.01


@pytest.mark.parametrize("shape", [(1,), (7,), (3, 5), (512, 33), (70_001,)])
def test_v2_torch_port_matches_the_reference(shape):
    ref = standard_normal_v2(9, 2, shape, 3, 4)
    got = standard_normal_v2_torch(9, 2, shape, 3, 4)
    assert got.dtype == torch.float32 and tuple(got.shape) == (4, *shape)
    _assert_close_to_reference(got.numpy(), ref)


def test_v2_torch_port_is_chunk_invariant_and_crosses_2_32(monkeypatch):
    from illia_export.runtime import noise

    whole = standard_normal_v2_torch(4, 1, (70_001,), 0, 3).numpy()
    monkeypatch.setattr(noise, "_V2_CPU_BLOCK", 1000)
    monkeypatch.setattr(noise, "_MIN_SHARE", 5000)
    monkeypatch.setattr(noise, "_cpu_workers", lambda: 3)
    np.testing.assert_array_equal(standard_normal_v2_torch(4, 1, (70_001,), 0, 3).numpy(), whole)
    start = (2**32 - 1500) // 1000
    _assert_close_to_reference(
        standard_normal_v2_torch(8, 0, (1000,), start, 4).numpy(), standard_normal_v2(8, 0, (1000,), start, 4)
    )


def _assert_close_to_reference(got, ref):
    # the kernel evaluates in float32: within 6e-7 relative to max(1, |x|) of the float64 spec
    err = np.abs(got.astype(np.float64) - ref.astype(np.float64)) / np.maximum(1.0, np.abs(ref))
    assert err.max() < 6e-7, err.max()


@needs_kernel
@pytest.mark.parametrize("shape", [(1,), (7,), (3, 5), (512, 33), (300_001,)])
def test_v2_kernel_matches_the_reference(shape):
    ref = standard_normal_v2(11, 4, shape, 2, 5)
    out = np.empty((5, *shape), np.float32)
    assert fill_v2(11, 4, shape, 2, 5, out) is out
    _assert_close_to_reference(out, ref)


@needs_kernel
def test_v2_kernel_is_chunk_and_thread_invariant():
    """Any split of samples into calls, any thread count: bit-identical numbers."""
    shape = (70_003,)
    whole = np.empty((9, *shape), np.float32)
    fill_v2(3, 1, shape, 0, 9, whole, threads=1)
    for threads in (2, 3, 8):
        out = np.empty_like(whole)
        fill_v2(3, 1, shape, 0, 9, out, threads=threads)
        np.testing.assert_array_equal(out, whole)
    parts = []
    for start, count in ((0, 2), (2, 1), (3, 6)):
        part = np.empty((count, *shape), np.float32)
        fill_v2(3, 1, shape, start, count, part, threads=2)
        parts.append(part)
    np.testing.assert_array_equal(np.concatenate(parts), whole)
    # a torch tensor gets the same numbers as a numpy array
    t = torch.empty((9, *shape))
    fill_v2(3, 1, shape, 0, 9, t)
    np.testing.assert_array_equal(t.numpy(), whole)


@needs_kernel
def test_v2_kernel_across_the_32_bit_counter_boundary():
    n = 1000
    start = (2**32 - 1500) // n  # samples whose counters run across 2**32
    out = np.empty((4, n), np.float32)
    fill_v2(8, 0, (n,), start, 4, out, threads=3)
    _assert_close_to_reference(out, standard_normal_v2(8, 0, (n,), start, 4))


@needs_kernel
@pytest.mark.parametrize("shape", [(33, 17), (70_001,)])  # the second is split over threads
def test_v2_kernel_writes_sampled_weights_in_one_pass(shape):
    rng = np.random.default_rng(0)
    mu = rng.normal(size=shape).astype(np.float32)
    sigma = rng.uniform(0.01, 1.0, size=shape).astype(np.float32)
    eps = np.empty((6, *shape), np.float32)
    fill_v2(2, 3, shape, 1, 6, eps, threads=1)
    w = np.empty_like(eps)
    fill_v2(2, 3, shape, 1, 6, w, mu=mu, sigma=sigma, threads=2)
    # exactly the graph's Add(mu, Mul(sigma, eps)) in float32
    np.testing.assert_array_equal(w, np.add(mu, np.multiply(sigma, eps)))


@needs_kernel
def test_v2_kernel_rejects_bad_buffers():
    with pytest.raises(ValueError, match="contiguous float32"):
        fill_v2(0, 0, (4,), 0, 2, np.empty((2, 4), np.float64))
    with pytest.raises(ValueError, match="contiguous float32"):
        fill_v2(0, 0, (4,), 0, 2, np.empty((2, 5), np.float32))
    with pytest.raises(ValueError, match="both"):
        fill_v2(0, 0, (4,), 0, 2, np.empty((2, 4), np.float32), mu=np.zeros(4, np.float32))
    with pytest.raises(ValueError, match="non-negative"):
        fill_v2(-1, 0, (4,), 0, 2, np.empty((2, 4), np.float32))


@pytest.mark.parametrize("generator", [GENERATOR_V1, GENERATOR_V2])
@pytest.mark.parametrize("impl", ["auto", "torch", "numpy"])
def test_noise_maker_implementations_agree_with_the_reference(generator, impl):
    from illia_export.runtime.noise import reference
    from illia_export.runtime.sampling import NoiseMaker

    shapes = [(40, 3), (7,)]
    maker = NoiseMaker("numpy", "cpu", impl)
    got = maker.draw(5, shapes, 2, 3, generator=generator)
    for k, (s, g) in enumerate(zip(shapes, got)):
        ref = reference(generator)(5, k, s, 2, 3)
        np.testing.assert_allclose(np.asarray(g), ref, rtol=0, atol=4e-6)


def test_unknown_generator_is_refused():
    from illia_export.errors import ManifestError
    from illia_export.runtime.noise import check_generator
    from illia_export.runtime.sampling import NoiseMaker

    with pytest.raises(ManifestError, match="illia-noise-v2"):
        check_generator("illia-noise-v9")
    with pytest.raises(ManifestError, match="unknown noise generator"):
        NoiseMaker().draw(0, [(2,)], 0, 1, generator="mt19937")


# ------------------------------------------------------------------ v1 in the compiled kernel
@needs_kernel
@pytest.mark.parametrize("shape", [(1,), (5,), (7, 3), (1001,), (300_001,)])
def test_v1_kernel_matches_the_reference(shape):
    from illia_export.runtime.noise import fill_v1

    ref = noise.standard_normal(12, 3, shape, 4, 5)
    out = np.empty((5, *shape), np.float32)
    fill_v1(12, 3, shape, 4, 5, out)
    # float64 polynomials instead of libm: the same float32 values but for rare last-bit ties
    np.testing.assert_array_max_ulp(out, ref, maxulp=1)


@needs_kernel
def test_v1_kernel_is_chunk_and_thread_invariant():
    """Odd n (pairs straddle rows) and thread shares that cut pairs: bit-identical numbers."""
    from illia_export.runtime.noise import fill_v1

    shape = (70_001,)
    whole = np.empty((7, *shape), np.float32)
    fill_v1(6, 2, shape, 0, 7, whole, threads=1)
    for threads in (2, 3, 5):
        out = np.empty_like(whole)
        fill_v1(6, 2, shape, 0, 7, out, threads=threads)
        np.testing.assert_array_equal(out, whole)
    parts = []
    for start, count in ((0, 3), (3, 1), (4, 3)):
        part = np.empty((count, *shape), np.float32)
        fill_v1(6, 2, shape, start, count, part, threads=2)
        parts.append(part)
    np.testing.assert_array_equal(np.concatenate(parts), whole)


@needs_kernel
@pytest.mark.parametrize("shape", [(9, 7), (70_001,)])  # odd sizes; the second is split over threads
def test_v1_kernel_writes_sampled_weights_in_one_pass(shape):
    from illia_export.runtime.noise import fill_v1

    rng = np.random.default_rng(1)
    mu = rng.normal(size=shape).astype(np.float32)
    sigma = rng.uniform(0.01, 1.0, size=shape).astype(np.float32)
    eps = np.empty((4, *shape), np.float32)
    fill_v1(3, 1, shape, 2, 4, eps, threads=1)
    w = np.empty_like(eps)
    fill_v1(3, 1, shape, 2, 4, w, mu=mu, sigma=sigma, threads=3)
    np.testing.assert_array_equal(w, np.add(mu, np.multiply(sigma, eps)))
