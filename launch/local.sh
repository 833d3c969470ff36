#!/usr/bin/env bash
# Several processes on this machine, as one multi-process JAX job (development and tests).
#
#   NUM_PROCESSES=2 DEVICES_PER_PROCESS=2 launch/local.sh --config=configs/synthetic.py --workdir=DIR
#
# Reads NUM_PROCESSES (default 2), DEVICES_PER_PROCESS (CPU devices each, default 1),
# PORT (coordinator port, default: a free one), PYTHON (default .venv/bin/python).
# Sets, per process, the variables the harness reads with parallelism.distributed='auto':
# JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES, JAX_PROCESS_ID. Process i logs to
# DIR/logs/process_i.log (DIR from --workdir). If any process fails, the others are stopped
# and the script exits with that status.
set -euo pipefail
cd "$(dirname "$0")/.."
n=${NUM_PROCESSES:-2}
python=${PYTHON:-.venv/bin/python}
port=${PORT:-$("$python" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')}
workdir=""
for arg in "$@"; do case "$arg" in --workdir=*) workdir=${arg#--workdir=} ;; esac; done
logdir=${workdir:-.}/logs
mkdir -p "$logdir"

pids=()
cleanup() { kill "${pids[@]}" 2>/dev/null || true; }
trap cleanup EXIT
trap 'cleanup; exit 143' TERM INT
for ((i = 0; i < n; i++)); do
  JAX_COORDINATOR_ADDRESS=127.0.0.1:$port JAX_COORDINATOR_BIND_ADDRESS=127.0.0.1:$port \
  JAX_NUM_PROCESSES=$n JAX_PROCESS_ID=$i JAX_NUM_CPU_DEVICES=${DEVICES_PER_PROCESS:-1} \
    "$python" -m experiments.main --config.parallelism.distributed=auto "$@" \
    > "$logdir/process_$i.log" 2>&1 &
  pids+=($!)
done
status=0
# Wait for the first process to end; a failure stops the group at once.
while [ ${#pids[@]} -gt 0 ]; do
  set +e; wait -n -p done_pid "${pids[@]}"; rc=$?; set -e
  pids=("${pids[@]/$done_pid}"); pids=(${pids[@]})
  if [ "$rc" -ne 0 ]; then
    echo "process with PID $done_pid exited with status $rc; stopping the others (logs: $logdir)" >&2
    status=$rc; cleanup; break
  fi
done
wait 2>/dev/null || true
exit $status
