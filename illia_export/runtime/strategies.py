"""Noise sources, one per strategy: which noise a chunk of samples gets, and what is cached.

Why separate: each strategy owns its cache and the key that decides when the cache may be
reused — a key that misses a field (the seed, the generator, the batch's shapes) silently
returns another call's noise. Keeping each key next to the code that fills the cache makes
that visible and testable. The predictor (:mod:`illia_export.runtime.predictor`) validates the
call, sizes memory (:mod:`illia_export.runtime.memory`) and runs the graph; a source only says
what noise chunk ``[start, start + count)`` is.

* :class:`FreshSource` — samples ``[0, S)`` of the seed's streams, drawn per chunk into reused
  buffers; where the backend takes sampled weights it writes ``mu + sigma * eps`` directly.
* :class:`BankSource` — the same noise, drawn once per (seed, S, shapes, generator) and kept in
  a bounded LRU (several seeds: clients alternating seeds do not redraw on every call), with
  the backend's precomputed noise-only values (ONNX: the sampled weights) per chunk.
* :class:`LocalSource` — the local variant's pre-activation noise, kept for the next call
  with the same (seed, S, shapes, generator) when the seed was explicit and it is small.

Row-keyed streams (per-example noise, docs/noise.md "Row-keyed noise") are drawn per row by
:func:`row_noise` on top of any source; sources skip them (shape ``(0,)``).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from illia_export.artifact.manifest import BATCH_DIM, SAMPLE_DIM, NoiseSpec
from illia_export.runtime.memory import elements
from illia_export.runtime.sampling import NoiseMaker

#: Largest pre-activation noise (bytes) an explicitly seeded ``local`` call keeps for reuse.
LOCAL_CACHE_BYTES = 256 * 1024 * 1024
#: Most banks (distinct seeds / sample counts) kept at once; bytes are bounded separately.
BANK_CACHE_ENTRIES = 8


@dataclass
class NoiseRequest:
    """One prediction's noise: everything a source needs to draw or look up a chunk."""

    backend: Any
    maker: NoiseMaker
    specs: list[NoiseSpec]
    shapes: list[tuple[int, ...]]  # per-sample shape of every stream
    keyed: list[int]  # streams drawn per row (row_noise), skipped by the source
    words: np.ndarray | None  # the rows' 64-bit words
    seed: int
    explicit_seed: bool
    num_samples: int
    generator: str
    vectorized: bool
    use_kernel: bool = True

    @property
    def drawn(self) -> list[tuple[int, ...]]:
        """Shapes the source draws: row-keyed streams have no elements here."""
        return [(0,) if k in self.keyed else s for k, s in enumerate(self.shapes)]


@dataclass
class Feed:
    """One chunk's noise for the graph; `token`: precomputed values (bank), `plan`: the
    noise holds sampled weights for the streams the plan names (fresh)."""

    noise: list[Any]
    token: Any = None
    plan: Any = None


class FreshSource:
    """``fresh``: samples ``[start, start + count)`` drawn on every call; nothing cached but
    the buffers (one set per shape, in the NoiseMaker)."""

    strategy = "fresh"

    def open(self, req: NoiseRequest) -> _Call:
        plan = req.backend.weight_plan(req.shapes, req.vectorized)
        if plan is not None and any(plan.pairs[k] is not None for k in req.keyed):
            plan = None  # a row-keyed stream is not a weight: feed eps
        return _Call(req, self._chunk, plan)

    @staticmethod
    def _chunk(req: NoiseRequest, plan: Any, start: int, count: int) -> Feed:
        noise = req.maker.draw(
            req.seed, req.drawn, start, count, reuse=True, generator=req.generator,
            affine=plan.pairs if plan is not None else None,
        )
        return Feed(noise, plan=plan)

    def clear(self) -> None:
        pass


class _Call:
    """A source opened for one request: ``chunk(start, count)`` gives that chunk's Feed, with
    the request's row-keyed streams filled in."""

    def __init__(self, req: NoiseRequest, chunk, state: Any = None) -> None:
        self.req, self._chunk, self._state = req, chunk, state

    def chunk(self, start: int, count: int) -> Feed:
        feed = self._chunk(self.req, self._state, start, count)
        if self.req.keyed:
            feed.noise = row_noise(self.req, start, count, feed.noise)
        return feed


