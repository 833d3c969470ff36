#!/usr/bin/env bash
# Open MPI: N processes (add --hostfile for several machines) running experiments.main.
#
#   NUM_PROCESSES=2 launch/mpirun.sh --config=configs/NAME.py --workdir=DIR [--config.KEY=VALUE ...]
#
# Reads NUM_PROCESSES (default 2), PYTHON (default .venv/bin/python), MPIRUN_ARGS (extra
# mpirun flags, e.g. "--hostfile hosts --mca btl_tcp_if_include eth0"). jax.distributed
# detects Open MPI by itself from OMPI_* variables. As root, Open MPI needs the two
# OMPI_ALLOW_RUN_AS_ROOT variables, set here.
set -euo pipefail
cd "$(dirname "$0")/.."
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
# shellcheck disable=SC2086
exec mpirun -np "${NUM_PROCESSES:-2}" ${MPIRUN_ARGS:-} \
  "${PYTHON:-.venv/bin/python}" -m experiments.main --config.parallelism.distributed=auto "$@"
