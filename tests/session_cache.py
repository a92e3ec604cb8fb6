"""Build an expensive test fixture once per test session, even when pytest-xdist runs several workers.

A ``scope="session"`` fixture is per process: under ``pytest -n 2`` each worker would export the
same artifacts (or compile the same AOTInductor package) again. :func:`build_once` builds into a
folder beside the workers' own temp folders, under a file lock; the first worker builds, the
others wait for it and read the pickled result. A skip while building is recorded and replayed,
so every worker skips with the same reason; a failure is not recorded, so each worker reports it.
"""

from __future__ import annotations

import os
import pickle
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import pytest
from filelock import FileLock

T = TypeVar("T")


def shared_root(tmp_path_factory) -> Path:
    """The folder all workers of this session share (the parent of each worker's basetemp)."""
    base = tmp_path_factory.getbasetemp()
    return base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base


def build_once(tmp_path_factory, name: str, build: Callable[[Path], T]) -> T:
    """``build(folder)`` run by one worker of the session; the others get its pickled result."""
    root = shared_root(tmp_path_factory)
    folder = root / f"shared-{name}"
    result = root / f"shared-{name}.pickle"
    with FileLock(str(root / f"shared-{name}.lock")):
        if result.exists():
            kind, value = pickle.loads(result.read_bytes())
            if kind == "skip":
                pytest.skip(value)
            return value
        folder.mkdir(exist_ok=True)
        try:
            value = build(folder)
        except pytest.skip.Exception as exc:
            result.write_bytes(pickle.dumps(("skip", str(exc))))
            raise
        result.write_bytes(pickle.dumps(("ok", value)))
        return value
