"""Post-training quantization entry point: flags -> config -> `run_quantization`.

    python quantize.py --config configs/quant_int8.py --model SPEC --workdir DIR [--config.key=value ...]

Calibrates the float model, evaluates float and every configured quantization on the test
sets, and writes DIR/results.json, DIR/table.md and DIR/ranges/*.json (reused on a rerun).
"""

import logging

from absl import flags

from jaxwhisper import entry
from jaxwhisper.config import QuantRunConfig
from jaxwhisper.models.weights.resolve import resolve_model
from jaxwhisper.quant.experiment import results_table, run_quantization

entry.define_flags("quantization config file", "output directory")
flags.DEFINE_string("model", "tiny.en", "model spec: tiny.en, base, a checkpoint directory or a hub id")


def run(cfg: QuantRunConfig, workdir):
    model = resolve_model(flags.FLAGS.model)
    results = run_quantization(cfg, model, workdir)
    print(results_table(results, model.source))
    print(f"results: {workdir / 'results.json'}")


if __name__ == "__main__":
    entry.main(QuantRunConfig, run, log_level=logging.INFO)
