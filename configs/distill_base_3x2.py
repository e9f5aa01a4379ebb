"""Distil the multilingual `base` teacher (bundled CTranslate2 weights) into 3+2 students.

    python train.py --config configs/distill_base_3x2.py --workdir runs/base_3x2
    python train.py --config configs/distill_base_3x2.py:gate=none --workdir runs/base_3x2_nogate

The CPU-sized analogue of the paper's 8-of-32 student (every second of base's 6 encoder
layers; decoder layers 0 and 5). Same demo corpus and validation set as the tiny.en config;
about twice its step time.
"""

import ml_collections

from configs import distill_tiny_en_2x2


def get_config(arg: str = "") -> ml_collections.ConfigDict:
    opts = dict(kv.split("=", 1) for kv in arg.split(",") if kv)
    if set(opts) - {"gate"}:
        raise ValueError(f"unknown config argument(s) {sorted(set(opts) - {'gate'})}; known: gate")
    c = distill_tiny_en_2x2.get_config(f"gate={opts.get('gate', 'shared')}")
    c.teacher = "base"
    c.student.encoder_layers = 3
    c.student.decoder_layers = 2
    return c
