"""Memory: how much a prediction will allocate, how much the process may allocate, and the
chunk size that keeps one graph call under the budget.

Why one place: a Monte Carlo run allocates the result (``S x B x outputs``, plus the float64
summaries), the noise (per chunk, or all S samples for a bank), the sampled weights, and the
graph's activations per chunk. Every one of them is estimated here before it is allocated, and
compared with what this process can really get (``MemAvailable``, and the cgroup and
``RLIMIT_AS`` limits a container or ``ulimit -v`` imposes), so a request that cannot fit fails
at once with a :class:`ResourceError` that says what to lower, instead of dying in the
allocator after minutes of work.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from illia_export.artifact.manifest import SAMPLE_DIM, TensorSpec, batch_multiple
from illia_export.errors import ResourceError

#: Default memory budget of one vectorized chunk (noise, sampled weights, activations, outputs).
DEFAULT_CHUNK_BYTES = 512 * 1024 * 1024
#: Copies of the noise a vectorized graph holds per sample: ``eps`` itself, ``softplus(rho) * eps``
#: and the sampled weights ``w`` (the temporaries of ``mu + sigma * eps``).
NOISE_COPIES = 3
#: Activation bytes per row and sample, as a multiple of the row's input + output bytes, where the
#: backend does not report intermediate shapes (the ``k`` of docs/runtime.md "Memory bounds").
ACTIVATION_FACTOR = 32
#: Memory of a result per byte of raw samples: the samples and the float64 summaries built on
#: them (per-sample softmax for classifiers).
RESULT_COPIES = 3
#: Requests whose whole estimate is below this skip the system query: reading /proc and the
#: cgroup files costs ~15 us each, more than a one-row S = 1 prediction's own Python work.
SMALL_REQUEST_BYTES = 16 * 1024 * 1024
#: Seconds a measured limit is reused for requests that need less than a tenth of it.
CACHE_SECONDS = 1.0


def format_bytes(n: float) -> str:
    """``1536`` -> ``"1.5 KiB"``."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if abs(n) < 1024 or unit == "PiB":
            return f"{n:.3g} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1024
    return f"{n:.3g} PiB"  # pragma: no cover


# ------------------------------------------------------------------ what the process may use
def _read_int(path: str) -> int | None:
    try:
        with open(path) as fh:
            text = fh.read().strip()
    except OSError:
        return None
    if not text or text == "max":
        return None
    try:
        return int(text.split()[0])
    except ValueError:
        return None


def _meminfo_available() -> int | None:
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):  # pragma: no cover - non-POSIX
        return None


def _cgroup_dirs(root: str, proc_cgroup: str) -> list[tuple[str, str, str, str]]:
    """``(folder, top, limit file, usage file)`` of this process's cgroup v2 and v1 (memory
    controller), from /proc/self/cgroup."""
    out = []
    try:
        with open(proc_cgroup) as fh:
            lines = fh.read().splitlines()
    except OSError:
        return out
    for line in lines:
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        _, controllers, path = parts
        path = path.rstrip("/")
        if controllers == "":
            out.append((root + path, root, "memory.max", "memory.current"))
        elif "memory" in controllers.split(","):
            top = root + "/memory"
            out.append((top + path, top, "memory.limit_in_bytes", "memory.usage_in_bytes"))
    return out


def cgroup_headroom(root: str = "/sys/fs/cgroup", proc_cgroup: str = "/proc/self/cgroup") -> int | None:
    """Bytes this process's cgroup may still allocate: ``memory.max - memory.current`` (v2) or
    ``memory.limit_in_bytes - memory.usage_in_bytes`` (v1), the smallest over the cgroup and
    its parents; None without a limit."""
    best: int | None = None
    for base, top, limit_name, usage_name in _cgroup_dirs(root, proc_cgroup):
        path = base
        while path.startswith(top):
            limit = _read_int(f"{path}/{limit_name}")
            # v1 reports "no limit" as a huge number (PAGE_COUNTER_MAX pages)
            if limit is not None and limit < 2**60:
                usage = _read_int(f"{path}/{usage_name}") or 0
                room = max(0, limit - usage)
                best = room if best is None else min(best, room)
            if path == top:
                break
            path = path.rsplit("/", 1)[0]
    return best


