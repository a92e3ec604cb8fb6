"""The suite's xdist grouping (tests/conftest.py) takes effect: a silent failure would export
each module's fixtures once per worker and build the C++ runtime twice.

pytest 9.2 changed how node ids are stored, and xdist 3.8 then drops its groups without a word
(pytest-dev/pytest-xdist#1386): pyproject pins pytest below 9.2 until xdist follows.
"""

from __future__ import annotations

import os

import pytest

from tests.conftest import xdist_group


def test_groups_follow_modules_except_the_spread_matrices_and_the_cpp_build():
    assert xdist_group("tests/serve/test_protocol.py::test_x[a]") == "tests/serve/test_protocol.py"
    assert xdist_group("tests/cpp/test_cpp_hostile.py::test_y") == "cpp"
    assert xdist_group("tests/exporters/torch/test_parity.py::test_parity[linear-onnx-vectorized]") is None


@pytest.mark.skipif(not os.environ.get("PYTEST_XDIST_WORKER"), reason="runs under pytest-xdist only (-n 0 given)")
def test_this_test_runs_in_its_module_group(request):
    if not request.config.getvalue("loadgroup"):
        pytest.skip("not run with --dist loadgroup")
    assert request.node.nodeid.endswith("@tests/test_suite_groups.py"), (
        f"xdist dropped the group of {request.node.nodeid!r}: this pytest/xdist pair does not group (see the docstring)"
    )
