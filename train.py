"""Distillation entry point: flags -> config -> `train_and_evaluate`.

    python train.py --config configs/NAME.py[:ARGS] --workdir DIR [--config.key=value ...]

This file is intentionally short; the logic lives in jaxwhisper/train/. Unknown config keys
(in the file or in overrides) are errors.
"""

import logging

from absl import app, flags
from absl import logging as absl_logging
from ml_collections import config_flags

from jaxwhisper.config import train_config_from_dict
from jaxwhisper.train.loop import train_and_evaluate

config_flags.DEFINE_config_file("config", None, "experiment config file", lock_config=True)
flags.DEFINE_string("workdir", None, "run directory (resumed when it holds checkpoints)")
flags.DEFINE_bool(
    "distributed",
    False,
    "join a multi-host cluster first (jaxwhisper/distributed.py: TPU pods, SLURM and "
    "Open MPI auto-detect; else JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES, JAX_PROCESS_ID)",
)
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
    del argv
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    absl_logging.set_verbosity(absl_logging.WARNING)  # orbax logs every file operation at INFO
    if flags.FLAGS.distributed:
        from jaxwhisper import distributed

        distributed.initialize()
    cfg = train_config_from_dict(flags.FLAGS.config.to_dict())
    train_and_evaluate(cfg, flags.FLAGS.workdir)


if __name__ == "__main__":
    app.run(main)
