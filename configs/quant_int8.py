"""Post-training quantization of a (distilled) model: the paper's W8A8 and its variants.

    python quantize.py --config configs/quant_int8.py --model tiny.en --workdir runs/quant_tiny_en
    python quantize.py --config configs/quant_int8.py --model runs/tiny_en_2x2/export --workdir ...

Calibrates on real speech that is not a test set (the Asterisk prompts vendored in
data/demo/prompts), then evaluates float and each preset on the vendored real speech of
data/fixture.
"""

from pathlib import Path

import ml_collections

REPO = Path(__file__).resolve().parent.parent
PROMPTS = REPO / "data" / "demo" / "prompts" / "manifest.jsonl"


def get_config(arg: str = "") -> ml_collections.ConfigDict:
    if arg:
        raise ValueError(f"unknown config argument {arg!r}: quant_int8.py takes none")
    c = ml_collections.ConfigDict()
    c.quantizations = (
        "w8a8",
        "w8a8-real-int8",
        "w8a8-no-exclusion",
        "w8a8-per-channel",
        "w8a8-per-channel-real-int8",
        "w8a8-smoothquant",
        "w8a8-per-channel-smoothquant",
        "w8a8-percentile",
        "w8a8-mse",
        "w8a16",
        "w4a8-per-channel",
    )
    c.test = (str(REPO / "data/fixture/manifest.jsonl"),)
    c.calibration = str(PROMPTS)
    c.calibration_batches = 16
    c.batch_size = 8
    c.max_examples = 0
    c.fallback = False  # True adds each model's WER with the temperature fallback
    return c
