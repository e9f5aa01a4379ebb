"""`run_quantization(cfg, model, workdir)`: calibrate once per calibration key, evaluate the
float model and each configured quantization on the test sets, write results and a table
shaped like the paper's Table 2 (rows: model and precision; columns: test sets; WER %).
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import jax

from jaxwhisper.config import QuantRunConfig
from jaxwhisper.data.eval_sets import load_eval_set
from jaxwhisper.evaluation.checks import check_evaluation
from jaxwhisper.evaluation.evaluate import evaluate_model, unscored_sets
from jaxwhisper.evaluation.tables import markdown_table
from jaxwhisper.models.weights.base import LoadedModel
from jaxwhisper.quant.calibrate import calibration_key
from jaxwhisper.quant.config import preset
from jaxwhisper.quant.ptq import prepare_calibration, quantize_model

FALLBACK_SUFFIX = "+fallback"  # the label of a model's evaluation with the temperature fallback


def results_table(results: dict, source: str) -> str:
    """`table.md` of `run_quantization`'s results."""
    return f"WER (%) of {source}\n\n" + markdown_table({label: r["datasets"] for label, r in results.items()})


def run_quantization(cfg: QuantRunConfig, model: LoadedModel, workdir: Path) -> dict:
    """Writes `workdir/{float,NAME}/results.json` (+ hypotheses), `workdir/ranges/KEY.json`
    (reused on a rerun), `workdir/results.json` (all) and `workdir/table.md`.

    Returns:
      {label: results} with label "float" and each preset name, each followed by
      "LABEL+fallback" (its evaluation with the temperature fallback) when `cfg.fallback`.

    Raises:
      ValueError: before any decoding, a bad test or calibration spec, duplicate ids, an
        unwritable workdir; after writing the results, a test set without a scored utterance.
    """
    workdir = Path(workdir)
    pi, pc = jax.process_index(), jax.process_count()
    qcfgs = {
        n: dataclasses.replace(preset(n), calibration_batches=cfg.calibration_batches)
        for n in cfg.quantizations
    }
    calibrates = any(
        q.act_bits and not (workdir / "ranges" / f"{calibration_key(q)}.json").exists()
        for q in qcfgs.values()
    )
    # Every input and output checked before the float model's evaluation, not after it.
    sources = check_evaluation(
        list(cfg.test), workdir / "float" / "results.json", cfg.calibration if calibrates else None
    )
    sets = [load_eval_set(s, cfg.max_examples, pi, pc, src) for s, src in zip(cfg.test, sources)]
    calib_clips: list = []

    def load_clips() -> list:
        if not calib_clips:  # read once, only when some preset needs a new calibration
            calib_clips.extend(load_eval_set(cfg.calibration, cfg.calibration_batches * cfg.batch_size).clips)
        return calib_clips

    results: dict = {}

    def evaluate(label: str, m) -> None:
        results[label] = evaluate_model(m, sets, workdir / label / "results.json", cfg.batch_size)
        if cfg.fallback:
            label = f"{label}{FALLBACK_SUFFIX}"
            results[label] = evaluate_model(
                m, sets, workdir / label / "results.json", cfg.batch_size, fallback=True
            )

    evaluate("float", model)
    calibrations: dict = {}
    for name, qcfg in qcfgs.items():
        key = calibration_key(qcfg)
        if qcfg.act_bits and key not in calibrations:
            meta = {"calibration": cfg.calibration, "batches": cfg.calibration_batches}
            calibrations[key] = prepare_calibration(
                model, qcfg, load_clips, cfg.batch_size, workdir / "ranges" / f"{key}.json", meta=meta
            )
        quantized = quantize_model(model, qcfg, calibrations.get(key) if qcfg.act_bits else None)
        evaluate(name, quantized)
    if pi == 0:
        (workdir / "results.json").write_text(json.dumps(results, indent=2) + "\n")
        (workdir / "table.md").write_text(results_table(results, model.source) + "\n")
    unscored = sorted({s for r in results.values() for s in unscored_sets(r)})
    if unscored:
        raise ValueError(f"{', '.join(unscored)}: no scored utterance, WER n/a (results in {workdir})")
    return results
