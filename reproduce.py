"""The paper's pipeline in one command: flags -> config -> `jaxwhisper.jobs.reproduce`.

    python reproduce.py --config configs/paper_cpu.py --workdir runs/demo [--config.key=value ...]

Distils students with and without gated attention, quantizes teacher and students, measures
outliers and writes WORKDIR/report.md. Resumes a stopped run from what it finds in WORKDIR.
"""

import logging

from jaxwhisper import entry
from jaxwhisper.config import PipelineConfig
from jaxwhisper.jobs import reproduce

entry.define_flags("pipeline config file", "output directory (resumed when it holds results)")


def run(cfg: PipelineConfig, workdir):
    print(f"report: {reproduce(cfg, workdir)}")


if __name__ == "__main__":
    # Stage progress goes to stderr; library INFO logs would drown it.
    entry.main(PipelineConfig, run, log_level=logging.WARNING)
