"""Sharded, batched greedy evaluation: WER per dataset, hypotheses on disk, a Markdown table.

Each process reads and decodes every `process_count`-th utterance of each set (rows are
sharded over its local devices by the Transcriber); error counts are summed over processes,
so the WER is the corpus WER of the whole set. Unreadable audio and rows without a
reference are skipped, logged and counted (`skipped` in the results), never silently lost.
"""

from __future__ import annotations

import json
import logging
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import jax
import numpy as np

from jaxwhisper.data.audio import AudioError
from jaxwhisper.data.pipeline import decode_audio_field
from jaxwhisper.data.sources import parse_spec
from jaxwhisper.metrics import word_error_rate

log = logging.getLogger(__name__)


@dataclass
class EvalSet:
    """This process's share of one evaluation set, decoded to 16 kHz mono."""

    name: str
    spec: str
    ids: list = field(default_factory=list)
    references: list = field(default_factory=list)
    clips: list = field(default_factory=list)
    skipped: Counter = field(default_factory=Counter)

    @property
    def audio_s(self) -> float:
        return float(sum(c.shape[0] for c in self.clips)) / 16000


def load_eval_set(
    spec: str, max_examples: int = 0, process_index: int = 0, process_count: int = 1
) -> EvalSet:
    """Reads the utterances `i` of `spec` with `i % process_count == process_index`.

    Args:
      max_examples: the first N utterances of the set (0: all), before sharding.
    """
    src = parse_spec(spec)
    out = EvalSet(name=src.name, spec=spec)
    for i, row in enumerate(src):
        if max_examples and i >= max_examples:
            break
        if i % process_count != process_index:
            continue
        if row.error or row.drop:
            out.skipped["bad_row" if row.error else "text_rule"] += 1
            log.warning("%s: skipped (%s)", row.origin, row.error or row.drop)
            continue
        if not row.text:
            out.skipped["no_reference"] += 1
            log.warning("%s: skipped (no reference transcript)", row.origin)
            continue
        try:
            clip = decode_audio_field(row.audio, row.origin)
        except AudioError as e:
            out.skipped["bad_audio"] += 1
            log.warning("skipped: %s", e)
            continue
        out.ids.append(row.id)
        out.references.append(row.text)
        out.clips.append(clip)
    return out


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
    skipped = [data.skipped[k] for k in ("bad_row", "text_rule", "no_reference", "bad_audio")]
    totals = _sum_over_processes(np.array([*local, data.audio_s, wall, *skipped], np.float64))
    counts = dict(zip(COUNT_KEYS, (int(x) for x in totals[: len(COUNT_KEYS)])))
    errors = counts["substitutions"] + counts["deletions"] + counts["insertions"]
    result = {
        "wer": 100.0 * errors / max(counts["words"], 1),
        **counts,
        # ms: the cross-process sum travels as float32 (JAX runs without x64), so more
        # digits would differ between 1 and N processes.
        "audio_s": round(float(totals[5]), 3),
        "wall_s": float(totals[6]),
        "skipped": dict(zip(("bad_row", "text_rule", "no_reference", "bad_audio"), map(int, totals[7:]))),
    }
    if hypotheses_path is not None:
        hypotheses_path.parent.mkdir(parents=True, exist_ok=True)
        with open(hypotheses_path, "w") as f:
            for i, ref, hyp in zip(data.ids, data.references, hyps):
                f.write(json.dumps({"id": i, "reference": ref, "hypothesis": hyp}) + "\n")
    return result


def hypotheses_file(output: Path, name: str) -> Path:
    suffix = "" if jax.process_count() == 1 else f"-{jax.process_index()}-of-{jax.process_count()}"
    return output.parent / f"{output.stem}.hypotheses" / f"{name}{suffix}.jsonl"


def markdown_table(rows: dict[str, dict]) -> str:
    """rows: {label: results.json's "datasets" mapping} -> WER (%) table, one column per set."""
    names = sorted({n for datasets in rows.values() for n in datasets})
    lines = ["| model | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
    for label, datasets in rows.items():
        cells = [f"{datasets[n]['wer']:.2f}" if n in datasets else "-" for n in names]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def evaluate_model(
    model,
    sets: list[EvalSet],
    output: Path,
    batch_size: int = 16,
    qcfg=None,
    ranges=None,
    devices=None,
    smoothing=None,
) -> dict:
    """Evaluates `model` (float, or fake-quantized by `qcfg` with calibrated `ranges`, and
    first smoothed by the SmoothQuant scales `smoothing` when qcfg says so) on `sets`; writes
    `output` (results.json) and the hypotheses beside it (process 0 writes the JSON; every
    process its hypotheses). Returns the results."""
    from jaxwhisper.models.weights import LoadedModel
    from jaxwhisper.transcribe import Transcriber

    intercept = None
    if qcfg is not None:
        from jaxwhisper.quant import fakequant

        params = model.params
        if qcfg.smoothquant:
            from jaxwhisper.quant import smoothquant

            if smoothing is None:
                raise ValueError(f"{qcfg.name} needs the SmoothQuant scales from its calibration")
            params = smoothquant.apply_smoothing(model.config, params, smoothing)
        model = LoadedModel(
            model.config, fakequant.quantize_params(params, qcfg), model.tokenizer_dir, model.source
        )
        if qcfg.act_bits and ranges is None:
            raise ValueError("activation quantization needs calibrated ranges")
        if 2 <= qcfg.act_bits <= 8 and 2 <= qcfg.weight_bits <= 8:
            # Dense layers in the integer domain: real int8, or its exact float emulation.
            from jaxwhisper.quant import int8

            kernels = int8.int8_kernels(params, qcfg)
            intercept = lambda: int8.integer_dense_interceptor(  # noqa: E731
                kernels, ranges, qcfg, model.config, real=qcfg.real_int8
            )
        elif qcfg.act_bits:
            intercept = lambda: fakequant.activation_interceptor(ranges, qcfg, model.config)  # noqa: E731
    transcriber = Transcriber(model, batch_size=batch_size, intercept=intercept, devices=devices)
    results = {
        "model": model.source,
        "quantization": None if qcfg is None else {"name": qcfg.name, **qcfg.to_dict()},
        "datasets": {},
    }
    for data in sets:
        results["datasets"][data.name] = evaluate_set(transcriber, data, hypotheses_file(output, data.name))
    if jax.process_index() == 0:
        output.parent.mkdir(parents=True, exist_ok=True)
        output.write_text(json.dumps(results, indent=2) + "\n")
    return results
