#!/usr/bin/env bash
# The README's main command: set up .venv if needed, then train and evaluate the default
# experiment. Extra arguments go to experiments.main, e.g. --config.total_steps=100.
set -euo pipefail
cd "$(dirname "$0")/.."
python=$(scripts/setup_env.sh run)
exec "$python" -m experiments.main --config=configs/synthetic.py \
  --workdir="${WORKDIR:-workdirs/synthetic}" "$@"
