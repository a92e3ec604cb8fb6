"""The illia-export noise generators: seeded, counter-based, portable standard normals.

Two generators, both pure functions of ``(seed, stream, sample, element)`` (docs/noise.md is
normative; test vectors there):

* ``illia-noise-v2`` (the default of new exports, :data:`DEFAULT_GENERATOR`): one normal per
  element from 32-bit integer hashing and an inverse normal CDF, all plain arithmetic so it
  vectorizes. ``key = stream_key(seed, stream)``; element ``i`` of sample ``s`` of a noise
  input with ``n`` elements per sample has counter ``c = s * n + i`` and hash
  ``h = lowbias32(lowbias32(lo32(c) ^ k0) ^ (k1 + 0x9E3779B9 * hi32(c)))`` (``k0``/``k1`` the
  low/high words of the key, arithmetic mod 2**32); with ``j = h & 0x7FFFFFFF`` and
  ``p = (j + 0.5) / 2**32``, the value is Wichura's PPND7 quantile ``x = Phi^-1(p) <= 0``,
  negated when ``h >> 31`` is 1. Reference: :func:`standard_normal_v2` (numpy, float64);
  fast paths: the compiled kernel (:func:`fill`; float32, AVX-512/AVX2, threads) and
  :func:`standard_normal_v2_torch` (CPU without the kernel, CUDA).
* ``illia-noise-v1`` (artifacts exported before v2): 64-bit SplitMix64 over pair counters and a
  float64 Box-Muller step. Reference :func:`standard_normal`; fast paths: the compiled kernel
  (:func:`fill`; float64 polynomials, vectorized) and the torch port :func:`standard_normal_torch`.
  The spec of v1:

  * stream ``k`` is the position of the noise input in the manifest's ``noise`` list;
  * ``key_k = mix64(seed + GOLDEN * (k + 1))`` (all arithmetic mod 2**64);
  * a noise input with ``n`` elements per sample uses ``m = ceil(n / 2)`` counters per sample;
    element pair ``p`` of sample ``s`` uses counter ``c = s * m + p`` and
    ``z = mix64(key_k + GOLDEN * (c + 1))``;
  * ``u1 = ((z >> 40) + 0.5) / 2**24``, ``u2 = (((z >> 16) & 0xFFFFFF) + 0.5) / 2**24``;
    ``r = sqrt(-2 ln u1)``, ``t = 2 pi u2`` in float64; element ``2p`` is ``r cos t`` and
    element ``2p + 1`` is ``r sin t`` (dropped for the last pair when ``n`` is odd), rounded to
    float32;
  * elements are laid out row-major in the distribution's shape.

``mix64`` is the SplitMix64 finalizer. :func:`generate` dispatches on the generator name.

Length: the two generators with, for each, the numpy reference, the torch port (CPU threads,
CUDA) and the compiled-kernel binding, plus row keys. They share keys, layout and the row rule,
and this file is the executable form of docs/noise.md; kept together so a change to the spec
touches one module.
"""

from __future__ import annotations

import functools
import math
import threading
from collections.abc import Sequence
from typing import Any

import numpy as np

#: Name of the v1 generator (kept for old imports).
GENERATOR_NAME = "illia-noise-v1"
GENERATOR_V1 = "illia-noise-v1"
GENERATOR_V2 = "illia-noise-v2"
#: Every generator this runtime implements, oldest first.
GENERATORS = (GENERATOR_V1, GENERATOR_V2)
#: The generator new exports should record in their manifest (``noise_generator``).
DEFAULT_GENERATOR = GENERATOR_V2
GOLDEN = 0x9E3779B97F4A7C15
MUL1 = 0xBF58476D1CE4E5B9
MUL2 = 0x94D049BB133111EB
_MASK64 = (1 << 64) - 1


def mix64_int(z: int) -> int:
    """SplitMix64 finalizer on a Python int (reference implementation, used for keys)."""
    z &= _MASK64
    z ^= z >> 30
    z = (z * MUL1) & _MASK64
    z ^= z >> 27
    z = (z * MUL2) & _MASK64
    z ^= z >> 31
    return z


def stream_key(seed: int, stream: int) -> int:
    """The 64-bit key of noise stream `stream` (manifest position) for `seed`."""
    if seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed}")
    return _stream_key(seed, stream)


@functools.lru_cache(maxsize=1024)
def _stream_key(seed: int, stream: int) -> int:
    # memoized: a one-row call keys every stream again with the same seed (~1 us each)
    return mix64_int((seed + GOLDEN * (stream + 1)) & _MASK64)


