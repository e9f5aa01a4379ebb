#!/usr/bin/env bash
# Runs the same command on every host (JAX multi-host SPMD: each host runs one process;
# jax.distributed.initialize() discovers the others on a TPU slice).
# Usage: tpu_scripts/launch.sh python train.py --config configs/NAME.py --workdir gs://BUCKET/run
set -euo pipefail
source "$(dirname "$0")/common.sh"
[ $# -gt 0 ] || { echo "usage: $0 COMMAND..." >&2; exit 2; }
cmd=$(printf '%q ' "$@")
gcloud compute tpus tpu-vm ssh "$TPU_NAME" --zone="$ZONE" --worker=all \
  --command="cd jaxwhisper && source .venv/bin/activate && $cmd"