def address_space_headroom() -> int | None:
    """Bytes of address space left under ``RLIMIT_AS`` (``ulimit -v``); None when unlimited."""
    try:
        import resource

        soft, _ = resource.getrlimit(resource.RLIMIT_AS)
    except (ImportError, OSError, ValueError):  # pragma: no cover - non-POSIX
        return None
    if soft == resource.RLIM_INFINITY or soft < 0:
        return None
    used = 0
    try:
        with open("/proc/self/statm") as fh:
            used = int(fh.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        pass
    return max(0, soft - used)


def available_memory() -> int | None:
    """Bytes this process can still allocate: the smallest of ``MemAvailable``, the cgroup's
    headroom (v2 ``memory.max``/v1 ``limit_in_bytes`` minus usage) and ``RLIMIT_AS`` minus the
    address space in use; None when none of them is known."""
    values = [v for v in (_meminfo_available(), cgroup_headroom(), address_space_headroom()) if v is not None]
    return min(values) if values else None


_cache: list[float] = [0.0, 0.0]  # (monotonic time, bytes) of the last measurement


def _available_cached(nbytes: int) -> int | None:
    """:func:`available_memory`, reused for a second when the request is small next to it."""
    now = time.monotonic()
    if now - _cache[0] < CACHE_SECONDS and nbytes * 10 < _cache[1]:
        return int(_cache[1])
    avail = available_memory()
    if avail is not None:
        _cache[0], _cache[1] = now, float(avail)
    return avail


def check_fits(nbytes: int, what: str, hint: str = "lower the number of samples or the batch size") -> None:
    """Raise ResourceError when `nbytes` cannot be allocated by this process."""
    avail = available_memory()
    if avail is not None and nbytes > avail:
        raise ResourceError(
            f"{what} needs {format_bytes(nbytes)}, more than the {format_bytes(avail)} of memory available to "
            f"this process; {hint}"
        )


# ------------------------------------------------------------------ what a prediction needs
def default_chunk(
    num_samples: int,
    per_sample_elements: int,
    max_bytes: int = DEFAULT_CHUNK_BYTES,
    *,
    other_bytes_per_sample: int = 0,
) -> int:
    """Samples per vectorized call so that one chunk stays under `max_bytes`.

    One sample costs ``4 * NOISE_COPIES * per_sample_elements`` (float32 noise, the scaled
    noise and the sampled weights) plus `other_bytes_per_sample` (activations and outputs).
    """
    per_sample = max(1, 4 * NOISE_COPIES * per_sample_elements + max(0, other_bytes_per_sample))
    return max(1, min(num_samples, max_bytes // per_sample))


def itemsize(dtype: str) -> int:
    try:
        return np.dtype(dtype).itemsize
    except TypeError:  # bfloat16 has no numpy dtype
        return 2


def output_bytes_per_sample(outputs: Sequence[TensorSpec], sizes: dict[str, int], batch: int) -> int:
    """Bytes of one sample's outputs, from the manifest's output specs (symbolic dims bound
    from the inputs, `sizes`; unknown ones counted as 1)."""
    total = 0
    for spec in outputs:
        n = 1
        for dim in spec.shape:
            if dim == SAMPLE_DIM:
                continue
            if isinstance(dim, int):
                n *= dim
            else:
                k = batch_multiple(dim)
                n *= k * batch if k is not None else sizes.get(dim, 1)
        total += n * itemsize(spec.dtype)
    return total


@dataclass
class MemoryPlan:
    """What one prediction will hold, in bytes, and the chunk size that fits the budget."""

    chunk: int
    result: int  # S x outputs x RESULT_COPIES
    per_sample: int  # noise copies + activations of one sample (activations: vectorized only)
    cached: int  # bytes a strategy keeps for all S samples (a bank's noise and weights)

    @property
    def total(self) -> int:
        return self.result + self.cached + self.chunk * self.per_sample


def plan(
    *,
    num_samples: int,
    batch: int,
    noise_elements: int,
    input_bytes: int,
    output_bytes: int,
    vectorized: bool,
    budget: int,
    chunk_size: int | None,
    cached_copies: int,
) -> MemoryPlan:
    """Size everything large before it is allocated; refuse (ResourceError) what cannot fit.

    Args:
        noise_elements: noise values of one sample (all streams drawn for this call).
        input_bytes, output_bytes: one sample's inputs and outputs (the whole batch).
        cached_copies: copies of the S-sample noise a strategy keeps (bank: its noise, plus its
            precomputed weights where the backend keeps them; seeded local: its noise).
        chunk_size: the caller's; None chooses the largest chunk under `budget`.
    """
    act = ACTIVATION_FACTOR * (input_bytes + output_bytes) if vectorized else 0
    per_sample = 4 * NOISE_COPIES * noise_elements + act
    result = RESULT_COPIES * num_samples * output_bytes
    cached = 4 * num_samples * noise_elements * cached_copies
    estimate = result + cached + per_sample
    small = estimate < SMALL_REQUEST_BYTES
    avail = _available_cached(estimate) if small else available_memory()

    def fits(nbytes: int, what: str, hint: str) -> None:
        if avail is not None and nbytes > avail:
            raise ResourceError(
                f"{what} needs {format_bytes(nbytes)}, more than the {format_bytes(avail)} of memory available "
                f"to this process; {hint}"
            )

    fits(result, f"the result ({num_samples} samples x batch {batch}) and its summaries",
         "lower the number of samples or split the batch")
    if cached:
        fits(result + cached, f"the noise bank ({num_samples} samples) and the result",
             "lower the number of samples or use strategy='fresh'")
    fits(per_sample, "one Monte Carlo sample (noise, sampled weights and activations)",
         "lower the number of samples or the batch size")
    if chunk_size is not None:
        chunk = min(int(chunk_size), num_samples)
    else:
        chunk = default_chunk(num_samples, noise_elements, budget, other_bytes_per_sample=act)
        if avail is not None:  # never plan a chunk the process cannot hold next to the rest
            room = (avail - result - cached) // max(1, per_sample)
            chunk = max(1, min(chunk, room))
    if vectorized or chunk_size is not None:
        fits(result + cached + chunk * per_sample, f"a chunk of {chunk} samples with the result",
             "lower the chunk size")
    return MemoryPlan(chunk, result, per_sample, cached)


def elements(shapes: Sequence[Sequence[int]]) -> int:
    """Noise elements per sample, over all streams."""
    return sum(math.prod(s) for s in shapes)
