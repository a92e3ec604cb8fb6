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
