"""The `jaxwhisper` subcommands: each checks its arguments, calls the library and prints.

Each imports its library when it runs, so that `jaxwhisper --help` answers without loading
JAX, and checks its outputs and inputs before a model is loaded (data/preflight.py,
evaluation/checks.py), so a refused argument costs well under a second. A refused argument
is a `CliError` (exit status 2 in `cli.main`).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path


class CliError(Exception):
    """A user-facing failure: printed as one line, exit status 2."""


def _checked(check, *args, **kwargs):
    """`check(*args, **kwargs)`, its ValueError turned into a CliError (refused arguments)."""
    try:
        return check(*args, **kwargs)
    except ValueError as e:
        raise CliError(str(e)) from None


def load_model(spec: str, **overrides):
    """`resolve_model(spec, **overrides)`; a model that is not there is a CliError."""
    from jaxwhisper.models.weights.base import ModelFormatError, ModelNotFoundError
    from jaxwhisper.models.weights.resolve import resolve_model

    try:
        return resolve_model(spec, **overrides)
    except (ModelNotFoundError, ModelFormatError, FileNotFoundError) as e:
        raise CliError(str(e)) from None


COMPUTE_DTYPES = ("float32", "bfloat16")


def _check_dtype(dtype: str) -> None:
    # Checked here rather than by argparse `choices`, whose refusal is the whole usage text.
    if dtype not in COMPUTE_DTYPES:
        raise CliError(f"--dtype {dtype!r}: unknown compute dtype; choose {' or '.join(COMPUTE_DTYPES)}")


def cmd_transcribe(args) -> int:
    from jaxwhisper.data.preflight import check_output_file

    _check_dtype(args.dtype)
    # Before JAX is imported: a refused output costs a fraction of a second. An output
    # without a suffix may be the folder of per-input subtitle files (checked below).
    if args.output and Path(args.output).suffix:
        _checked(check_output_file, args.output, args.inputs, "--output")

    from tqdm import tqdm

    from jaxwhisper.evaluation.wer import word_error_rate
    from jaxwhisper.inference.fallback import FALLBACK_TEMPERATURES
    from jaxwhisper.inference.inputs import InputError, read_inputs
    from jaxwhisper.inference.outputs import (
        OutputError,
        TranscriptWriter,
        check_transcript_output,
        open_output,
    )
    from jaxwhisper.inference.subtitles import output_format
    from jaxwhisper.inference.transcribe import Transcriber

    try:
        utterances = read_inputs(args.inputs)
    except InputError as e:
        raise CliError(str(e)) from None
    if not utterances:
        raise CliError("no inputs: give audio files or .jsonl manifests")
    fmt = output_format(args.format, args.output)
    subtitle_dir = _checked(check_transcript_output, fmt, args.output, [u.audio for u in utterances])
    model = load_model(args.model, dtype=args.dtype)
    transcriber = Transcriber(
        model,
        batch_size=args.batch_size,
        padding=args.padding,
        language=args.language,
        long_form=args.long_form,
        timestamps=args.timestamps or fmt != "jsonl",
        no_speech_threshold=args.no_speech_threshold,
        log_prob_threshold=args.log_prob_threshold,
        compression_ratio_threshold=args.compression_ratio_threshold,
        temperatures=FALLBACK_TEMPERATURES if args.temperature_fallback else (0.0,),
    )
    out = sys.stdout if subtitle_dir is not None or not args.output else _checked(open_output, args.output)
    writer = TranscriptWriter(fmt, out, subtitle_dir)
    audio_s, failed, refs, hyps = 0.0, [], [], []
    start = time.perf_counter()
    bar = tqdm(total=len(utterances), unit="clip", desc="transcribe", file=sys.stderr, dynamic_ncols=True)
    try:
        for u, rec in zip(utterances, transcriber.transcribe(utterances, on_result=lambda _: bar.update())):
            audio_s += rec.pop("duration_s", 0.0)
            if rec.get("error"):
                failed.append(rec)
                tqdm.write(f"error: {rec['error']}", file=sys.stderr)
            elif u.text is not None:
                refs.append(u.text)
                hyps.append(rec["text"])
            writer.write(rec)
    except OutputError as e:
        raise CliError(str(e)) from None
    finally:
        bar.close()
        if out is not sys.stdout:
            out.close()
    wall = time.perf_counter() - start
    ok = len(utterances) - len(failed)
    print(
        f"transcribed {ok}/{len(utterances)} inputs, {audio_s:.1f} s of audio in {wall:.1f} s: "
        f"{audio_s / wall:.2f} audio-s per s (includes compilation)",
        file=sys.stderr,
    )
    w = word_error_rate(refs, hyps) if refs else None
    if w is not None and not w.utterances:
        print(f"WER n/a: all {len(refs)} references are empty once normalized", file=sys.stderr)
    elif w is not None:
        print(
            f"WER {w.wer:.2f}% on {w.utterances} utterances with references ({w.words} words; "
            f"S={w.substitutions} D={w.deletions} I={w.insertions})"
            + (
                f"; {w.skipped_empty_refs} with empty normalized references skipped"
                if w.skipped_empty_refs
                else ""
            ),
            file=sys.stderr,
        )
    if failed:
        print(f"{len(failed)} inputs failed:", file=sys.stderr)
        for rec in failed:
            print(f"  {rec['error']}", file=sys.stderr)
        return 1
    return 0


def cmd_pseudo_label(args) -> int:
    from jaxwhisper.data.preflight import check_labelling

    _check_dtype(args.dtype)
    source = _checked(check_labelling, args.data, Path(args.output))

    import jax
    from tqdm import tqdm

    from jaxwhisper.data.examples import process_share
    from jaxwhisper.data.labels import labels_path
    from jaxwhisper.inference.pseudo_label import pseudo_label
    from jaxwhisper.inference.transcribe import Transcriber

    p, n = jax.process_index(), jax.process_count()
    model = load_model(args.model, dtype=args.dtype)
    transcriber = Transcriber(model, batch_size=args.batch_size)
    total = None if source.streaming else process_share(len(source), p, n)
    bar = tqdm(total=total, unit="clip", desc="pseudo-label", file=sys.stderr, dynamic_ncols=True)
    try:
        stats = pseudo_label(transcriber, source, Path(args.output), p, n, on_row=lambda _: bar.update())
    finally:
        bar.close()
    wer = "n/a" if stats["wer"] is None else f"{stats['wer']:.2f}%"
    print(
        f"{labels_path(Path(args.output), p, n)}: {stats['labelled']} labelled, "
        f"{stats['skipped_existing']} already there, {stats['errors']} errors; pseudo-label WER {wer}",
        file=sys.stderr,
    )
    return 1 if stats["errors"] else 0


def cmd_demo_corpus(args) -> int:
    from jaxwhisper.data.demo_corpus import build_demo_corpus
    from jaxwhisper.data.preflight import check_output_dir

    _checked(check_output_dir, args.output, (), "--output")
    try:
        sizes = build_demo_corpus(Path(args.output), tts_sentences=args.tts_sentences, augment=args.augment)
    except RuntimeError as e:
        raise CliError(str(e)) from None
    print(
        f"{args.output}: train.jsonl {sizes['train']} clips ({sizes['train_s'] / 60:.1f} min: "
        f"prompts.jsonl {sizes['prompts']} real, tts.jsonl {sizes['tts']} synthesized), "
        f"eval.jsonl {sizes['eval']} clips",
        file=sys.stderr,
    )
    return 0


def cmd_convert(args) -> int:
    from jaxwhisper.data.preflight import check_output_dir

    _checked(check_output_dir, args.dst, [args.src] if Path(args.src).exists() else [], "destination")
    import jax

    from jaxwhisper.models.weights.native import save_checkpoint

    model = load_model(args.src)
    save_checkpoint(model, Path(args.dst))
    n = sum(int(v.size) for v in jax.tree.leaves(model.params))
    print(f"wrote {args.dst} ({n / 1e6:.1f}M params, from {model.source})", file=sys.stderr)
    return 0


def cmd_evaluate(args) -> int:
    from jaxwhisper.evaluation.checks import plan_evaluation

    output = Path(args.output)
    plan = _checked(
        plan_evaluation,
        args.data,
        output,
        args.quantize,
        args.calibration,
        args.calibration_batches,
        args.ranges,
    )

    import jax

    from jaxwhisper.data.eval_sets import load_eval_set
    from jaxwhisper.evaluation.evaluate import evaluate_model, unscored_sets
    from jaxwhisper.evaluation.tables import markdown_table
    from jaxwhisper.quant.ptq import prepare_calibration, quantize_model

    model = load_model(args.model)
    qcfg = plan.quant

    def calibration_clips() -> list:
        calib = load_eval_set(args.calibration, args.calibration_batches * args.batch_size)
        print(f"calibrating on {len(calib.clips)} clips of {args.calibration}", file=sys.stderr)
        return calib.clips

    try:
        pi, pc = jax.process_index(), jax.process_count()
        sets = [
            load_eval_set(spec, args.max_examples, pi, pc, src) for spec, src in zip(args.data, plan.sources)
        ]
        if qcfg is not None:
            calibration = prepare_calibration(
                model, qcfg, calibration_clips, args.batch_size, plan.ranges, reuse=plan.reuse_ranges,
                meta={"calibration": args.calibration},
            )  # fmt: skip
            model = quantize_model(model, qcfg, calibration)
    except ValueError as e:  # a bad data spec, an unreadable --ranges file or one without scales
        raise CliError(str(e)) from None
    results = evaluate_model(model, sets, output, args.batch_size, fallback=args.temperature_fallback)
    label = results["model"] + (f" {qcfg.name}" if qcfg else "")
    print(markdown_table({label: results["datasets"]}))
    for name, r in results["datasets"].items():
        print(
            f"{name}: {r['utterances']} utterances, {r['words']} words, S/D/I {r['substitutions']}/"
            f"{r['deletions']}/{r['insertions']}, {r['audio_s']:.0f} s audio in {r['wall_s']:.1f} s, "
            f"skipped {sum(r['skipped'].values())}",
            file=sys.stderr,
        )
    print(f"wrote {output}", file=sys.stderr)
    unscored = unscored_sets(results)
    for name in unscored:
        print(f"{name}: no scored utterance, WER n/a (see skipped)", file=sys.stderr)
    return 1 if unscored else 0


def cmd_outliers(args) -> int:
    from jaxwhisper.data.examples import DataSpecError
    from jaxwhisper.data.preflight import check_output_dir, spec_files
    from jaxwhisper.data.sources import parse_spec

    _checked(parse_spec, args.data)
    _checked(check_output_dir, args.output, spec_files(args.data), "--output")
    from jaxwhisper.analysis import outliers

    model = load_model(args.model)
    try:
        result = outliers.run(
            model, args.data, Path(args.output), args.batch_size, args.max_examples, args.include_padding,
            args.layer, args.head, args.utterance,
        )  # fmt: skip
    except (DataSpecError, ValueError) as e:
        raise CliError(str(e)) from None
    print(outliers.markdown_table({model.source: result}))
    print(f"wrote {args.output}/outliers.json, table.md and figures", file=sys.stderr)
    return 0


def cmd_report(args) -> int:
    from jaxwhisper.data.preflight import check_output_file

    _checked(check_output_file, args.output, (), "--output")
    from jaxwhisper.analysis.report import ReportError, build_report

    try:
        build_report([Path(r) for r in args.runs], Path(args.output))
    except ReportError as e:
        raise CliError(str(e)) from None
    print(f"report: {args.output}", file=sys.stderr)
    return 0
