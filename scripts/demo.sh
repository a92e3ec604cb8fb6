#!/usr/bin/env bash
# The README's main command: set up .venv, then run the end-to-end demo (train a Bayesian CNN on
# scikit-learn digits, export it, run Monte Carlo inference with uncertainty from the artifact).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup-venv.sh
exec .venv/bin/python examples/digits_uncertainty.py "$@"
