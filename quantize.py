"""Post-training quantization entry point: flags -> config -> `run_quantization`.

    python quantize.py --config configs/quant_int8.py --model SPEC --workdir DIR [--config.key=value ...]

Calibrates the float model, evaluates float and every configured quantization on the test
sets, and writes DIR/results.json, DIR/table.md and DIR/ranges/*.json (reused on a rerun).
"""

import logging
from pathlib import Path

from absl import app, flags
from ml_collections import config_flags

config_flags.DEFINE_config_file("config", None, "quantization config file", lock_config=True)
flags.DEFINE_string("model", "tiny.en", "model spec: tiny.en, base, a checkpoint directory or a hub id")
flags.DEFINE_string("workdir", None, "output directory")
flags.DEFINE_bool("distributed", False, "join a multi-host cluster first (see jaxwhisper/distributed.py)")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
    del argv
    if flags.FLAGS.distributed:
        from jaxwhisper import distributed

        distributed.initialize()
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    from jaxwhisper.config import build_dataclass
    from jaxwhisper.models.weights import resolve_model
    from jaxwhisper.quant.experiment import QuantRunConfig, run_quantization

    cfg = build_dataclass(QuantRunConfig, flags.FLAGS.config.to_dict())
    workdir = Path(flags.FLAGS.workdir)
    run_quantization(cfg, resolve_model(flags.FLAGS.model), workdir)
    print((workdir / "table.md").read_text())
    print(f"results: {workdir / 'results.json'}")


if __name__ == "__main__":
    app.run(main)
