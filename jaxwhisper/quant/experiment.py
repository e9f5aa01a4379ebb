"""`run_quantization(cfg, model_spec, workdir)`: calibrate once, evaluate the float model and
each configured quantization on the test sets, write results and a table shaped like the
paper's Table 2 (rows: model and precision; columns: test sets; WER %).
"""

from __future__ import annotations

import dataclasses
import json
import logging
from pathlib import Path

import jax

from jaxwhisper.evaluate import evaluate_model, load_eval_set, markdown_table
from jaxwhisper.models.weights import LoadedModel
from jaxwhisper.quant.calibrate import calibrate_on_audio, load_ranges, load_smoothing, save_ranges
from jaxwhisper.quant.config import preset

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class QuantRunConfig:
    """Attributes:
    quantizations: preset names (`jaxwhisper.quant.config.PRESETS`), each evaluated.
    test: data specs of the test sets.
    calibration: data spec of the calibration clips (never a test set).
    calibration_batches: batches of `batch_size` clips (paper: 16).
    batch_size: rows per decoding call.
    max_examples: cap per test set (0: all).
    """

    quantizations: tuple = ("w8a8",)
    test: tuple = ()
    calibration: str = ""
    calibration_batches: int = 16
    batch_size: int = 8
    max_examples: int = 0

    def __post_init__(self):
        for q in self.quantizations:
            preset(q)  # unknown names fail here, before any work
        if not self.test:
            raise ValueError("test is empty: name at least one test data spec")
        if not self.calibration:
            raise ValueError("calibration is empty: name the calibration data spec")
        if self.calibration in self.test:
            raise ValueError(f"calibration set {self.calibration!r} is also a test set")


def run_quantization(cfg: QuantRunConfig, model: LoadedModel, workdir: Path) -> dict:
    """Writes `workdir/{float,NAME}/results.json` (+ hypotheses), `workdir/ranges/*.json`,
    `workdir/results.json` (all) and `workdir/table.md`. Returns {label: results}."""
    workdir = Path(workdir)
    pi, pc = jax.process_index(), jax.process_count()
    sets = [load_eval_set(s, cfg.max_examples, pi, pc) for s in cfg.test]
    calib_clips: list = []
    ranges_by_key: dict = {}

    def ranges_for(qcfg):
        # Presets that differ only in bits, granularity or exclusions share one calibration;
        # another estimator (or momentum, or what the MSE search quantizes to) needs its own.
        # SmoothQuant changes the model whose ranges are taken.
        mse = qcfg.estimator == "mse"
        key = (
            f"{qcfg.estimator}-m{qcfg.momentum}"
            + (f"-p{qcfg.percentile}" if qcfg.estimator == "percentile" else "")
            + (f"-a{qcfg.act_bits}{'s' if qcfg.act_symmetric else ''}" if mse else "")
            + (f"-smooth{qcfg.smooth_alpha}" if qcfg.smoothquant else "")
        )
        if key in ranges_by_key:
            return ranges_by_key[key]
        path = workdir / "ranges" / f"{key}.json"
        if path.exists():
            log.info("reusing calibrated ranges from %s", path)
            calibration = load_ranges(path), load_smoothing(path)
        else:
            if not calib_clips:
                calib_clips.extend(
                    load_eval_set(cfg.calibration, cfg.calibration_batches * cfg.batch_size).clips
                )
            calibration = calibrate_on_audio(model, calib_clips, qcfg, cfg.batch_size)
            if pi == 0:
                meta = {"model": model.source, "calibration": cfg.calibration, "clips": len(calib_clips),
                        "batches": cfg.calibration_batches, "estimator": key}  # fmt: skip
                save_ranges(calibration[0], path, meta, calibration[1])
        ranges_by_key[key] = calibration
        return calibration

    results = {"float": evaluate_model(model, sets, workdir / "float" / "results.json", cfg.batch_size)}
    for name in cfg.quantizations:
        qcfg = dataclasses.replace(preset(name), calibration_batches=cfg.calibration_batches)
        ranges, smoothing = ranges_for(qcfg) if qcfg.act_bits else (None, None)
        results[name] = evaluate_model(
            model, sets, workdir / name / "results.json", cfg.batch_size, qcfg=qcfg, ranges=ranges,
            smoothing=smoothing,
        )  # fmt: skip
    if pi == 0:
        (workdir / "results.json").write_text(json.dumps(results, indent=2) + "\n")
        table = markdown_table({label: r["datasets"] for label, r in results.items()})
        (workdir / "table.md").write_text(f"WER (%) of {model.source}\n\n{table}\n")
    return results
