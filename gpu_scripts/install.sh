#!/usr/bin/env bash
# A virtual environment with jaxwhisper and JAX for CUDA 12 GPUs (run on every node).
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m venv .venv
.venv/bin/pip install -q --upgrade pip
.venv/bin/pip install -q -e . 'jax[cuda12]'
.venv/bin/python -c 'import jax; print(jax.devices())'
