"""Re-run the guard mutants of tests/mutants/*.json: each must make its tests fail.

A guard (validation, input check, cache key, atomic write) is only real if a test fails when the
guard is weakened. Each JSON file lists one-line mutants of one area::

    [{"id": "...", "file": "illia_export/....py", "find": "exact text", "replace": "mutated text",
      "tests": ["tests/...::test_name", ...], "why": "what the guard protects"}]

For every mutant this script copies the tracked tree into a temporary folder, checks that the
mutant's tests pass there unmutated (once per distinct test list), applies the one replacement
(``find`` must occur exactly once) and runs the tests again, expecting a failure. It prints one
line per mutant and exits with 1 if any mutant survives or any entry is malformed.

Usage: ``.venv/bin/python scripts/mutants.py [--area NAME ...] [--id ID ...] [--list]``
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MUTANT_DIR = ROOT / "tests" / "mutants"
FIELDS = ("id", "file", "find", "replace", "tests")


def load_mutants(areas: list[str] | None = None) -> list[dict]:
    """All mutants of the selected areas (file stems of tests/mutants/*.json), checked for shape."""
    mutants: list[dict] = []
    seen: set[str] = set()
    for path in sorted(MUTANT_DIR.glob("*.json")):
        if areas and path.stem not in areas:
            continue
        entries = json.loads(path.read_text())
        if not isinstance(entries, list):
            raise SystemExit(f"{path}: expected a JSON list of mutants")
        for i, m in enumerate(entries):
            where = f"{path.name}[{i}]"
            missing = [f for f in FIELDS if f not in m]
            if missing:
                raise SystemExit(f"{where}: missing fields {missing}")
            if m["id"] in seen:
                raise SystemExit(f"{where}: duplicate mutant id {m['id']!r}")
            if not m["tests"] or m["find"] == m["replace"]:
                raise SystemExit(f"{where}: a mutant needs tests and a replacement that changes the text")
            seen.add(m["id"])
            mutants.append({**m, "area": path.stem})
    return mutants


def check_applicable(m: dict, root: Path = ROOT) -> str:
    """The mutated text of `m`'s file; raises SystemExit unless `find` occurs exactly once."""
    text = (root / m["file"]).read_text()
    count = text.count(m["find"])
    if count != 1:
        raise SystemExit(f"mutant {m['id']}: 'find' occurs {count} times in {m['file']} (expected once)")
    return text.replace(m["find"], m["replace"])


def copy_tree(dest: Path) -> None:
    """The tracked files (and the compiled kernel, which git ignores) copied to `dest`."""
    files = subprocess.run(
        ["git", "ls-files", "-z"], cwd=ROOT, check=True, capture_output=True
    ).stdout.decode().split("\0")
    for rel in filter(None, files):
        src = ROOT / rel
        if src.is_file():
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / rel)
    for so in (ROOT / "illia_export" / "runtime").glob("_noisekernel*.so"):
        shutil.copy2(so, dest / "illia_export" / "runtime" / so.name)


def run_tests(tree: Path, tests: list[str]) -> bool:
    """Whether `tests` pass in `tree` (the tree first on the import path)."""
    env = {**os.environ, "PYTHONPATH": str(tree)}
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", "-n", "0", *tests],
        cwd=tree, env=env, capture_output=True, text=True,
    )
    return proc.returncode == 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--area", action="append", help="only the mutants of tests/mutants/AREA.json")
    parser.add_argument("--id", action="append", help="only these mutant ids")
    parser.add_argument("--list", action="store_true", help="list the mutants and check they apply")
    args = parser.parse_args(argv)
    mutants = load_mutants(args.area)
    if args.id:
        mutants = [m for m in mutants if m["id"] in set(args.id)]
    for m in mutants:
        check_applicable(m)
    if args.list:
        for m in mutants:
            print(f"{m['area']:>12}  {m['id']}: {m.get('why', '')}")
        return 0
    survivors: list[str] = []
    with tempfile.TemporaryDirectory(prefix="illia-mutants-") as tmp:
        tree = Path(tmp)
        copy_tree(tree)
        baseline_ok: dict[tuple[str, ...], bool] = {}
        for m in mutants:
            key = tuple(m["tests"])
            if key not in baseline_ok:
                baseline_ok[key] = run_tests(tree, m["tests"])
            if not baseline_ok[key]:
                print(f"BROKEN   {m['id']}: its tests fail without the mutant")
                survivors.append(m["id"])
                continue
            target = tree / m["file"]
            original = target.read_text()
            target.write_text(check_applicable(m, tree))
            try:
                killed = not run_tests(tree, m["tests"])
            finally:
                target.write_text(original)
            print(f"{'killed' if killed else 'SURVIVED':8} {m['id']}")
            if not killed:
                survivors.append(m["id"])
    print(f"{len(mutants) - len(survivors)}/{len(mutants)} mutants killed")
    return 1 if survivors else 0


if __name__ == "__main__":
    raise SystemExit(main())
