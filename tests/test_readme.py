"""Every command the README shows runs, and its CLI reference is the real ``--help`` output.

* Fenced blocks preceded by ``<!-- readme-test -->`` (``python`` and ``bash``) run in order in one
  temporary directory, with the virtual environment's ``bin`` first on ``PATH`` and the checkout
  importable, so later blocks can use the files earlier ones wrote.
* The two set-up commands (``bash scripts/demo.sh``, ``bash scripts/test.sh``) are not run here
  (they would install a virtual environment and run this suite): the scripts must exist, be
  executable, and ``.ci/run`` must call ``scripts/test.sh``. The demo's ``--quick`` path itself is
  tested by ``tests/examples/test_digits_demo.py``.
* Blocks preceded by ``<!-- help: COMMAND -->`` must equal ``illia-export COMMAND --help`` at 100
  columns; ``python tests/test_readme.py --update`` rewrites them from the real output.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
HELP_COLUMNS = "100"

_BLOCK = re.compile(r"<!--\s*(?P<marker>[^>]*?)\s*-->\s*\n```(?P<lang>[\w-]*)\n(?P<body>.*?)```", re.DOTALL)


def readme_blocks(text: str) -> list[tuple[str, str, str]]:
    """``(marker, language, body)`` of every fenced block directly preceded by an HTML comment."""
    return [(m["marker"], m["lang"], m["body"]) for m in _BLOCK.finditer(text)]


def marked_blocks(text: str) -> list[tuple[str, str]]:
    return [(lang, body) for marker, lang, body in readme_blocks(text) if marker == "readme-test"]


def help_blocks(text: str) -> dict[str, str]:
    out = {}
    for marker, _, body in readme_blocks(text):
        if marker.startswith("help:"):
            out[marker.split(":", 1)[1].strip()] = body
    return out


def cli_env() -> dict[str, str]:
    """Environment with the venv's bin first on PATH and the checkout importable."""
    env = dict(os.environ)
    bin_dir = str(Path(sys.executable).parent)
    env["PATH"] = bin_dir + os.pathsep + env.get("PATH", "")
    env["PYTHONPATH"] = str(ROOT) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env["COLUMNS"] = HELP_COLUMNS
    env["MPLBACKEND"] = "Agg"
    # The blocks' models are tiny: one intra-op thread is faster (and far faster on a busy machine).
    env.setdefault("OMP_NUM_THREADS", "1")
    return env


def ensure_cli(env: dict[str, str], shim_dir: Path) -> None:
    """Put an ``illia-export`` on PATH: the installed entry point, else a shim to the checkout."""
    installed = Path(sys.executable).parent / "illia-export"
    if installed.exists():
        return
    shim_dir.mkdir(parents=True, exist_ok=True)
    shim = shim_dir / "illia-export"
    shim.write_text(f'#!/bin/sh\nexec {shlex.quote(sys.executable)} -m illia_export.cli "$@"\n')
    shim.chmod(0o755)
    env["PATH"] = str(shim_dir) + os.pathsep + env["PATH"]


def real_help(command: str) -> str:
    env = cli_env()
    result = subprocess.run(
        [sys.executable, "-m", "illia_export.cli", command, "--help"],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout.replace("usage: __main__.py", "usage: illia-export")


def test_readme_has_tested_python_and_bash_blocks():
    blocks = marked_blocks(README.read_text())
    languages = [lang for lang, _ in blocks]
    assert "python" in languages and "bash" in languages, languages
    # Every illia-export subcommand appears in a tested block.
    commands = "\n".join(body for lang, body in blocks if lang == "bash")
    for sub in ("inspect", "predict", "evaluate"):
        assert f"illia-export {sub} " in commands, sub
    assert re.search(r"^illia-export \S+\.pt --format", commands, re.MULTILINE), "no export command"


def test_readme_blocks_run(tmp_path):
    pytest.importorskip("sklearn")
    pytest.importorskip("onnxruntime")
    env = cli_env()
    ensure_cli(env, tmp_path / "_bin")
    work = tmp_path / "work"
    work.mkdir()
    for i, (lang, body) in enumerate(marked_blocks(README.read_text())):
        if lang == "python":
            cmd = [sys.executable, "-c", body]
        elif lang == "bash":
            cmd = ["bash", "-euo", "pipefail", "-c", body]
        else:
            pytest.fail(
                f"README block {i} is marked readme-test but its language {lang!r} is not python/bash"
            )
        result = subprocess.run(cmd, cwd=work, env=env, capture_output=True, text=True, timeout=600)
        assert result.returncode == 0, (
            f"README block {i} ({lang}) failed with exit {result.returncode}:\n{body}\n"
            f"--- stdout ---\n{result.stdout[-3000:]}\n--- stderr ---\n{result.stderr[-3000:]}"
        )
    # The blocks did what they say: artifacts and the CLI's outputs exist.
    for name in ("mlp.onnx", "mlp.pt", "mlp_cli.onnx", "x.npy", "y.npy", "pred.npz"):
        assert (work / name).is_file(), name


@pytest.mark.parametrize("command", ["export", "inspect", "predict", "evaluate", "serve", "freeze"])
def test_readme_cli_reference_matches_help(command):
    blocks = help_blocks(README.read_text())
    assert command in blocks, f"README has no '<!-- help: {command} -->' block"
    assert blocks[command].strip() == real_help(command).strip(), (
        f"README's help for '{command}' is out of date: run `python tests/test_readme.py --update`"
    )


def test_setup_commands_exist_and_ci_runs_the_test_command():
    text = README.read_text()
    for script in ("scripts/demo.sh", "scripts/test.sh", "scripts/setup-venv.sh"):
        path = ROOT / script
        assert path.is_file(), script
        assert os.access(path, os.X_OK), f"{script} is not executable"
    assert "bash scripts/demo.sh" in text and "bash scripts/test.sh" in text
    for script in ("scripts/demo.sh", "scripts/test.sh"):
        assert "scripts/setup-venv.sh" in (ROOT / script).read_text(), f"{script} does not set up .venv"
    assert "examples/digits_uncertainty.py" in (ROOT / "scripts/demo.sh").read_text()
    ci = ROOT / ".ci" / "run"
    assert ci.is_file() and os.access(ci, os.X_OK)
    ci_commands = [
        line.strip() for line in ci.read_text().splitlines() if line.strip() and not line.startswith("#")
    ]
    assert "bash scripts/test.sh" in ci_commands


def test_readme_links_exist():
    text = README.read_text()
    for target in re.findall(r"\]\(([^)#]+)\)", text):
        if "://" in target:
            continue
        assert (ROOT / target).exists(), f"README links to missing {target}"


def update_readme() -> None:
    """Rewrite the README's ``<!-- help: COMMAND -->`` blocks from the real ``--help`` output."""
    text = README.read_text()

    def replace(match: re.Match) -> str:
        marker = match["marker"]
        if not marker.startswith("help:"):
            return match.group(0)
        command = marker.split(":", 1)[1].strip()
        return f"<!-- {marker} -->\n```text\n{real_help(command).rstrip()}\n```"

    README.write_text(_BLOCK.sub(replace, text))


if __name__ == "__main__":
    if sys.argv[1:] == ["--update"]:
        update_readme()
        print(f"updated {README}")
    else:
        sys.exit(f"usage: {sys.argv[0]} --update")
