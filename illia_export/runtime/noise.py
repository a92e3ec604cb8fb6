"""The illia-export noise generator (``illia-noise-v1``): seeded, counter-based, portable.

Every runtime (Python/numpy, Python/torch on CPU or CUDA, C++, Kotlin/Swift) computes the same
standard normals from ``(seed, stream, sample, element)`` with 64-bit integer arithmetic and one
Box-Muller step, so the same seed gives the same samples everywhere and regardless of how the
samples are chunked. The stream layout (documented in docs/noise.md):

* stream ``k`` is the position of the noise input in the manifest's ``noise`` list;
* ``key_k = mix64(seed + GOLDEN * (k + 1))`` (all arithmetic mod 2**64);
* a noise input with ``n`` elements per sample uses ``m = ceil(n / 2)`` counters per sample;
  element pair ``p`` of sample ``s`` uses counter ``c = s * m + p`` and
  ``z = mix64(key_k + GOLDEN * (c + 1))``;
* ``u1 = ((z >> 40) + 0.5) / 2**24``, ``u2 = (((z >> 16) & 0xFFFFFF) + 0.5) / 2**24``;
  ``r = sqrt(-2 ln u1)``, ``t = 2 pi u2`` in float64; element ``2p`` is ``r cos t`` and element
  ``2p + 1`` is ``r sin t`` (dropped for the last pair when ``n`` is odd), rounded to float32;
* elements are laid out row-major in the distribution's shape.

``mix64`` is the SplitMix64 finalizer. It passes the usual statistical batteries for this use
and, unlike numpy's ziggurat, is a dozen lines in any language.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Sequence

import numpy as np

GENERATOR_NAME = "illia-noise-v1"
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
    m = (n + 1) // 2
    key = np.uint64(stream_key(seed, stream))
    with np.errstate(over="ignore"):
        counters = np.arange(sample_start * m + 1, (sample_start + num_samples) * m + 1, dtype=np.uint64)
        z = _mix64_np(counters * np.uint64(GOLDEN) + key)
    u1 = ((z >> np.uint64(40)).astype(np.float64) + 0.5) * (1.0 / 16777216.0)
    u2 = (((z >> np.uint64(16)) & np.uint64(0xFFFFFF)).astype(np.float64) + 0.5) * (1.0 / 16777216.0)
    r = np.sqrt(-2.0 * np.log(u1))
    t = (2.0 * math.pi) * u2
    out = np.empty((num_samples, 2 * m), dtype=np.float32)
    out[:, 0::2] = (r * np.cos(t)).reshape(num_samples, m)
    out[:, 1::2] = (r * np.sin(t)).reshape(num_samples, m)
    return out[:, :n].reshape((num_samples, *shape))


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


def _fill_pairs_parallel(torch, out_pairs, first_counter: int, key: int) -> None:
    """Split the counter range over single-threaded worker threads (CPU), or run it in one go
    (CUDA, or small ranges). Torch releases the GIL inside each op, so the workers run in
    parallel; each works on its own cache-sized scratch."""
    total = out_pairs.shape[0]
    if out_pairs.device.type != "cpu" or total < _MIN_POOLED:
        _fill_pairs_torch(torch, out_pairs, first_counter, key)
        return
    workers = _cpu_workers()
    with _POOL_LOCK:
        if not _POOL or _POOL[0]._max_workers != workers:
            from concurrent.futures import ThreadPoolExecutor

            _POOL[:] = [
                ThreadPoolExecutor(
                    max_workers=workers, thread_name_prefix="illia-noise", initializer=_single_threaded_worker
                )
            ]
        pool = _POOL[0]
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
