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
