"""Suite-wide settings: how pytest-xdist shares the tests among its workers.

``bash scripts/test.sh`` runs the suite on every core (``-n auto --dist loadgroup``, from
pyproject). Tests are grouped so that what a group builds once is built once in the session:
each test module is one group (its module-scoped exports run in one worker), all C++ tests are
one group (one CMake build, one AOTInductor compile per model), and the modules listed in
:data:`PER_TEST` are spread test by test, because each of their tests exports its own case
(a lazy cache keyed by the case) and they are the longest modules. Session fixtures shared by
several modules are built once for all workers with :func:`tests.session_cache.build_once`.

Each worker is pinned to its own core (and its children inherit it): torch's OpenMP threads and
onnxruntime's spinning thread pools, sized by default to every core, would otherwise fight the
other workers for the same cores and run several times slower than alone.
"""

from __future__ import annotations

import os
import sys

import pytest

#: Modules whose tests are independent exports of their own case: spread test by test.
PER_TEST = {
    "tests/exporters/torch/test_parity.py",
    "tests/exporters/torch/test_families.py",
    "tests/exporters/torch/test_mc_dropout_models.py",
}
#: Folders that run as one group (a shared build).
ONE_GROUP = {"tests/cpp": "cpp"}


def xdist_group(nodeid: str) -> str | None:
    """The xdist group of a test, or None to let any worker take it."""
    module = nodeid.split("::", 1)[0]
    for folder, group in ONE_GROUP.items():
        if module.startswith(folder + "/"):
            return group
    if module in PER_TEST:
        return None
    return module


def pin_worker() -> int | None:
    """Pin this xdist worker to one of the cores the session may use; the core, or None when
    not running as one of several workers."""
    worker = os.environ.get("PYTEST_XDIST_WORKER", "")
    count = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1") or 1)
    if count < 2 or not worker.startswith("gw") or not hasattr(os, "sched_setaffinity"):
        return None
    cores = sorted(os.sched_getaffinity(0))
    if len(cores) < 2:
        return None
    core = cores[int(worker[2:]) % len(cores)]
    os.sched_setaffinity(0, {core})
    for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ[name] = "1"  # read by the libraries at load, here and in subprocesses
    return core


CORE = pin_worker()


def pytest_configure(config) -> None:
    if CORE is not None and "torch" in sys.modules:  # imported before this file: set it directly
        sys.modules["torch"].set_num_threads(1)


def pytest_itemcollected(item) -> None:
    """Mark each test with its group as it is collected (before any collection_modifyitems hook,
    xdist's included, which turns the marks into scheduling groups)."""
    group = xdist_group(item.nodeid)
    if group is not None:
        item.add_marker(pytest.mark.xdist_group(group))


