"""Suite-wide settings: how pytest-xdist shares the tests among its workers.

``bash scripts/test.sh`` runs the suite on every core (``-n auto --dist loadgroup``, from
pyproject). Tests are grouped so that what a group builds once is built once in the session:
each test module is one group (its module-scoped exports run in one worker), all C++ tests are
one group (one CMake build, one AOTInductor compile per model), and the modules listed in
:data:`PER_TEST` are spread test by test, because each of their tests exports its own case
(a lazy cache keyed by the case) and they are the longest modules. Session fixtures shared by
several modules are built once for all workers with :func:`tests.session_cache.build_once`.
"""

from __future__ import annotations

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


def pytest_collection_modifyitems(config, items) -> None:
    for item in items:
        group = xdist_group(item.nodeid)
        if group is not None:
            item.add_marker(pytest.mark.xdist_group(group))