class _Slices:
    """Chunks of noise drawn for all S samples (row keys included)."""

    def __init__(self, req: NoiseRequest, noise: list[Any]) -> None:
        self.req, self.noise = req, noise

    def chunk(self, start: int, count: int) -> Feed:
        return Feed([b[start : start + count] for b in self.noise])


@dataclass
class _Bank:
    noise: list[Any]
    nbytes: int
    tokens: dict[tuple[int, int, int], Any] = field(default_factory=dict)


class BankSource:
    """``bank``: S samples drawn once per key and kept (an LRU of up to
    :data:`BANK_CACHE_ENTRIES` banks whose noise and precomputed values stay under
    `max_bytes`; the bank in use is always kept).

    The key is ``(seed, S, drawn shapes, generator)``: every field that changes the numbers.
    """

    strategy = "bank"

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = int(max_bytes)
        self._banks: OrderedDict[tuple, _Bank] = OrderedDict()
        #: The seed ``seed=None`` calls use (drawn once per predictor).
        self.default_seed: int | None = None

    @staticmethod
    def key(req: NoiseRequest) -> tuple:
        return (req.seed, req.num_samples, tuple(req.drawn), req.generator)

    def open(self, req: NoiseRequest) -> _Call:
        key = self.key(req)
        bank = self._banks.get(key)
        if bank is None:
            copies = 2 if req.vectorized and precomputes(req.backend) else 1
            nbytes = 4 * req.num_samples * elements(req.drawn) * copies
            self._evict(room_for=nbytes)
            bank = _Bank(req.maker.draw(req.seed, req.drawn, 0, req.num_samples, generator=req.generator), nbytes)
            self._banks[key] = bank
        self._banks.move_to_end(key)
        return _Call(req, self._chunk, bank)

    def holds(self, req: NoiseRequest) -> bool:
        """Whether the bank this request needs is cached (then nothing new is allocated)."""
        return self.key(req) in self._banks

    def _evict(self, room_for: int) -> None:
        """Drop least recently used banks until `room_for` more bytes fit (before drawing)."""
        while self._banks and (
            len(self._banks) >= BANK_CACHE_ENTRIES
            or sum(b.nbytes for b in self._banks.values()) + room_for > self.max_bytes
        ):
            self._banks.popitem(last=False)

    @staticmethod
    def _chunk(req: NoiseRequest, bank: _Bank, start: int, count: int) -> Feed:
        noise = [b[start : start + count] for b in bank.noise]
        token = None
        if req.vectorized and not req.keyed:
            tkey = (id(req.backend), start, count)
            if tkey not in bank.tokens:
                bank.tokens[tkey] = req.backend.precompute_noise(noise)
            token = bank.tokens[tkey]
        return Feed(noise, token=token)

    def cached_seeds(self) -> list[int]:
        """Seeds of the banks kept, least recently used first."""
        return [k[0] for k in self._banks]

    def clear(self) -> None:
        self._banks.clear()
        self.default_seed = None


class LocalSource:
    """``local``: the local variant's pre-activation noise ``[S, B, out]``. With an explicit
    seed and no row keys it is kept for the next call with the same key
    ``(seed, S, shapes, generator)`` when under :data:`LOCAL_CACHE_BYTES`; otherwise it is
    drawn per chunk like ``fresh``."""

    strategy = "local"

    def __init__(self) -> None:
        self._cache: tuple[tuple, list[Any]] | None = None

    @staticmethod
    def key(req: NoiseRequest) -> tuple:
        words = req.words.tobytes() if req.keyed and req.words is not None else None
        return (req.seed, req.num_samples, tuple(req.shapes), req.generator, tuple(req.keyed), words)

    def will_cache(self, req: NoiseRequest) -> bool:
        """Whether :meth:`open` will draw and keep all S samples for this request (a new key)."""
        return self.cacheable(req) and (self._cache is None or self._cache[0] != self.key(req))

    @staticmethod
    def cacheable(req: NoiseRequest) -> bool:
        return req.explicit_seed and 4 * req.num_samples * elements(req.shapes) <= LOCAL_CACHE_BYTES

    def open(self, req: NoiseRequest) -> _Call:
        if not self.cacheable(req):
            return _Call(req, FreshSource._chunk, None)
        key = self.key(req)
        if self._cache is None or self._cache[0] != key:
            self._cache = None  # free the old noise before drawing the new
            noise = req.maker.draw(req.seed, req.drawn, 0, req.num_samples, generator=req.generator)
            if req.keyed:
                noise = row_noise(req, 0, req.num_samples, noise)
            self._cache = (key, noise)
        return _Slices(req, self._cache[1])

    def clear(self) -> None:
        self._cache = None


