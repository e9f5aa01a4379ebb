"""The paper's pipeline in one command: flags -> config -> `jaxwhisper.reproduce.reproduce`.

    python reproduce.py --config configs/paper_cpu.py --workdir runs/demo [--config.key=value ...]

Distils students with and without gated attention, quantizes teacher and students, measures
outliers and writes WORKDIR/report.md. Resumes a stopped run from what it finds in WORKDIR.
"""

import logging
from pathlib import Path

from absl import app, flags
from absl import logging as absl_logging
from ml_collections import config_flags

config_flags.DEFINE_config_file("config", None, "pipeline config file", lock_config=True)
flags.DEFINE_string("workdir", None, "output directory (resumed when it holds results)")
flags.DEFINE_bool("distributed", False, "join a multi-host cluster first (see jaxwhisper/distributed.py)")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
    del argv
    if flags.FLAGS.distributed:
        from jaxwhisper import distributed

        distributed.initialize()
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    absl_logging.set_verbosity(absl_logging.WARNING)
    from jaxwhisper.config import build_dataclass
    from jaxwhisper.reproduce import ReproduceConfig, reproduce

    cfg = build_dataclass(ReproduceConfig, flags.FLAGS.config.to_dict())
    report = reproduce(cfg, Path(flags.FLAGS.workdir))
    print(f"report: {report}")


if __name__ == "__main__":
    app.run(main)
