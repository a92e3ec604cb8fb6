"""Dead-node pruning shared by the runtime's ONNX graph rewrites (``ort_affine``, ``ort_hoist``)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any


def keep_needed(nodes: Sequence[Any], outputs: Iterable[str]) -> tuple[list[Any], set[str]]:
    """The nodes (in order) that the graph outputs `outputs` depend on, and every tensor they read."""
    needed = set(outputs)
    kept = []
    for node in reversed(nodes):
        if any(o in needed for o in node.output if o):
            kept.append(node)
            needed.update(i for i in node.input if i)
    kept.reverse()
    return kept, needed