def _mix64_np(z: np.ndarray) -> np.ndarray:
    z ^= z >> np.uint64(30)
    z *= np.uint64(MUL1)
    z ^= z >> np.uint64(27)
    z *= np.uint64(MUL2)
    z ^= z >> np.uint64(31)
    return z


def standard_normal(
    seed: int, stream: int, shape: Sequence[int], sample_start: int = 0, num_samples: int = 1
) -> np.ndarray:
    """Normals of samples ``[sample_start, sample_start + num_samples)`` of one stream.

    Returns:
        float32 array of shape ``(num_samples, *shape)``.
    """
    shape = tuple(int(d) for d in shape)
    n = math.prod(shape)
    key = np.array([stream_key(seed, stream)], dtype=np.uint64)
    return _v1_keyed_np(key, n, sample_start, num_samples)[0].reshape((num_samples, *shape))


def _v1_keyed_np(keys: np.ndarray, n: int, sample_start: int, num_samples: int) -> np.ndarray:
    """v1 normals ``[len(keys), num_samples, n]`` (float32), one key per leading row."""
    m = (n + 1) // 2
    with np.errstate(over="ignore"):
        counters = np.arange(sample_start * m + 1, (sample_start + num_samples) * m + 1, dtype=np.uint64)
        z = _mix64_np(counters[None, :] * np.uint64(GOLDEN) + keys.astype(np.uint64)[:, None])
    u1 = ((z >> np.uint64(40)).astype(np.float64) + 0.5) * (1.0 / 16777216.0)
    u2 = (((z >> np.uint64(16)) & np.uint64(0xFFFFFF)).astype(np.float64) + 0.5) * (1.0 / 16777216.0)
    r = np.sqrt(-2.0 * np.log(u1))
    t = (2.0 * math.pi) * u2
    rows = len(keys)
    out = np.empty((rows, num_samples, 2 * m), dtype=np.float32)
    out[..., 0::2] = (r * np.cos(t)).reshape(rows, num_samples, m)
    out[..., 1::2] = (r * np.sin(t)).reshape(rows, num_samples, m)
    return out[..., :n]


# ---------------------------------------------------------------------------------------------
# Fast torch implementation of the same spec (CPU and CUDA).
# ---------------------------------------------------------------------------------------------

#: Counters per block on CPU. Every elementwise op then touches fewer than 32768 elements, so
#: torch runs it inline in the calling thread (no OpenMP fork/join per op, which under CPU
#: contention costs milliseconds); the int64 + float buffers of a block stay in L2 cache.
_CPU_BLOCK = 1 << 15
#: Counters per block on CUDA (memory-bound elementwise kernels like big launches).
_CUDA_BLOCK = 1 << 22
#: Below this many counters the CPU generator runs in the calling thread.
_MIN_POOLED = 1 << 12
#: Smallest share of counters handed to one worker thread.
_MIN_SHARE = 1 << 15


def _signed64(value: int) -> int:
    """Reinterpret an unsigned 64-bit value as a signed int64 (two's complement)."""
    value &= _MASK64
    return value - (1 << 64) if value >= (1 << 63) else value


_GOLDEN_S = _signed64(GOLDEN)
_MUL1_S = _signed64(MUL1)
_MUL2_S = _signed64(MUL2)


class _TorchScratch:
    """Scratch buffers of one generator worker (one per thread and device)."""

    def __init__(self, torch, device, block: int) -> None:
        self.block = block
        # GOLDEN * i for i in [0, block): the counter stride, precomputed once (wraps mod 2**64).
        self.ramp = torch.arange(block, dtype=torch.int64, device=device).mul_(_GOLDEN_S)
        self.z = torch.empty(block, dtype=torch.int64, device=device)
        self.t = torch.empty(block, dtype=torch.int64, device=device)
        self.r = torch.empty(block, dtype=torch.float32, device=device)
        self.phi = torch.empty(block, dtype=torch.float32, device=device)
        self.trig = torch.empty(block, dtype=torch.float32, device=device)
        self.r64 = torch.empty(block, dtype=torch.float64, device=device)


_SCRATCH = threading.local()
_POOL: list = []  # [ThreadPoolExecutor] once created
_POOL_LOCK = threading.Lock()


def _scratch(torch, device, block: int) -> _TorchScratch:
    cache = getattr(_SCRATCH, "cache", None)
    if cache is None:
        cache = _SCRATCH.cache = {}
    key = (str(device), block)
    s = cache.get(key)
    if s is None:
        s = cache[key] = _TorchScratch(torch, device, block)
    return s


