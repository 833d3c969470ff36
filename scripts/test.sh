#!/usr/bin/env bash
# The README's test command: set up .venv with the test dependencies, then run pytest.
# WITH_TORCH=1 also installs torch (CPU) for the live PyTorch comparisons; without it those
# tests are skipped and the committed torch fixture is still checked. Extra arguments go to
# pytest, e.g. scripts/test.sh tests/test_core_cells.py -k peephole.
set -euo pipefail
cd "$(dirname "$0")/.."
python=$(scripts/setup_env.sh dev)
exec "$python" -m pytest -q -n "${TEST_WORKERS:-2}" "$@"
