"""CPU threads of a predictor's backend: the ``threads=`` load option reconciled with each
backend's own option (onnxruntime ``intra_op_num_threads``, TorchScript/TFLite ``num_threads``).

Why the default is the affinity mask: Ray workers and containers restrict the cores a process
may use; ``os.cpu_count()`` would oversubscribe them.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from illia_export.errors import InputError

#: The backend option that sets CPU threads, by artifact format.
THREAD_OPTIONS = {"onnx": "intra_op_num_threads", "torchscript": "num_threads", "tflite": "num_threads"}


def default_threads() -> int:
    """CPU threads by default: the cores this process may use (its affinity mask, which Ray
    workers and containers restrict), else ``os.cpu_count()``."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # pragma: no cover - non-Linux
        return max(1, os.cpu_count() or 1)


def _resolve_threads(fmt: str, options: dict[str, Any]) -> int:
    """Pop ``threads`` from `options`, reconcile it with the backend's own thread option and
    write the result into that option; returns the thread count."""
    key = THREAD_OPTIONS.get(fmt)
    threads = options.pop("threads", None)
    native = options.get(key) if key else None
    for name, value in (("threads", threads), (key, native)):
        if value is not None and (
            isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1
        ):
            raise InputError(f"`{name}` (={value!r}) must be a positive integer")
    if threads is not None and native is not None and int(threads) != int(native):
        raise InputError(f"`threads` (={threads}) and `{key}` (={native}) disagree; pass one of them")
    resolved = int(threads if threads is not None else native if native is not None else default_threads())
    if key is not None:
        options[key] = resolved
    return resolved
