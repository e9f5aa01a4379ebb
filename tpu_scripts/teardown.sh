#!/usr/bin/env bash
# Deletes the TPU VM slice.
set -euo pipefail
source "$(dirname "$0")/common.sh"
gcloud compute tpus tpu-vm delete "$TPU_NAME" --zone="$ZONE" --quiet