def _fill_pairs_torch(torch, out_pairs, first_counter: int, key: int) -> None:
    """Write the normals of counters ``[first_counter, first_counter + len(out_pairs))``.

    Args:
        out_pairs: contiguous float32 tensor of shape ``[P, 2]``, written in place; row
            ``p`` receives elements ``(2p', 2p' + 1)`` of counter ``first_counter + p``.
        first_counter: the counter of row 0 (``c`` in the spec, before the ``+ 1``).
        key: the stream key (unsigned 64-bit Python int).
    """
    block = _CUDA_BLOCK if out_pairs.device.type == "cuda" else _CPU_BLOCK
    sc = _scratch(torch, out_pairs.device, block)
    total = out_pairs.shape[0]
    out_complex = out_pairs.view(torch.complex64).view(total)
    inv24 = 1.0 / 16777216.0
    done = 0
    while done < total:
        n = min(block, total - done)
        z = sc.z[:n]
        t = sc.t[:n]
        r = sc.r[:n]
        phi = sc.phi[:n]
        trig = sc.trig[:n]
        r64 = sc.r64[:n]
        # z = key + GOLDEN * (c + 1) for c = first_counter + done + i  (mod 2**64)
        torch.add(sc.ramp[:n], _signed64(key + GOLDEN * (first_counter + done + 1)), out=z)
        # SplitMix64 finalizer with logical shifts (torch's >> on int64 is arithmetic).
        torch.bitwise_right_shift(z, 30, out=t).bitwise_and_((1 << 34) - 1)
        z.bitwise_xor_(t).mul_(_MUL1_S)
        torch.bitwise_right_shift(z, 27, out=t).bitwise_and_((1 << 37) - 1)
        z.bitwise_xor_(t).mul_(_MUL2_S)
        torch.bitwise_right_shift(z, 31, out=t).bitwise_and_((1 << 33) - 1)
        z.bitwise_xor_(t)
        # r = sqrt(-2 ln u1), u1 = (v1 + 0.5) / 2**24 with v1 the top 24 bits; the log runs in
        # float64 (in float32, u1 near 1 loses ~1e-4 in r, where r is small and steep).
        torch.bitwise_right_shift(z, 40, out=t).bitwise_and_(0xFFFFFF)
        r64.copy_(t).add_(0.5).mul_(inv24).log_().mul_(-2.0).sqrt_()
        r.copy_(r64)
        # theta = 2 pi u2 = pi + phi with phi = (2 v2 + 1 - 2**24) * pi / 2**24 in (-pi, pi):
        # 2 v2 + 1 - 2**24 is an odd integer of magnitude < 2**24, exact in float32, so phi
        # carries a single rounding; cos(theta) = -cos(phi) and sin(theta) = -sin(phi).
        torch.bitwise_right_shift(z, 16, out=t).bitwise_and_(0xFFFFFF).mul_(2).sub_(16777215)
        phi.copy_(t).mul_(math.pi * inv24)
        r.neg_()
        torch.cos(phi, out=trig).mul_(r)
        torch.sin(phi, out=phi).mul_(r)
        # (cos, sin) pairs interleaved in one contiguous write: a complex64 view of the rows.
        torch.complex(trig, phi, out=out_complex[done : done + n])
        done += n


def _cpu_workers() -> int:
    import os

    import torch

    return max(1, min(torch.get_num_threads(), os.cpu_count() or 1))


def _single_threaded_worker() -> None:
    """Pool initializer: torch ops in this worker thread run inline (OpenMP's thread count is
    per-thread state, so the caller's setting is untouched)."""
    import torch

    torch.set_num_threads(1)


def _worker_pool():
    """The pool of single-threaded generator workers (one per core), created on first use."""
    workers = _cpu_workers()
    with _POOL_LOCK:
        if not _POOL or _POOL[0]._max_workers != workers:
            from concurrent.futures import ThreadPoolExecutor

            _POOL[:] = [
                ThreadPoolExecutor(
                    max_workers=workers, thread_name_prefix="illia-noise", initializer=_single_threaded_worker
                )
            ]
        return _POOL[0]


