"""The paper's pipeline end to end, at whatever scale the config says (`reproduce.py`):

  1. the training corpus (the offline demo corpus, built when missing);
  2. the teacher: float and quantized WER on the test sets, outlier statistics;
  3. per gate setting (the paper: without and with gated attention): distil a student from
     the teacher, then the same quantization and outlier analysis on it;
  4. `report.md`: the runs, Table 1, Table 2 and the figures (`jaxwhisper.analysis.report`).

Every stage writes into its run directory and is skipped when its output exists, so an
interrupted pipeline resumes where it stopped (training itself resumes from its checkpoints).
"""

from __future__ import annotations

import logging
import sys
import time
from pathlib import Path

from jaxwhisper.analysis import outliers
from jaxwhisper.analysis.report import build_report
from jaxwhisper.config import PipelineConfig
from jaxwhisper.data.demo_corpus import build_demo_corpus, is_built
from jaxwhisper.models.weights.resolve import resolve_model
from jaxwhisper.quant.experiment import run_quantization
from jaxwhisper.train.encoder_cache import EncoderCache
from jaxwhisper.train.loop import EXPORT, train_and_evaluate

log = logging.getLogger(__name__)


def _stage(name: str):
    print(f"\n== {name}", file=sys.stderr, flush=True)
    return time.perf_counter()


def _done(t0: float, what: str):
    print(f"   {what} ({time.perf_counter() - t0:.0f} s)", file=sys.stderr, flush=True)


def _analyse(model, cfg: PipelineConfig, run_dir: Path) -> None:
    if (run_dir / "quant" / "results.json").exists():
        print(f"   {run_dir}/quant: done before, kept", file=sys.stderr)
    else:
        t0 = _stage(f"{run_dir.name}: quantization ({', '.join(cfg.quant.quantizations)}) and evaluation")
        results = run_quantization(cfg.quant, model, run_dir / "quant")
        rows = (
            f"{label} "
            + " ".join(
                "n/a" if d["wer"] is None else f"{d['wer']:.2f}" for _, d in sorted(r["datasets"].items())
            )
            for label, r in results.items()
        )
        _done(t0, "WER %: " + "; ".join(rows))
    if (run_dir / "outliers" / "outliers.json").exists():
        print(f"   {run_dir}/outliers: done before, kept", file=sys.stderr)
    else:
        t0 = _stage(f"{run_dir.name}: outlier statistics")
        o = cfg.outliers
        r = outliers.run(model, o.data, run_dir / "outliers", o.batch_size, o.max_examples, o.include_padding)
        s = r["summary"]
        _done(t0, f"avg. kurtosis {s['avg_kurtosis']:.1f}, max. inf. norm {s['max_inf_norm']:.2f}")


def reproduce(cfg: PipelineConfig, workdir: Path) -> Path:
    """Runs the pipeline into `workdir`; returns the report's path."""
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    if cfg.corpus and not is_built(Path(cfg.corpus), cfg.tts_sentences, cfg.tts_augment):
        t0 = _stage(f"training corpus -> {cfg.corpus}")
        sizes = build_demo_corpus(Path(cfg.corpus), tts_sentences=cfg.tts_sentences, augment=cfg.tts_augment)
        clips = f"{sizes['prompts']} real + {sizes['tts']} synthesized clips"
        _done(t0, f"{clips} ({sizes['train_s'] / 60:.1f} min)")

    teacher_dir = workdir / "teacher"
    _analyse(resolve_model(cfg.train.teacher), cfg, teacher_dir)
    runs = [teacher_dir]
    # The students share the teacher and its data: a frozen encoder's outputs are computed once.
    encoder_cache = EncoderCache(cfg.train.encoder_cache_mb) if cfg.train.encoder_cache_mb else None
    for name, train in cfg.students():
        run_dir = workdir / name
        if not (run_dir / EXPORT).exists():
            t0 = _stage(f"{run_dir.name}: distillation from {train.teacher}, {train.total_steps} steps")
            last = train_and_evaluate(train, run_dir, shared_encoder_cache=encoder_cache)
            _done(t0, f"final loss {last.get('train/loss', float('nan')):.3f}")
        _analyse(resolve_model(str(run_dir / EXPORT)), cfg, run_dir)
        runs.append(run_dir)
    report = workdir / "report.md"
    build_report(runs, report)
    print(f"\npipeline finished in {(time.perf_counter() - start) / 60:.1f} min", file=sys.stderr)
    return report
