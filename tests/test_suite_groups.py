"""The suite's xdist grouping (tests/conftest.py) takes effect: a silent failure would export
each module's fixtures once per worker and build the C++ runtime twice.

pytest 9.2 changed how node ids are stored, and xdist 3.8 then drops its groups without a word
(pytest-dev/pytest-xdist#1386): pyproject pins pytest below 9.2 until xdist follows.
"""

from __future__ import annotations

import os

import pytest

from illia_export.exporters.torch.registry import ParityCase
from tests.conftest import xdist_group


def test_groups_follow_modules_except_the_spread_matrices_the_cpp_build_and_ray():
    assert xdist_group("tests/serve/test_protocol.py::test_x[a]") == "tests/serve/test_protocol.py"
    assert xdist_group("tests/cpp/test_cpp_hostile.py::test_y") == "cpp"
    assert xdist_group("tests/scale/test_ray_engine.py::test_a") == xdist_group("tests/scale/test_errors.py::b") == "ray"
    assert xdist_group("tests/scale/test_local_engine.py::test_c") == "tests/scale/test_local_engine.py"
    parity = "tests/exporters/torch/test_parity.py::test_parity[linear-onnx-vectorized]"
    assert xdist_group(parity) is None
    assert xdist_group(parity, {"case": ParityCase("linear", ("onnx",), ("vectorized",)), "fmt": "onnx"}) == "case:linear"
    mc = "tests/exporters/torch/test_mc_dropout_models.py::test_x[vit-pt2-vectorized]"
    assert xdist_group(mc, {"exported": ("vit", "pt2", "vectorized")}) == "case:vit"


def test_every_test_of_a_case_runs_in_one_group(request):
    """The tests of one export case, across test functions, share one group (one export per
    session): the parity matrix and the graph-structure test of lstm_column, for one."""
    groups = {}
    for item in request.session.items:
        if "test_parity.py" in item.nodeid and "lstm_column" in item.nodeid:
            groups[item.nodeid] = [m.args[0] for m in item.iter_markers("xdist_group")]
    if len(groups) < 3:
        pytest.skip("the lstm_column tests of test_parity.py are not all collected in this run")
    assert all(g == ["case:lstm_column"] for g in groups.values()), groups


@pytest.mark.skipif(not os.environ.get("PYTEST_XDIST_WORKER"), reason="runs under pytest-xdist only (-n 0 given)")
def test_this_test_runs_in_its_module_group(request):
    if not request.config.getvalue("loadgroup"):
        pytest.skip("not run with --dist loadgroup")
    assert request.node.nodeid.endswith("@tests/test_suite_groups.py"), (
        f"xdist dropped the group of {request.node.nodeid!r}: this pytest/xdist pair does not group (see the docstring)"
    )


def test_long_groups_are_handed_out_first_and_case_groups_fill_the_end():
    from tests.conftest import FIRST, schedule_rank

    ranks = [schedule_rank("cpp", 60), schedule_rank("tests/serve/test_server.py", 37),
             schedule_rank("tests/serve/test_hardening.py", 30), schedule_rank("case:lstm", 9),
             schedule_rank("case:linear", 4), schedule_rank(None, 1)]
    assert ranks == sorted(ranks) and FIRST[0] == "cpp"
