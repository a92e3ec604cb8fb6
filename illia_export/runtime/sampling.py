"""Noise for the Monte Carlo strategies: which generator, which buffers, which samples.

Every strategy draws from the generator the artifact's manifest names (``noise_generator``:
``illia-noise-v1`` or ``illia-noise-v2``, :mod:`illia_export.runtime.noise`): stream ``k`` is
noise input ``k`` of the graph (manifest order), sample ``s`` of a prediction with ``S``
samples is sample ``s`` of its stream. Implementations: on the CPU the compiled kernel when it
was built (both generators; threads, written in place into the buffers the backend reads), else
the torch ports (also on CUDA), else the numpy references. All give the same numbers to float32
rounding (~1e-6).
"""

from __future__ import annotations

import importlib.util
import math
import os
import secrets
from typing import Any

import numpy as np

from illia_export.runtime import noise as _noise

# Memory sizing lives in runtime/memory.py; these names stay importable from here.
from illia_export.runtime.memory import (  # noqa: F401
    ACTIVATION_FACTOR,
    DEFAULT_CHUNK_BYTES,
    NOISE_COPIES,
    available_memory,
    default_chunk,
    format_bytes,
)

STRATEGIES = ("fresh", "bank", "local")
#: ``predict``'s default: ``local`` for a single row where the artifact has a local variant
#: (exact per example, and for one row the joint is the row's own distribution), else ``fresh``.
AUTO = "auto"
NOISE_IMPLS = ("auto", "torch", "numpy")


def torch_available() -> bool:
    """Whether torch can be imported (without importing it)."""
    return importlib.util.find_spec("torch") is not None


def random_seed() -> int:
    """A fresh non-negative 63-bit seed from the OS entropy pool."""
    return secrets.randbits(63)


class NoiseMaker:
    """Draws ``illia-noise-v1``/``v2`` normals as torch tensors (on a device) or numpy arrays.

    Args:
        kind: ``"torch"`` or ``"numpy"``: the array type handed to the backend.
        device: torch device of the tensors (``"cpu"``/``"cuda"``), used with torch.
        impl: ``"auto"`` (the compiled kernel on the CPU when built, else torch when
            importable), ``"torch"`` (torch ports only) or ``"numpy"`` (numpy references only).
    """

    def __init__(self, kind: str = "numpy", device: str = "cpu", impl: str = "auto") -> None:
        if impl not in NOISE_IMPLS:
            from illia_export.errors import InputError

            raise InputError(f"`noise_impl` (={impl!r}) must be one of {NOISE_IMPLS}")
        self.use_torch = impl == "torch" or (impl == "auto" and torch_available())
        if impl == "torch" and not torch_available():
            from illia_export.errors import MissingBackendError

            raise MissingBackendError("torch", "torch", "noise_impl='torch'")
        self.kind = kind if self.use_torch else "numpy"
        self.device = device if self.use_torch else "cpu"
        if self.use_torch and self.device != "cpu":
            import torch

            if not torch.cuda.is_available():
                # e.g. onnxruntime-gpu next to a CPU-only torch: draw on the CPU, the backend
                # copies the noise to the device.
                self.kind, self.device = "numpy", "cpu"
        self.impl = impl
        self._buffers: dict[tuple, list[Any]] = {}

    def uses_kernel(self, generator: str) -> bool:
        """Whether :meth:`draw` fills with the compiled kernel (CPU, ``impl="auto"``)."""
        return self.impl == "auto" and self.device == "cpu" and _noise.kernel_available()

    def _buffers_for(
        self, shapes: list[tuple[int, ...]], num_samples: int, reuse: bool, as_torch: bool
    ) -> list[Any]:
        key = (tuple(shapes), num_samples, as_torch)
        bufs = self._buffers.get(key) if reuse else None
        if bufs is None:
            if as_torch:
                import torch

                bufs = [
                    torch.empty((num_samples, *s), dtype=torch.float32, device=self.device) for s in shapes
                ]
            else:
                bufs = [np.empty((num_samples, *s), dtype=np.float32) for s in shapes]
            if reuse:
                self._buffers.clear()  # keep one set: bounded memory
                self._buffers[key] = bufs
        return bufs

    def draw(
        self,
        seed: int,
        shapes: list[tuple[int, ...]],
        sample_start: int,
        num_samples: int,
        reuse: bool = False,
        generator: str = _noise.GENERATOR_V1,
        affine: list[tuple[np.ndarray, np.ndarray] | None] | None = None,
    ) -> list[Any]:
        """Samples ``[sample_start, sample_start + num_samples)`` of every stream.

        Args:
            seed: non-negative seed.
            shapes: per-sample shape of each noise input (stream ``k`` = position ``k``).
            sample_start: first sample index.
            num_samples: number of samples.
            reuse: write into buffers kept from the previous call with the same shapes (the
                caller must be done with the previous arrays).
            generator: ``"illia-noise-v1"`` or ``"illia-noise-v2"``.
            affine: optional, per stream, ``(mu, sigma)`` float32 arrays of the per-sample
                shape (or None): that stream then holds ``mu + sigma * eps`` (the sampled
                weights; the compiled kernel writes them in one pass) instead of ``eps``.

        Returns:
            One array per stream, each ``[num_samples, *shape]`` float32.
        """
        _noise.check_generator(generator)
        affine = affine or [None] * len(shapes)
        if self.uses_kernel(generator):
            bufs = self._buffers_for(shapes, num_samples, reuse, as_torch=self.kind == "torch")
            for k, (s, buf) in enumerate(zip(shapes, bufs)):
                if not math.prod(s):  # nothing to draw (an empty buffer may have no address)
                    continue
                mu, sigma = affine[k] if affine[k] is not None else (None, None)
                _noise.fill(generator, seed, k, s, sample_start, num_samples, buf, mu, sigma)
            return bufs
        if not self.use_torch:
            ref = _noise.standard_normal_v2 if generator == _noise.GENERATOR_V2 else _noise.standard_normal
            out = [ref(seed, k, s, sample_start, num_samples) for k, s in enumerate(shapes)]
            for eps, aff in zip(out, affine):
                if aff is not None:  # the graph's rounding: Mul, then Add
                    np.multiply(eps, aff[1], out=eps)
                    np.add(eps, aff[0], out=eps)
            return out
        import torch

        port = (
            _noise.standard_normal_v2_torch
            if generator == _noise.GENERATOR_V2
            else _noise.standard_normal_torch
        )
        bufs = self._buffers_for(shapes, num_samples, reuse, as_torch=True)
        for k, (s, buf) in enumerate(zip(shapes, bufs)):
            port(seed, k, s, sample_start, num_samples, out=buf)
            if affine[k] is not None:
                mu, sigma = (torch.from_numpy(np.ascontiguousarray(a)).to(buf.device) for a in affine[k])
                buf.mul_(sigma).add_(mu)
        if self.kind == "numpy":
            return [b.numpy() for b in bufs]
        return bufs

    @staticmethod
    def elements(shapes: list[tuple[int, ...]]) -> int:
        """Noise elements per sample, over all streams."""
        return sum(math.prod(s) for s in shapes)


def cpu_count() -> int:
    """CPU cores usable by this process."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover
        return max(1, os.cpu_count() or 1)


def as_numpy(arrays: list[Any]) -> list[np.ndarray]:
    """numpy copies/views of torch tensors or numpy arrays."""
    from illia_export.runtime.backends import to_numpy

    return [to_numpy(a) for a in arrays]
