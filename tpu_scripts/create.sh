#!/usr/bin/env bash
# Creates a TPU VM slice (all hosts). Usage: REPO_URL=... tpu_scripts/create.sh
set -euo pipefail
source "$(dirname "$0")/common.sh"
gcloud compute tpus tpu-vm create "$TPU_NAME" --zone="$ZONE" \
  --accelerator-type="$ACCELERATOR_TYPE" --version="$RUNTIME_VERSION"
