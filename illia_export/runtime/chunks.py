"""Running one chunk of Monte Carlo samples through a backend and storing its outputs.

Why checked here: the graph is data from a file, so what it returns is checked against the
manifest (output count, ``[samples, ...]`` of the chunk's size, equal per-sample shapes)
before it lands in the result, instead of broadcasting or truncating silently.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Any

import numpy as np

from illia_export.errors import ArtifactError
from illia_export.runtime.strategies import Feed


def run_feed(backend: Any, inputs: list[Any], feed: Feed) -> list[np.ndarray]:
    """One graph call: sampled weights (fresh with a weight plan), precomputed bank values, or noise."""
    if feed.plan is not None:
        return backend.run_weights(inputs, feed.noise, feed.plan)
    if feed.token is not None:
        return backend.run_precomputed(inputs, feed.token)
    return backend.run(inputs, feed.noise)


def store(
    results: list[np.ndarray] | None,
    outs: Sequence[np.ndarray],
    start: int,
    count: int,
    total: int,
    vectorized: bool,
    n_outputs: int,
) -> list[np.ndarray]:
    """Write one call's outputs into the ``[total, ...]`` result arrays (allocated on the first call)."""
    if len(outs) != n_outputs:
        raise ArtifactError(f"the graph returned {len(outs)} outputs, the manifest lists {n_outputs}")
    if results is None:
        results = []
        for o in outs:
            o = np.asarray(o)
            shape = o.shape[1:] if vectorized else o.shape
            results.append(np.empty((total, *shape), dtype=o.dtype))
    for res, o in zip(results, outs):
        o = np.asarray(o)
        if vectorized:
            if o.ndim == 0 or o.shape[0] != count or o.shape[1:] != res.shape[1:]:
                raise ArtifactError(
                    f"a vectorized graph must return [samples, ...] = [{count}, {', '.join(map(str, res.shape[1:]))}], "
                    f"got {list(o.shape)}"
                )
            res[start : start + count] = o
        else:
            if o.shape != res.shape[1:]:
                raise ArtifactError(f"a per-call graph must return {list(res.shape[1:])}, got {list(o.shape)}")
            res[start] = o
    return results


def progress_bar(total: int, enabled: bool):
    """A tqdm bar on stderr (shown after half a second), or None."""
    if not enabled:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, unit="sample", file=sys.stderr, desc="MC samples", leave=False, delay=0.5)
