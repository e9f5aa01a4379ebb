"""Distillation entry point: flags -> config -> `train_and_evaluate`.

    python train.py --config configs/NAME.py[:ARGS] --workdir DIR [--config.key=value ...]

This file is intentionally short; the logic lives in jaxwhisper/train/. Unknown config keys
(in the file or in overrides) are errors.
"""

import logging

from jaxwhisper import entry
from jaxwhisper.config import TrainConfig
from jaxwhisper.train.loop import train_and_evaluate

entry.define_flags("distillation config file", "run directory (resumed when it holds checkpoints)")

if __name__ == "__main__":
    entry.main(TrainConfig, train_and_evaluate, log_level=logging.INFO)
