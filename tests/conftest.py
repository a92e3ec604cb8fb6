"""Suite-wide settings: how pytest-xdist shares the tests among its workers.

``bash scripts/test.sh`` runs the suite on every core (``-n auto --dist loadgroup``, from
pyproject). Tests are grouped so that what a group builds once is built once in the session:
each test module is one group (its module-scoped exports run in one worker), all C++ tests are
one group (one CMake build, one AOTInductor compile per model), so are the Ray modules (one
local Ray instance), and the modules listed in
:data:`PER_TEST` are spread case by case: they are the longest modules, each of their tests
exports the case it names (a lazy cache keyed by the case), and all tests of one case run in one
worker, so each export is made once (a test that names no case goes to any worker). Session fixtures shared by
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
#: Folders and modules that run as one group: a shared build, a shared Ray instance.
ONE_GROUP = {
    "tests/cpp": "cpp",
    "tests/scale/test_ray_engine.py": "ray",
    "tests/scale/test_errors.py": "ray",
}
#: Groups handed out first, longest first (measured on 2 cores: the C++ build and its
#: AOTInductor compiles ~130 s, the JAX exporter ~75 s, Ray ~55 s, the MC-dropout transformers
#: and the examples' training ~35-50 s): a long group started last would run on alone.
FIRST = (
    "cpp",
    "tests/exporters/jax/test_jax_export.py",
    "ray",
    "tests/examples/test_regression_example.py",
    "tests/runtime/test_backends_speedpaths.py",
    "tests/nn/jax/test_jax_layers.py",
)


def case_of(params: dict) -> str | None:
    """The export case a spread test names: its ``case`` parameter (a registry ParityCase or a
    name) or its parametrized ``exported`` fixture's param (a tuple whose first item names it)."""
    case = params.get("case")
    if case is not None:
        return getattr(case, "name", None) or str(case)
    exported = params.get("exported")
    if isinstance(exported, tuple) and exported:
        return str(exported[0])
    return None


def xdist_group(nodeid: str, params: dict | None = None) -> str | None:
    """The xdist group of a test (`params`: its parametrization), or None to let any worker take it."""
    module = nodeid.split("::", 1)[0]
    for where, group in ONE_GROUP.items():
        if module == where or module.startswith(where + "/"):
            return group
    if module in PER_TEST:
        case = case_of(params or {})
        return None if case is None else f"case:{case}"
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
    callspec = getattr(item, "callspec", None)
    group = xdist_group(item.nodeid, callspec.params if callspec is not None else None)
    if group is not None:
        item.add_marker(pytest.mark.xdist_group(group))


def schedule_rank(group: str | None, size: int) -> tuple:
    """Sort key of a group in the order xdist hands groups out (``--no-loadscope-reorder``):
    :data:`FIRST`, then module groups, then the many small case groups (they fill the end of
    the run evenly), larger groups first within each; ungrouped tests last."""
    if group in FIRST:
        return (0, FIRST.index(group))
    if group is None:
        return (3, 0)
    return (2 if group.startswith("case:") else 1, -size)


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(config, items) -> None:
    """Under xdist, order the tests group by group (see :func:`schedule_rank`); each worker
    sorts the same collection the same way, as xdist requires."""
    if not os.environ.get("PYTEST_XDIST_WORKER"):
        return
    groups = [next((m.args[0] for m in item.iter_markers("xdist_group")), None) for item in items]
    size: dict = {}
    first: dict = {}
    for i, g in enumerate(groups):
        size[g] = size.get(g, 0) + 1
        first.setdefault(g, i)
    order = sorted(range(len(items)), key=lambda i: (schedule_rank(groups[i], size[groups[i]]), first[groups[i]], i))
    items[:] = [items[i] for i in order]
