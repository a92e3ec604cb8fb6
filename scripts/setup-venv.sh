#!/usr/bin/env bash
# Create .venv under the repository and install illia-export with every extra the demo and the
# tests need. Idempotent: a second run only checks that everything is installed.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
    "$PY" -m venv .venv
fi
stamp=.venv/.illia-installed
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
    .venv/bin/python -m pip install --quiet --upgrade pip
    # torch is pinned to the CPU wheel (torch==2.13.0) in pyproject's extras.
    .venv/bin/python -m pip install --quiet -e '.[dev]'
    touch "$stamp"
fi
