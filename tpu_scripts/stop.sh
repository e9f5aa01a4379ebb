#!/usr/bin/env bash
# Stops a launched run on every worker with SIGTERM: training saves a checkpoint and exits,
# and the same launch command resumes it later.
# Usage: tpu_scripts/stop.sh
set -euo pipefail
source "$(dirname "$0")/common.sh"
gcloud compute tpus tpu-vm ssh "$TPU_NAME" --zone="$ZONE" --worker=all \
  --command="pkill -TERM -f 'train.py|quantize.py|reproduce.py|jaxwhisper ' || true"
