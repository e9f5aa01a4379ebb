"""Sharded, batched evaluation: WER per dataset, hypotheses on disk, a Markdown table.

Decoding is greedy, or greedy with faster-whisper's temperature fallback (`fallback=True`:
a transcript that is too repetitive or too unlikely is sampled again at higher
temperatures, see `jaxwhisper.inference.fallback`), applied alike to every model.

Each process reads and decodes every `process_count`-th utterance of each set (rows are
sharded over its local devices by the Transcriber); error counts are summed over processes,
so the WER is the corpus WER of the whole set. Unreadable audio and rows without a
reference are skipped, logged and counted (`skipped` in the results), never silently lost.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Optional, Union

import jax
import numpy as np

from jaxwhisper.data.eval_sets import SKIP_REASONS, EvalSet
from jaxwhisper.evaluation.checks import hypotheses_dir
from jaxwhisper.evaluation.wer import word_error_rate
from jaxwhisper.inference.fallback import FALLBACK_TEMPERATURES
from jaxwhisper.inference.transcribe import Transcriber
from jaxwhisper.models.weights.base import LoadedModel
from jaxwhisper.quant.ptq import QuantizedModel

log = logging.getLogger(__name__)


def _sum_over_processes(values: np.ndarray) -> np.ndarray:
    if jax.process_count() == 1:
        return values
    from jax.experimental import multihost_utils

    return np.asarray(multihost_utils.process_allgather(values)).sum(0)


COUNT_KEYS = ("substitutions", "deletions", "insertions", "words", "utterances")


def evaluate_set(transcriber, data: EvalSet, hypotheses_path: Optional[Path] = None) -> dict:
    """Decodes one set; returns its results (summed over processes) and writes this
    process's hypotheses as JSONL `{"id", "reference", "hypothesis"}`."""
    t0 = time.perf_counter()
    hyps = transcriber.transcribe_arrays(data.clips) if data.clips else []
    wall = time.perf_counter() - t0
    w = word_error_rate(data.references, hyps) if hyps else None
    local = [getattr(w, k) if w else 0 for k in COUNT_KEYS]
    skipped = [data.skipped[k] for k in SKIP_REASONS]
    totals = _sum_over_processes(np.array([*local, data.audio_s, wall, *skipped], np.float64))
    counts = dict(zip(COUNT_KEYS, (int(x) for x in totals[: len(COUNT_KEYS)])))
    errors = counts["substitutions"] + counts["deletions"] + counts["insertions"]
    result = {
        # No scored word: the WER is undefined, not 0 (a set whose every row was skipped
        # would otherwise look perfect).
        "wer": 100.0 * errors / counts["words"] if counts["words"] else None,
        **counts,
        # ms: the cross-process sum travels as float32 (JAX runs without x64), so more
        # digits would differ between 1 and N processes.
        "audio_s": round(float(totals[5]), 3),
        "wall_s": float(totals[6]),
        "skipped": dict(zip(SKIP_REASONS, map(int, totals[7:]))),
    }
    if hypotheses_path is not None:
        hypotheses_path.parent.mkdir(parents=True, exist_ok=True)
        with open(hypotheses_path, "w") as f:
            for i, ref, hyp in zip(data.ids, data.references, hyps):
                f.write(json.dumps({"id": i, "reference": ref, "hypothesis": hyp}) + "\n")
    return result


def unscored_sets(results: dict) -> list[str]:
    """Names of the sets of `results` without a single scored word (their `wer` is None)."""
    return [name for name, r in results["datasets"].items() if r["wer"] is None]


def hypotheses_file(output: Path, name: str) -> Path:
    suffix = "" if jax.process_count() == 1 else f"-{jax.process_index()}-of-{jax.process_count()}"
    return hypotheses_dir(output) / f"{name}{suffix}.jsonl"


def evaluate_model(
    model: Union[LoadedModel, QuantizedModel],
    sets: list[EvalSet],
    output: Path,
    batch_size: int = 16,
    devices: Optional[list] = None,
    fallback: bool = False,
) -> dict:
    """Evaluates `model` (float, or quantized by `jaxwhisper.quant.ptq.quantize_model`) on
    `sets`; writes `output` (results.json) and the hypotheses beside it (process 0 writes the
    JSON; every process its hypotheses). Returns the results.

    `fallback` decodes with faster-whisper's temperature fallback (temperatures 0-1 by 0.2,
    best of 5, its thresholds) instead of greedily."""
    quantized = model if isinstance(model, QuantizedModel) else None
    if quantized is not None:
        model = quantized.model
    intercept, state = (quantized.intercept, quantized.state) if quantized else (None, None)
    transcriber = Transcriber(
        model,
        batch_size=batch_size,
        intercept=intercept,
        intercept_state=state,
        devices=devices,
        temperatures=FALLBACK_TEMPERATURES if fallback else (0.0,),
    )
    results = {
        "model": model.source,
        "quantization": quantized.describe() if quantized else None,
        "decoding": "temperature fallback" if fallback else "greedy",
        "datasets": {},
    }
    for data in sets:
        results["datasets"][data.name] = evaluate_set(transcriber, data, hypotheses_file(output, data.name))
    if jax.process_index() == 0:
        output.parent.mkdir(parents=True, exist_ok=True)
        output.write_text(json.dumps(results, indent=2) + "\n")
    return results
