"""Strictly valid JSON: non-finite floats become ``null`` (never bare ``NaN``/``Infinity``).

Python's ``json`` writes ``NaN``, ``Infinity`` and ``-Infinity`` by default, which no other JSON
parser accepts. Everything illia-export prints or saves as JSON goes through :func:`dumps`.
"""

from __future__ import annotations

import json
import math
from typing import Any

import numpy as np


def sanitize(obj: Any) -> Any:
    """`obj` with non-finite floats replaced by None and numpy scalars/arrays made plain Python."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, (bool, int, str)) or obj is None:
        return obj
    if isinstance(obj, dict):
        return {str(k) if not isinstance(k, str) else k: sanitize(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [sanitize(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return sanitize(obj.tolist())
    if isinstance(obj, np.generic):
        return sanitize(obj.item())
    return obj


def dumps(obj: Any, **kwargs: Any) -> str:
    """``json.dumps`` of :func:`sanitize` (obj), with ``allow_nan=False`` as a guard."""
    return json.dumps(sanitize(obj), allow_nan=False, **kwargs)
