"""The guard mutants (tests/mutants/*.json, run by scripts/mutants.py) stay applicable.

Running every mutant takes minutes, so CI checks only that each entry is well formed, names tests
that exist, and that its ``find`` text occurs exactly once in its file: a refactor that moves a
guard then fails here instead of silently turning the mutant list stale.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("illia_mutants", ROOT / "scripts" / "mutants.py")
mutants = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(mutants)

ALL = mutants.load_mutants()


def test_every_guarded_area_records_mutants():
    """The areas whose guards issue #21 asked to prove (validation, artifact/trust, runtime row keys
    and caches, serve, the C++ tool, the torch capture's size rules) each keep their mutant list."""
    areas = {m["area"] for m in ALL}
    assert {"verify", "artifact", "runtime", "serve", "cpp", "torch_dims", "torch_legacy"} <= areas, areas


@pytest.mark.parametrize("mutant", ALL, ids=[m["id"] for m in ALL])
def test_mutant_applies_and_names_real_tests(mutant):
    mutated = mutants.check_applicable(mutant)
    assert mutated != (ROOT / mutant["file"]).read_text()
    for test in mutant["tests"]:
        path, _, name = test.partition("::")
        source = (ROOT / path).read_text()
        if name:
            func = name.split("[")[0].split("::")[-1]
            assert f"def {func}(" in source, f"{mutant['id']}: {test} names no test function"


def test_malformed_entry_is_refused(tmp_path, monkeypatch):
    (tmp_path / "x.json").write_text('[{"id": "a", "file": "f", "find": "x", "replace": "x", "tests": ["t"]}]')
    monkeypatch.setattr(mutants, "MUTANT_DIR", tmp_path)
    with pytest.raises(SystemExit, match="replacement that changes"):
        mutants.load_mutants()


def test_find_must_occur_once(tmp_path):
    (tmp_path / "m.py").write_text("a = 1\na = 1\n")
    entry = {"id": "dup", "file": "m.py", "find": "a = 1", "replace": "a = 2", "tests": ["t"]}
    with pytest.raises(SystemExit, match="occurs 2 times"):
        mutants.check_applicable(entry, tmp_path)
