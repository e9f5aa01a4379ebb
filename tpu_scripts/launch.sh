#!/usr/bin/env bash
# Runs the same command on every host of the slice, in the background, each host logging to
# ~/jaxwhisper/logs/$RUN.log (JAX multi-host SPMD: one process per host; pass --distributed
# to the entry point so that it joins the others; TPU slices are auto-detected).
# Usage: RUN=lv2_8x2_gated tpu_scripts/launch.sh python train.py --distributed \
#          --config configs/distill_large_v2.py:encoder_layers=8,gate=shared --workdir gs://BUCKET/runs/lv2_8x2_gated
# Then:  RUN=lv2_8x2_gated tpu_scripts/logs.sh     (follow worker 0)
set -euo pipefail
source "$(dirname "$0")/common.sh"
[ $# -gt 0 ] || { echo "usage: RUN=NAME $0 COMMAND..." >&2; exit 2; }
: "${RUN:=run}"
cmd=$(printf '%q ' "$@")
gcloud compute tpus tpu-vm ssh "$TPU_NAME" --zone="$ZONE" --worker=all --command="
  cd jaxwhisper && mkdir -p logs && source .venv/bin/activate &&
  nohup $cmd > logs/$RUN.log 2>&1 < /dev/null & echo \"\$(hostname): started, logs/$RUN.log\""
