#!/usr/bin/env bash
# The paper on a TPU slice, one command: for each student (8/16/24 encoder layers, with and
# without gated attention) distil from large-v2, then quantize (W8A8) and evaluate on the
# test sets, then the outlier statistics; runs one after another on all workers.
# Usage: BUCKET=gs://my-bucket RUN=paper tpu_scripts/paper.sh   (then tpu_scripts/logs.sh)
set -euo pipefail
source "$(dirname "$0")/common.sh"
: "${BUCKET:?set BUCKET=gs://... for checkpoints and results}"
: "${LAYERS:=8 16 24}"
: "${GATES:=shared none}"
: "${TEST:=librispeech@test.clean?config=clean}"
steps=()
for l in $LAYERS; do
  for g in $GATES; do
    w="$BUCKET/runs/lv2_${l}x2_$g"
    steps+=("python train.py --distributed --config configs/distill_large_v2.py:encoder_layers=$l,gate=$g --workdir $w")
    steps+=("jaxwhisper --distributed evaluate --model $w/export --data '$TEST' --quantize w8a8 --calibration 'librispeech@validation.clean?config=all' --output $w/w8a8.json")
    steps+=("jaxwhisper --distributed evaluate --model $w/export --data '$TEST' --output $w/float.json")
  done
done
script=$(printf '%s && ' "${steps[@]}")
RUN="${RUN:-paper}" "$(dirname "$0")/launch.sh" bash -c "${script% && }"
