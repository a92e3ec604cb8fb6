"""Batch scoring at scale: Monte Carlo predictions with uncertainty as table columns.

:func:`score_table` and :class:`BatchScorer` turn rows into one column per ``Prediction``
summary; :func:`score_dataset` runs them on a Ray Data ``Dataset`` (the ``scale`` extra), and
:func:`score_file` scores a Parquet/NumPy file on either engine. Every row's answer depends
only on (seed, S, its id, its inputs), so it is the same in one process and on a cluster
(docs/scaling.md). Ray and pyarrow are imported only when used.
"""

from __future__ import annotations

from typing import Any

__all__ = ["BatchScorer", "ScoreSettings", "score_dataset", "score_file", "score_table"]


def __getattr__(name: str) -> Any:
    if name in ("BatchScorer", "ScoreSettings", "score_table"):
        from illia_export.scale import scorer

        return getattr(scorer, name)
    if name == "score_dataset":
        from illia_export.scale.ray_engine import score_dataset

        return score_dataset
    if name == "score_file":
        from illia_export.scale.files import score_file

        return score_file
    raise AttributeError(f"module 'illia_export.scale' has no attribute {name!r}")
