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
# setup.py builds the compiled noise kernel (illia_export/runtime/_noisekernel.cpp, in place for
# an editable install): a change to either means reinstalling.
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ] || [ setup.py -nt "$stamp" ] \
    || [ illia_export/runtime/_noisekernel.cpp -nt "$stamp" ] || [ requirements/foreign.txt -nt "$stamp" ]; then
    # torch is pinned to the CPU wheel (torch==2.13.0) in pyproject's extras. Some machines'
    # pip configuration names local index folders that do not exist: drop that chatter only.
    quiet_pip() {
        .venv/bin/python -m pip "$@" 2> >(grep -v "^WARNING: Location 'file://" >&2)
    }
    quiet_pip install --quiet --upgrade pip
    quiet_pip install --quiet -e '.[dev]'
    # Foreign Bayesian libraries for the export tests, without their torchvision requirement
    # (see requirements/foreign.txt).
    quiet_pip install --quiet --no-deps -r requirements/foreign.txt
    touch "$stamp"
fi
