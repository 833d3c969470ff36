#!/usr/bin/env bash
# Creates (or refreshes) the project's virtual environment in .venv and prints its python.
#   scripts/setup_env.sh            runtime dependencies
#   scripts/setup_env.sh dev        + test dependencies
#   WITH_TORCH=1 scripts/setup_env.sh dev   + torch (CPU), for the live PyTorch comparisons
#                                           and the benchmark
# Re-running is cheap: pip is only called when the requirement files changed.
set -euo pipefail
cd "$(dirname "$0")/.."
kind=${1:-run}
python=${PYTHON:-python3}
if ! "$python" -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
  echo "lstm-jax needs Python >= 3.11 (found $("$python" --version 2>&1)); set PYTHON=..." >&2
  exit 1
fi
[ -x .venv/bin/python ] || "$python" -m venv .venv >&2
req=requirements.txt; [ "$kind" = dev ] && req=requirements-dev.txt
torch_spec=""; [ "${WITH_TORCH:-0}" = 1 ] && torch_spec="torch==2.13.0"  # the CPU wheel this project is tested with
stamp=".venv/.installed-$kind${torch_spec:+-torch}"
digest=$(cat requirements*.txt | sha256sum | cut -d' ' -f1)
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$digest" ]; then
  .venv/bin/python -m pip install -q --upgrade pip >&2
  .venv/bin/python -m pip install -q -r "$req" $torch_spec >&2
  echo "$digest" > "$stamp"
fi
echo "$PWD/.venv/bin/python"