def precomputes(backend: Any) -> bool:
    """Whether the backend keeps precomputed noise-only values for a bank (ONNX split bank)."""
    from illia_export.runtime.backends import Backend

    return type(backend).precompute_noise is not Backend.precompute_noise


# ----------------------------------------------------------------------------- row keys
def keyed_streams(specs: list[NoiseSpec], strict: bool = True) -> list[int]:
    """Positions of the noise inputs drawn per row: those with a ``batch`` dim.

    Args:
        strict: refuse noise whose rows cannot be keyed (explicit ``row_ids``); otherwise
            (the default row keys ``0..B-1``) such noise keeps the batch-wide layout.

    Raises:
        StrategyError: (strict) a noise input whose batch dim is folded with another axis
            (``k*batch``) or appears twice, so its rows cannot be keyed.
    """
    from illia_export.artifact.manifest import batch_multiple
    from illia_export.errors import StrategyError

    keyed = []
    for k, spec in enumerate(specs):
        dims = [d for d in spec.shape if d != SAMPLE_DIM]
        foldable = any(d != BATCH_DIM and batch_multiple(d) is not None for d in dims) or dims.count(BATCH_DIM) > 1
        if foldable and not strict:
            continue
        if any(d != BATCH_DIM and batch_multiple(d) is not None for d in dims):
            raise StrategyError(
                f"noise input {spec.name!r} has per-example dims {dims} that fold the batch with other "
                "axes; its rows cannot be keyed, so row-keyed (partition-invariant) noise is unavailable "
                "for this artifact"
            )
        if dims.count(BATCH_DIM) > 1:
            raise StrategyError(f"noise input {spec.name!r} has {dims.count(BATCH_DIM)} batch dims; row keys need one")
        if BATCH_DIM in dims:
            keyed.append(k)
    return keyed


def row_noise(req: NoiseRequest, start: int, count: int, noise: list[Any]) -> list[Any]:
    """`noise` with the row-keyed streams replaced by per-row draws of samples
    ``[start, start + count)``: row ``b`` of stream ``k`` is the stream under the row's key,
    its block every other dim in C order (docs/noise.md)."""
    from illia_export.runtime.noise import standard_normal_rows

    out = list(noise)
    for k in req.keyed:
        dims = [d for d in req.specs[k].shape if d != SAMPLE_DIM]
        pos = dims.index(BATCH_DIM)
        shape = req.shapes[k]
        per_row = [int(d) for i, d in enumerate(shape) if i != pos]
        arr = standard_normal_rows(
            req.generator, req.seed, k, req.words, per_row, start, count, use_kernel=req.use_kernel
        )
        if pos:
            arr = np.ascontiguousarray(np.moveaxis(arr, 1, 1 + pos))
        if not isinstance(noise[k], np.ndarray):  # the backend takes torch tensors
            import torch

            arr = torch.from_numpy(arr).to(noise[k].device)
        out[k] = arr
    return out


def resolve_noise_shapes(specs: list[NoiseSpec], batch: int, sizes: Mapping[str, int]) -> list[tuple[int, ...]]:
    """Per-sample shape of each noise input: ``"samples"`` dropped, ``"batch"``/``"k*batch"``
    from the batch size, ``"<name>"``/``"k*<name>"`` from the named input dim's size in
    `sizes` (dims.md: the first input in manifest order that has the name)."""
    from illia_export.artifact.manifest import dim_factor
    from illia_export.errors import ManifestError

    shapes = []
    for n in specs:
        dims = []
        for d in n.shape:
            if d == SAMPLE_DIM:
                continue
            if isinstance(d, int):
                dims.append(d)
                continue
            named = dim_factor(d)
            if named is None:
                raise ManifestError(f"noise {n.name!r} has a dim {d!r} that is neither an integer nor a named dim")
            k, name = named
            if name == BATCH_DIM:
                dims.append(k * batch)
            elif name in sizes:
                dims.append(k * int(sizes[name]))
            else:
                raise ManifestError(
                    f"noise {n.name!r} has dim {d!r}, but no model input has a dim named {name!r}"
                )
        shapes.append(tuple(dims))
    return shapes