def _fill_pairs_parallel(torch, out_pairs, first_counter: int, key: int) -> None:
    """Split the counter range over single-threaded worker threads (CPU), or run it in one go
    (CUDA, or small ranges). Torch releases the GIL inside each op, so the workers run in
    parallel; each works on its own cache-sized scratch."""
    total = out_pairs.shape[0]
    if out_pairs.device.type != "cpu" or total < _MIN_POOLED:
        _fill_pairs_torch(torch, out_pairs, first_counter, key)
        return
    workers = _cpu_workers()
    pool = _worker_pool()
    step = max(-(-total // workers), _MIN_SHARE)
    futures = [
        pool.submit(_fill_pairs_torch, torch, out_pairs[lo : lo + step], first_counter + lo, key)
        for lo in range(0, total, step)
    ]
    for f in futures:
        f.result()


def standard_normal_torch(
    seed: int,
    stream: int,
    shape: Sequence[int],
    sample_start: int = 0,
    num_samples: int = 1,
    device: str | None = None,
    out=None,
):
    """Torch implementation of :func:`standard_normal` (same numbers to float32 rounding).

    Runs on the CPU in cache-sized blocks of in-place int64/float32 operations, or on a CUDA
    device (the noise never leaves the device). Agrees with the numpy reference to ~1e-6.

    Args:
        seed: non-negative integer seed.
        stream: position of the noise input in the manifest's ``noise`` list.
        shape: per-sample shape of the noise.
        sample_start: first sample index.
        num_samples: number of samples.
        device: torch device ("cpu", "cuda", "cuda:1"); ignored when `out` is given.
        out: optional preallocated float32 contiguous tensor of shape ``(num_samples, *shape)``.

    Returns:
        float32 tensor of shape ``(num_samples, *shape)``.
    """
    import torch

    shape = tuple(int(d) for d in shape)
    n = math.prod(shape)
    m = (n + 1) // 2
    key = stream_key(seed, stream)
    full = (num_samples, *shape)
    if out is None:
        out = torch.empty(full, dtype=torch.float32, device=device or "cpu")
    elif tuple(out.shape) != full or out.dtype != torch.float32 or not out.is_contiguous():
        raise ValueError(f"`out` must be a contiguous float32 tensor of shape {full}, got {tuple(out.shape)}")
    if n == 0 or num_samples == 0:
        return out
    first = sample_start * m
    if n % 2 == 0:
        _fill_pairs_parallel(torch, out.view(num_samples * m, 2), first, key)
    else:
        tmp = torch.empty((num_samples, m, 2), dtype=torch.float32, device=out.device)
        _fill_pairs_parallel(torch, tmp.view(num_samples * m, 2), first, key)
        out.view(num_samples, n).copy_(tmp.view(num_samples, 2 * m)[:, :n])
    return out


# ---------------------------------------------------------------------------------------------
# illia-noise-v2: 32-bit counter hash + PPND7 inverse normal CDF (one normal per element).
# ---------------------------------------------------------------------------------------------

_MASK32 = (1 << 32) - 1
#: Multipliers of ``lowbias32`` (C. Wellons' hash-prospector, bias ~0.11).
LB_MUL1 = 0x21F0AAAD
LB_MUL2 = 0x735A2D97
#: Weyl constant mixing the counter's high word into the key.
GOLDEN32 = 0x9E3779B9
#: ``j >= V2_CENTRAL`` exactly when ``p = (j + 0.5) / 2**32 >= 0.075`` (AS241's central region).
V2_CENTRAL = 322122547
# Wichura (1988), AS241 PPND7: coefficients in increasing powers.
PPND7_A = (3.3871327179, 50.434271938, 159.29113202, 59.109374720)
PPND7_B = (1.0, 17.895169469, 78.757757664, 67.187563600)
PPND7_C = (1.4234372777, 2.7568153900, 1.3067284816, 0.17023821103)
PPND7_D = (1.0, 0.73700164250, 0.12021132975)


def lowbias32_int(x: int) -> int:
    """``lowbias32`` on a Python int (reference; all arithmetic mod 2**32)."""
    x &= _MASK32
    x ^= x >> 16
    x = (x * LB_MUL1) & _MASK32
    x ^= x >> 15
    x = (x * LB_MUL2) & _MASK32
    x ^= x >> 15
    return x


def v2_hash_int(key: int, counter: int) -> int:
    """The 32-bit v2 hash of element counter ``c = s * n + i`` under stream key `key`."""
    k0, k1 = key & _MASK32, (key >> 32) & _MASK32
    lo, hi = counter & _MASK32, (counter >> 32) & _MASK32
    return lowbias32_int(lowbias32_int(lo ^ k0) ^ ((k1 + GOLDEN32 * hi) & _MASK32))


def _poly(coeffs, x):
    acc = coeffs[-1]
    for c in reversed(coeffs[:-1]):
        acc = acc * x + c
    return acc


def v2_value(h: int) -> float:
    """The v2 normal of one 32-bit hash, in float64 (scalar reference)."""
    j = h & 0x7FFFFFFF
    p = (j + 0.5) / 2.0**32
    if j >= V2_CENTRAL:
        q = p - 0.5
        r = 0.180625 - q * q
        x = q * _poly(PPND7_A, r) / _poly(PPND7_B, r)
    else:
        t = math.sqrt(-math.log(p)) - 1.6
        x = -_poly(PPND7_C, t) / _poly(PPND7_D, t)
    return -x if h >> 31 else x


def _v2_hash_np(key, c0: int, count: int) -> np.ndarray:
    """uint32 hashes of counters ``[c0, c0 + count)``; `key` an int (-> ``[count]``) or a uint64
    array of keys (-> ``[len(key), count]``, one key per row)."""
    c = np.arange(c0, c0 + count, dtype=np.uint64)
    keys = np.asarray(key, dtype=np.uint64)
    k0 = (keys & np.uint64(_MASK32)).astype(np.uint32)[..., None]
    k1 = (keys >> np.uint64(32))[..., None]
    lo = (c & np.uint64(_MASK32)).astype(np.uint32)
    with np.errstate(over="ignore"):
        kh = ((k1 + np.uint64(GOLDEN32) * (c >> np.uint64(32))) & np.uint64(_MASK32)).astype(np.uint32)

    def lowbias(x: np.ndarray) -> np.ndarray:
        x ^= x >> np.uint32(16)
        x *= np.uint32(LB_MUL1)
        x ^= x >> np.uint32(15)
        x *= np.uint32(LB_MUL2)
        x ^= x >> np.uint32(15)
        return x

    with np.errstate(over="ignore"):
        h = lowbias(lo ^ k0)
        h ^= kh
        return lowbias(h)


def _v2_transform_np(h: np.ndarray) -> np.ndarray:
    """float64 v2 values of uint32 hashes (the spec, vectorized)."""
    j = h & np.uint32(0x7FFFFFFF)
    p = (j.astype(np.float64) + 0.5) * (1.0 / 2.0**32)
    q = p - 0.5
    r = 0.180625 - q * q
    central = q * _poly(PPND7_A, r) / _poly(PPND7_B, r)
    t = np.sqrt(-np.log(p)) - 1.6
    tail = -_poly(PPND7_C, t) / _poly(PPND7_D, t)
    x = np.where(j >= V2_CENTRAL, central, tail)
    return np.where((h >> np.uint32(31)) != 0, -x, x)


def standard_normal_v2(
    seed: int, stream: int, shape: Sequence[int], sample_start: int = 0, num_samples: int = 1
) -> np.ndarray:
    """``illia-noise-v2`` normals of samples ``[sample_start, sample_start + num_samples)``.

    The reference implementation (numpy, float64, rounded to float32 once).

    Returns:
        float32 array of shape ``(num_samples, *shape)``.
    """
    shape = tuple(int(d) for d in shape)
    n = math.prod(shape)
    key = stream_key(seed, stream)
    h = _v2_hash_np(key, sample_start * n, num_samples * n)
    return _v2_transform_np(h).astype(np.float32).reshape((num_samples, *shape))


#: Elements per block of the torch v2 port. CPU: blocks run on the single-threaded workers of the
#: v1 port (no OpenMP fork/join per op; 2^16 measured fastest); CUDA: large launches.
_V2_CPU_BLOCK = 1 << 16
_V2_CUDA_BLOCK = 1 << 24


def _fill_v2_torch(torch, flat, key: int, c0: int) -> None:
    """v2 values of counters ``[c0, c0 + flat.numel())`` into the float32 tensor `flat`.

    The hash in int64 masked to 32 bits; the transform in float32 as the compiled kernel does
    it (``q`` from the exact integer ``2**31 - 1 - j``, both branches, one division), within
    the spec's conformance bound of the float64 reference.
    """
    block = _V2_CUDA_BLOCK if flat.device.type == "cuda" else _V2_CPU_BLOCK
    total = flat.numel()
    m32 = _MASK32
    k0, k1 = key & m32, (key >> 32) & m32
    inv32 = 2.0**-32
    done = 0
    while done < total:
        c = c0 + done
        # a block never crosses a multiple of 2**32: the counter's high word is one number
        cnt = min(block, total - done, (1 << 32) - (c & m32))
        kh = (k1 + GOLDEN32 * (c >> 32)) & m32
        x = torch.arange(c & m32, (c & m32) + cnt, dtype=torch.int64, device=flat.device)
        x.bitwise_xor_(k0)
        for k in (None, kh):
            if k is not None:
                x.bitwise_xor_(k)
            x.bitwise_xor_(x >> 16).mul_(LB_MUL1).bitwise_and_(m32)
            x.bitwise_xor_(x >> 15).mul_(LB_MUL2).bitwise_and_(m32)
            x.bitwise_xor_(x >> 15)
        j = x & 0x7FFFFFFF
        central = j >= V2_CENTRAL
        q = (0x7FFFFFFF - j).to(torch.float32).add_(0.5).mul_(-inv32)
        r = (q * q).neg_().add_(0.180625)
        num = _poly(PPND7_A, r).mul_(q)
        den = _poly(PPND7_B, r)
        t = j.to(torch.float32).add_(0.5).mul_(inv32).log_().neg_().sqrt_().sub_(1.6)
        num = torch.where(central, num, _poly(PPND7_C, t).neg_())
        den = torch.where(central, den, _poly(PPND7_D, t))
        v = num.div_(den)
        v.mul_((x >> 31).to(torch.float32).mul_(-2.0).add_(1.0))  # the top bit flips the sign
        flat[done : done + cnt].copy_(v)
        done += cnt


def standard_normal_v2_torch(
    seed: int,
    stream: int,
    shape: Sequence[int],
    sample_start: int = 0,
    num_samples: int = 1,
    device: str | None = None,
    out=None,
):
    """Torch port of :func:`standard_normal_v2` (CPU without the compiled kernel, and CUDA).

    float32 transform: within the spec's bound (6e-7 * max(1, |x|)) of the numpy reference.

    Returns:
        float32 tensor of shape ``(num_samples, *shape)`` (``out`` when given).
    """
    import torch

    shape = tuple(int(d) for d in shape)
    n = math.prod(shape)
    full = (num_samples, *shape)
    if out is None:
        out = torch.empty(full, dtype=torch.float32, device=device or "cpu")
    elif tuple(out.shape) != full or out.dtype != torch.float32 or not out.is_contiguous():
        raise ValueError(f"`out` must be a contiguous float32 tensor of shape {full}, got {tuple(out.shape)}")
    if n and num_samples:
        _fill_v2_parallel(torch, out.view(-1), stream_key(seed, stream), sample_start * n)
    return out


def _fill_v2_parallel(torch, flat, key: int, c0: int) -> None:
    """CPU: split the elements over the single-threaded worker threads of the v1 port (torch
    releases the GIL inside each op); CUDA or small ranges: in one go."""
    total = flat.numel()
    if flat.device.type != "cpu" or total < 2 * _MIN_SHARE:
        _fill_v2_torch(torch, flat, key, c0)
        return
    pool = _worker_pool()
    step = max(-(-total // _cpu_workers()), _MIN_SHARE)
    futures = [
        pool.submit(_fill_v2_torch, torch, flat[lo : lo + step], key, c0 + lo) for lo in range(0, total, step)
    ]
    for f in futures:
        f.result()


# ---------------------------------------------------------------------------------------------
# The compiled kernel of both generators (illia_export/runtime/_noisekernel.cpp, built by
# setup.py): vectorized (AVX-512/AVX2 clones), threads over contiguous element ranges.
# ---------------------------------------------------------------------------------------------

try:  # the extension is optional: without a compiler the install still works (slower noise)
    from illia_export.runtime import _noisekernel as _kernel
except ImportError:  # pragma: no cover - depends on the build
    _kernel = None


def kernel_available() -> bool:
    """Whether the compiled noise kernel (v1 and v2) was built with this installation."""
    return _kernel is not None


def kernel_status() -> str:
    """One line saying which implementation the CPU noise uses, and how to get the fast one."""
    if _kernel is not None:
        return f"compiled kernel ({_kernel.__file__})"
    return (
        "no compiled kernel (illia_export.runtime._noisekernel was not built): the noise comes from the "
        "torch/numpy ports (same numbers, slower). Reinstall with a C++ compiler: pip install -e ."
    )


#: Below this many values one thread fills the buffer: starting workers (and asking the OS for
#: the affinity mask, ~2 us) costs more than the work.
SMALL_FILL = 1 << 16


def _usable_cores() -> int:
    import os

    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover
        return max(1, os.cpu_count() or 1)


_ADDRESSES: dict[int, tuple[Any, int]] = {}


def _numpy_address(a: np.ndarray) -> int:
    """``a.ctypes.data``, remembered per array (asking numpy costs ~2-4 us, and a one-row call
    fills a dozen buffers it reuses). Keyed by ``id`` with a weak reference that must still
    point at `a`, so a freed array's id never returns a stale address."""
    hit = _ADDRESSES.get(id(a))
    if hit is not None and hit[0]() is a:
        return hit[1]
    addr = int(a.ctypes.data)
    try:
        import weakref

        if len(_ADDRESSES) > 512:
            _ADDRESSES.clear()
        _ADDRESSES[id(a)] = (weakref.ref(a), addr)
    except TypeError:  # pragma: no cover - arrays support weak references
        pass
    return addr


def _address(a, n_expected: int, what: str) -> int:
    """Address of a contiguous float32 CPU buffer (numpy array or torch tensor) of n elements."""
    if isinstance(a, np.ndarray):
        if a.dtype != np.float32 or not a.flags.c_contiguous or a.size != n_expected:
            raise ValueError(
                f"`{what}` must be a C-contiguous float32 array of {n_expected} elements, got {a.dtype} "
                f"{a.shape}"
            )
        if what == "out" and not a.flags.writeable:
            raise ValueError("`out` must be writable")
        return _numpy_address(a)
    if hasattr(a, "data_ptr"):
        import torch

        if (
            a.dtype != torch.float32
            or not a.is_contiguous()
            or a.numel() != n_expected
            or a.device.type != "cpu"
        ):
            raise ValueError(
                f"`{what}` must be a contiguous float32 CPU tensor of {n_expected} elements, got {a.dtype} "
                f"{tuple(a.shape)} on {a.device}"
            )
        return int(a.data_ptr())
    raise TypeError(f"`{what}` must be a numpy array or a torch tensor, got {type(a).__name__}")


def fill(
    generator: str,
    seed: int,
    stream: int,
    shape: Sequence[int],
    sample_start: int,
    num_samples: int,
    out,
    mu=None,
    sigma=None,
    threads: int | None = None,
):
    """Write `generator`'s samples into `out` with the compiled kernel (CPU).

    Args:
        generator: ``"illia-noise-v1"`` or ``"illia-noise-v2"``.
        seed, stream, shape, sample_start, num_samples: as in :func:`standard_normal_v2`.
        out: contiguous float32 numpy array or CPU torch tensor of ``num_samples * prod(shape)``
            elements (any shape), written in place.
        mu, sigma: optional contiguous float32 buffers of ``prod(shape)`` elements: the kernel
            then writes ``mu + sigma * eps`` (the sampled weights, rounded like the graph's
            ``Add(mu, Mul(sigma, eps))``) instead of ``eps``.
        threads: worker threads (default: the usable cores). Results never depend on it.

    Returns:
        `out`.
    """
    if _kernel is None:
        raise RuntimeError(kernel_status())
    fn = _kernel.fill_v2 if check_generator(generator) == GENERATOR_V2 else _kernel.fill_v1
    if seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed}")
    if (mu is None) != (sigma is None):
        raise ValueError("pass both `mu` and `sigma`, or neither")
    shape = tuple(int(d) for d in shape)
    n = math.prod(shape)
    out_addr = _address(out, n * num_samples, "out")
    mu_addr = sigma_addr = 0
    if mu is not None:
        mu_addr, sigma_addr = _address(mu, n, "mu"), _address(sigma, n, "sigma")
    fn(
        stream_key(seed, stream),
        n,
        int(sample_start),
        int(num_samples),
        out_addr,
        mu_addr,
        sigma_addr,
        int(threads or (1 if n * num_samples < SMALL_FILL else _usable_cores())),
    )
    return out


def fill_v2(seed, stream, shape, sample_start, num_samples, out, mu=None, sigma=None, threads=None):
    """:func:`fill` for ``illia-noise-v2``."""
    return fill(GENERATOR_V2, seed, stream, shape, sample_start, num_samples, out, mu, sigma, threads)


def fill_v1(seed, stream, shape, sample_start, num_samples, out, mu=None, sigma=None, threads=None):
    """:func:`fill` for ``illia-noise-v1`` (float64 Box-Muller with polynomial log/sin/cos;
    matches the numpy reference to float32 rounding)."""
    return fill(GENERATOR_V1, seed, stream, shape, sample_start, num_samples, out, mu, sigma, threads)


def check_generator(name: str) -> str:
    """`name` if this runtime implements it, else a :class:`ManifestError` naming the known ones."""
    if name not in GENERATORS:
        from illia_export.errors import ManifestError

        raise ManifestError(
            f"unknown noise generator {name!r}: this runtime implements {', '.join(GENERATORS)} "
            "(an artifact from a newer illia-export? upgrade the runtime)"
        )
    return name


def reference(generator: str):
    """The numpy reference of `generator`: ``f(seed, stream, shape, sample_start, num_samples)``."""
    return standard_normal_v2 if check_generator(generator) == GENERATOR_V2 else standard_normal


# ---------------------------------------------------------------------------------------------
# Row-keyed noise: per-example draws that do not depend on the batch a row arrives in.
# ---------------------------------------------------------------------------------------------


def row_words(row_ids) -> np.ndarray:
    """Stable 64-bit words of row ids (uint64 ``[B]``).

    Integers (any numpy integer dtype or Python ints, negative ones as two's complement) are
    their own word; strings and bytes are the first 8 bytes (little-endian) of their BLAKE2b
    digest, so an id gives the same word in every process, language and machine.
    """
    import hashlib

    arr = np.asarray(row_ids)
    if arr.ndim != 1:
        raise ValueError(f"row ids must be one-dimensional, got shape {arr.shape}")
    if arr.dtype.kind == "i":
        return arr.astype(np.int64).view(np.uint64)
    if arr.dtype.kind == "u":
        return arr.astype(np.uint64)
    if arr.dtype.kind in "USO":
        out = np.empty(len(arr), dtype=np.uint64)
        for i, v in enumerate(arr.tolist()):
            if isinstance(v, str):
                v = v.encode("utf-8")
            elif isinstance(v, (int, np.integer)) and not isinstance(v, bool):
                out[i] = np.uint64(int(v) & _MASK64)
                continue
            if not isinstance(v, bytes):
                raise ValueError(f"row ids must be integers, strings or bytes; got {type(v).__name__} {v!r}")
            out[i] = np.frombuffer(hashlib.blake2b(v, digest_size=8).digest(), dtype="<u8")[0]
        return out
    raise ValueError(f"row ids must be integers, strings or bytes; got dtype {arr.dtype}")


def row_keys(seed: int, stream: int, words: np.ndarray) -> np.ndarray:
    """The key of each row's noise in `stream`: ``mix64(stream_key(seed, stream) + GOLDEN * (w + 1))``
    for the row's word ``w`` (uint64 ``[B]``), the way a stream's key derives from the seed."""
    base = np.uint64(stream_key(seed, stream))
    with np.errstate(over="ignore"):
        return _mix64_np(base + np.uint64(GOLDEN) * (words.astype(np.uint64) + np.uint64(1)))


def standard_normal_rows(
    generator: str,
    seed: int,
    stream: int,
    words: np.ndarray,
    shape: Sequence[int],
    sample_start: int = 0,
    num_samples: int = 1,
    use_kernel: bool = True,
) -> np.ndarray:
    """Row-keyed normals ``[num_samples, B, *shape]`` (float32): row ``b`` is the generator's
    stream of key :func:`row_keys` ``[b]`` with ``prod(shape)`` elements per sample, so it
    depends only on (seed, stream, row word, sample), never on the batch or the row's position.

    `use_kernel`: fill with the compiled kernel where it is built (same numbers as the numpy
    reference to float32 rounding); one implementation per process keeps results bit-stable.
    """
    check_generator(generator)
    shape = tuple(int(d) for d in shape)
    n = math.prod(shape)
    keys = row_keys(seed, stream, words)
    rows = len(keys)
    if use_kernel and _kernel is not None:
        fn = _kernel.fill_v2 if generator == GENERATOR_V2 else _kernel.fill_v1
        per_row = np.empty((rows, num_samples, n), dtype=np.float32)
        addr, step = int(per_row.ctypes.data), 4 * num_samples * n
        for b, key in enumerate(keys.tolist()):
            fn(key, n, int(sample_start), int(num_samples), addr + b * step, 0, 0, 1)
    elif generator == GENERATOR_V2:
        h = _v2_hash_np(keys, sample_start * n, num_samples * n)
        per_row = _v2_transform_np(h).astype(np.float32).reshape(rows, num_samples, n)
    else:
        per_row = _v1_keyed_np(keys, n, sample_start, num_samples)
    return np.ascontiguousarray(per_row.transpose(1, 0, 2)).reshape((num_samples, rows, *shape))
