"""The package's dependency direction (docs/architecture.md): exporters -> runtime -> artifact.

Parsed from the source (no imports run), lazy imports inside functions included: a cycle hidden
in a function body is still a cycle.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parents[1] / "illia_export"

#: For each part, the parts of the package it must never import.
FORBIDDEN = {
    "artifact": {"exporters", "runtime", "cli", "serve", "scale", "nn", "distributions", "losses"},
    "runtime": {"exporters", "cli", "serve", "scale"},
    "serve": {"exporters", "cli", "scale"},
    "scale": {"exporters", "cli", "serve"},
    "nn": {"exporters", "runtime", "artifact", "cli", "serve", "scale"},
    "distributions": {"exporters", "runtime", "artifact", "cli", "serve", "scale"},
}


def imported_parts(path: Path) -> set[tuple[str, int]]:
    """(part of illia_export, line) for every import of the package in `path`."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        names = []
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        elif isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        for name in names:
            parts = name.split(".")
            if parts[0] == "illia_export" and len(parts) > 1:
                found.add((parts[1], node.lineno))
    return found


def module_files(part: str) -> list[Path]:
    base = PKG / part
    return sorted(base.rglob("*.py")) if base.is_dir() else [PKG / f"{part}.py"]


@pytest.mark.parametrize("part", sorted(FORBIDDEN))
def test_part_imports_nothing_above_it(part):
    bad = [
        f"{f.relative_to(PKG.parent)}:{line} imports illia_export.{target}"
        for f in module_files(part)
        for target, line in imported_parts(f)
        if target in FORBIDDEN[part]
    ]
    assert not bad, "dependency direction broken:\n" + "\n".join(bad)


def test_checker_sees_lazy_imports(tmp_path):
    f = tmp_path / "m.py"
    f.write_text("def g():\n    from illia_export.exporters.torch import export\n")
    assert ("exporters", 2) in imported_parts(f)


#: A module longer than this says why in a ``Length:`` paragraph of its docstring (issue #21).
MAX_LINES = 450


def test_long_modules_say_why():
    unexplained = []
    for f in sorted(PKG.rglob("*.py")):
        text = f.read_text()
        if text.count("\n") <= MAX_LINES:
            continue
        doc = ast.get_docstring(ast.parse(text)) or ""
        if "\nLength:" not in "\n" + doc:
            unexplained.append(f"{f.relative_to(PKG.parent)} ({text.count(chr(10))} lines)")
    assert not unexplained, "modules over ~450 lines without a 'Length:' reason:\n" + "\n".join(unexplained)
