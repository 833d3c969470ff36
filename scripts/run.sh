#!/usr/bin/env bash
# The README's main command: set up .venv if needed, then train and evaluate the default
# experiment (probabilistic LSTM forecaster on vic_elec against its baselines; ~2 minutes
# on 2 CPU cores) and print its results table. Extra arguments go to experiments.main,
# e.g. --config.total_steps=100; CONFIG and WORKDIR pick another experiment and folder.
set -euo pipefail
cd "$(dirname "$0")/.."
python=$(scripts/setup_env.sh run)
exec "$python" -m experiments.main --config="${CONFIG:-configs/forecasting.py:vic_elec}" \
  --workdir="${WORKDIR:-workdirs/forecasting_vic_elec}" "$@"
