#!/usr/bin/env bash
# Follows the log of a launched run on one worker (default 0; progress bars print there).
# Usage: RUN=NAME [WORKER=3] tpu_scripts/logs.sh
set -euo pipefail
source "$(dirname "$0")/common.sh"
: "${RUN:=run}"
: "${WORKER:=0}"
gcloud compute tpus tpu-vm ssh "$TPU_NAME" --zone="$ZONE" --worker="$WORKER" \
  --command="tail -n 100 -F jaxwhisper/logs/$RUN.log"
