#!/usr/bin/env bash
# Clones the repository and installs jaxwhisper with JAX for TPU on every host of the slice.
set -euo pipefail
source "$(dirname "$0")/common.sh"
gcloud compute tpus tpu-vm ssh "$TPU_NAME" --zone="$ZONE" --worker=all --command="
  set -e
  if [ ! -d jaxwhisper ]; then git clone '$REPO_URL' jaxwhisper; fi
  cd jaxwhisper && git fetch -q && git checkout -q '$REPO_REF' && git pull -q || true
  python3 -m venv .venv && .venv/bin/pip install -q --upgrade pip
  .venv/bin/pip install -q -e . 'jax[tpu]' -f https://storage.googleapis.com/jax-releases/libtpu_releases.html
  .venv/bin/python -c 'import jax; print(jax.process_index(), jax.device_count())'
"
