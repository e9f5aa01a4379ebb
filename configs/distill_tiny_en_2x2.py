"""Distil tiny.en into a 2+2 student with shared gated attention, on CPU.

    python train.py --config configs/distill_tiny_en_2x2.py --workdir runs/tiny_en_2x2
    python train.py --config configs/distill_tiny_en_2x2.py:gate=none --workdir runs/tiny_en_2x2_nogate

Trains on the demo corpus (`jaxwhisper demo-corpus --output runs/demo/corpus` first) and
validates on the vendored real speech. About 7 s per step of 8 clips on 2 CPU cores.
"""

import ml_collections


def get_config(arg: str = "") -> ml_collections.ConfigDict:
    opts = dict(kv.split("=", 1) for kv in arg.split(",") if kv)
    if set(opts) - {"gate"}:
        raise ValueError(f"unknown config argument(s) {sorted(set(opts) - {'gate'})}; known: gate")
    c = ml_collections.ConfigDict()
    c.teacher = "tiny.en"
    c.student = ml_collections.ConfigDict(
        {
            "encoder_layers": 2,
            "decoder_layers": 2,
            "layer_map": "paper",
            "gate": opts.get("gate", "shared"),
            "dtype": "float32",
        }
    )
    c.data = ml_collections.ConfigDict(
        {
            "train": ("runs/demo/corpus/train.jsonl",),
            "weights": (),
            "eval": ("data/fixture/manifest.jsonl",),
            "max_label_len": 96,
            "max_audio_s": 30.0,
            "max_drop_fraction": 0.2,
            "seed": 0,
            "max_eval_examples": 0,
        }
    )
    c.optimizer = ml_collections.ConfigDict(
        {
            "learning_rate": 1e-4,
            "warmup_steps": 20,
            "b1": 0.9,
            "b2": 0.999,
            "eps": 1e-8,
            "weight_decay": 0.0,
            "clip_norm": 1.0,
            "accumulation_steps": 1,
        }
    )
    c.loss = ml_collections.ConfigDict({"temperature": 2.0, "ce_weight": 0.8, "kl_weight": 1.0})
    c.global_batch = 8
    c.total_steps = 300
    c.mesh_fsdp = 1
    c.eval_every_steps = 50
    c.checkpoint_every_steps = 50
    c.log_every_steps = 5
    c.keep_best = 2
    c.eval_batch_size = 16
    c.seed = 0
    return c
