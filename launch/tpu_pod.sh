#!/usr/bin/env bash
# Cloud TPU VM pod: the same command on every worker of the slice.
#
#   TPU_NAME=my-v4-32 ZONE=us-central2-b launch/tpu_pod.sh --config=configs/NAME.py --workdir=gs://bucket/run
#
# Reads TPU_NAME, ZONE, PROJECT (optional), REPO_DIR (checkout on the workers, default
# ~/lstm-jax). Set up each worker once with
#   gcloud compute tpus tpu-vm ssh $TPU_NAME --zone $ZONE --worker=all --command \
#     "git clone <this repo> ~/lstm-jax && cd ~/lstm-jax && scripts/setup_env.sh && .venv/bin/pip install 'jax[tpu]>=0.10.2,<0.11'"
# jax.distributed detects the TPU slice by itself. The workdir must be shared (gs:// works
# with Orbax).
set -euo pipefail
: "${TPU_NAME:?}" "${ZONE:?}"
repo=${REPO_DIR:-~/lstm-jax}
args=$(printf ' %q' "$@")
exec gcloud compute tpus tpu-vm ssh "$TPU_NAME" --zone "$ZONE" ${PROJECT:+--project "$PROJECT"} \
  --worker=all --command "cd $repo && .venv/bin/python -m experiments.main --config.parallelism.distributed=auto$args"
