"""`jaxwhisper` command line: transcribe, evaluate, outliers, report, pseudo-label, demo-corpus, convert.

Subcommands only parse flags, call the library and print. Each imports its library when it
runs, so that `jaxwhisper --help` answers without loading JAX. Errors are one line on stderr
naming the input and the cause, with a non-zero exit status: 2 for arguments refused before
any work (checked before a model is loaded: outputs, data specs, ids), 1 for inputs that
failed while running (`JAXWHISPER_TRACEBACK=1` shows the traceback of a ValueError/OSError).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

log = logging.getLogger("jaxwhisper")


class CliError(Exception):
    """A user-facing failure: printed as one line, exit status 2."""


def _checked(check, *args, **kwargs):
    """`check(*args, **kwargs)`, its ValueError turned into a CliError (refused arguments)."""
    try:
        return check(*args, **kwargs)
    except ValueError as e:
        raise CliError(str(e)) from None


def _load_model(spec: str, **overrides):
    from jaxwhisper.models.weights.base import ModelFormatError, ModelNotFoundError
    from jaxwhisper.models.weights.resolve import resolve_model

    try:
        return resolve_model(spec, **overrides)
    except (ModelNotFoundError, ModelFormatError, FileNotFoundError) as e:
        raise CliError(str(e)) from None


def _open_output(path: str):
    try:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        return open(path, "w")
    except OSError as e:
        raise CliError(f"{path}: cannot write output ({e.strerror})") from None


COMPUTE_DTYPES = ("float32", "bfloat16")


def _check_dtype(dtype: str) -> None:
    # Checked here rather than by argparse `choices`, whose refusal is the whole usage text.
    if dtype not in COMPUTE_DTYPES:
        raise CliError(f"--dtype {dtype!r}: unknown compute dtype; choose {' or '.join(COMPUTE_DTYPES)}")


def _optional_float(text: str):
    if text.lower() == "none":
        return None
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number or 'none', got {text!r}") from None


def cmd_transcribe(args) -> int:
    from jaxwhisper.data.preflight import check_output_dir, check_output_file

    _check_dtype(args.dtype)
    # Before JAX is imported: a refused output costs a fraction of a second. An output
    # without a suffix may be the folder of per-input subtitle files (checked below).
    if args.output and Path(args.output).suffix:
        _checked(check_output_file, args.output, args.inputs, "--output")

    from tqdm import tqdm

    from jaxwhisper.evaluation.wer import word_error_rate
    from jaxwhisper.inference.subtitles import output_format, subtitle_text
    from jaxwhisper.inference.transcribe import InputError, Transcriber, read_inputs

    try:
        utterances = read_inputs(args.inputs)
    except InputError as e:
        raise CliError(str(e)) from None
    if not utterances:
        raise CliError("no inputs: give audio files or .jsonl manifests")
    fmt = output_format(args.format, args.output)
    # Subtitles of several inputs go to one file each, in the --output directory.
    subtitle_dir = None
    if fmt != "jsonl" and len(utterances) > 1:
        if args.output is None or Path(args.output).suffix:
            raise CliError(
                f"{len(utterances)} inputs: give --output a directory for one .{fmt} file per input"
            )
        subtitle_dir = Path(args.output)
        _checked(check_output_dir, subtitle_dir, [u.audio for u in utterances], "--output")
    elif args.output:
        _checked(check_output_file, args.output, [u.audio for u in utterances], "--output")
    model = _load_model(args.model, dtype=args.dtype)
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
    )
    out = sys.stdout if subtitle_dir is not None or not args.output else _open_output(args.output)
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
            if fmt == "jsonl":
                out.write(json.dumps(rec, ensure_ascii=False) + "\n")
            elif subtitle_dir is None:
                out.write(subtitle_text(rec.get("segments") or [], fmt))
            elif not rec.get("error"):
                with _open_output(str(subtitle_dir / f"{rec['id']}.{fmt}")) as f:
                    f.write(subtitle_text(rec["segments"], fmt))
            out.flush()
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

    from jaxwhisper.data.labels import labels_path
    from jaxwhisper.data.sources import process_share
    from jaxwhisper.inference.pseudo_label import pseudo_label
    from jaxwhisper.inference.transcribe import Transcriber

    p, n = jax.process_index(), jax.process_count()
    model = _load_model(args.model, dtype=args.dtype)
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
        sizes = build_demo_corpus(Path(args.output), tts_sentences=args.tts_sentences)
    except RuntimeError as e:
        raise CliError(str(e)) from None
    print(
        f"{args.output}: train.jsonl {sizes['train']} clips ({sizes['train_s'] / 60:.1f} min), "
        f"eval.jsonl {sizes['eval']} clips",
        file=sys.stderr,
    )
    return 0


def cmd_convert(args) -> int:
    from jaxwhisper.data.preflight import check_output_dir

    _checked(check_output_dir, args.dst, [args.src] if Path(args.src).exists() else [], "destination")
    from jaxwhisper.models.weights.native import save_checkpoint

    model = _load_model(args.src)
    save_checkpoint(model, Path(args.dst))
    n = sum(int(v.size) for v in __import__("jax").tree.leaves(model.params))
    print(f"wrote {args.dst} ({n / 1e6:.1f}M params, from {model.source})", file=sys.stderr)
    return 0


def cmd_evaluate(args) -> int:
    import dataclasses

    from jaxwhisper.evaluation.checks import check_evaluation
    from jaxwhisper.quant.config import preset

    output = Path(args.output)
    qcfg = None
    if args.quantize:
        try:
            qcfg = dataclasses.replace(preset(args.quantize), calibration_batches=args.calibration_batches)
        except ValueError as e:
            raise CliError(str(e)) from None
        if qcfg.act_bits and not args.ranges:
            if not args.calibration:
                raise CliError(
                    f"--quantize {args.quantize} quantizes activations: "
                    "give --calibration SPEC or --ranges FILE"
                )
            if args.calibration in args.data:
                raise CliError(f"--calibration {args.calibration} is also an evaluation set")
    calibrates = qcfg is not None and bool(qcfg.act_bits) and not args.ranges
    sources = _checked(
        check_evaluation, args.data, output, args.calibration if calibrates else None,
        Path(args.ranges) if qcfg is not None and args.ranges else None,
        output.with_suffix(".ranges.json") if calibrates else None,
    )  # fmt: skip

    import jax

    from jaxwhisper.data.eval_sets import load_eval_set
    from jaxwhisper.evaluation.evaluate import evaluate_model, unscored_sets
    from jaxwhisper.evaluation.tables import markdown_table
    from jaxwhisper.quant.ptq import prepare_calibration, quantize_model

    model = _load_model(args.model)

    def calibration_clips() -> list:
        calib = load_eval_set(args.calibration, args.calibration_batches * args.batch_size)
        print(f"calibrating on {len(calib.clips)} clips of {args.calibration}", file=sys.stderr)
        return calib.clips

    try:
        pi, pc = jax.process_index(), jax.process_count()
        sets = [load_eval_set(spec, args.max_examples, pi, pc, src) for spec, src in zip(args.data, sources)]
        if qcfg is not None:
            path = Path(args.ranges) if args.ranges else output.with_suffix(".ranges.json")
            calibration = prepare_calibration(
                model, qcfg, calibration_clips, args.batch_size, path, reuse=bool(args.ranges),
                meta={"calibration": args.calibration},
            )  # fmt: skip
            model = quantize_model(model, qcfg, calibration)
    except ValueError as e:  # a bad data spec, an unreadable --ranges file or one without scales
        raise CliError(str(e)) from None
    results = evaluate_model(model, sets, output, args.batch_size)
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
    from jaxwhisper.data.preflight import check_output_dir, spec_files
    from jaxwhisper.data.sources import DataSpecError, parse_spec

    _checked(parse_spec, args.data)
    _checked(check_output_dir, args.output, spec_files(args.data), "--output")
    from jaxwhisper.analysis import outliers

    model = _load_model(args.model)
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


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="jaxwhisper", description=__doc__.splitlines()[0])
    p.add_argument("-v", "--verbose", action="store_true", help="log at INFO level")
    p.add_argument(
        "--distributed",
        action="store_true",
        help="join a multi-host cluster first (jaxwhisper/distributed.py); every host runs the same command",
    )
    sub = p.add_subparsers(dest="command", required=True)

    t = sub.add_parser("transcribe", help="transcribe audio files and/or .jsonl manifests")
    t.add_argument("inputs", nargs="+", metavar="INPUT", help="audio file or manifest (.jsonl)")
    t.add_argument("--model", default="tiny.en", help="tiny.en, base, a local path or a hub id")
    t.add_argument("--batch-size", type=int, default=16)
    t.add_argument("--output", help="JSONL output (default: stdout)")
    t.add_argument("--language", default="en", help="language of multilingual models")
    t.add_argument(
        "--dtype",
        default="float32",
        help="compute dtype: float32 or bfloat16 (bf16 matmuls with float32 accumulation; "
        "LayerNorm, softmax and logits in float32)",
    )
    t.add_argument(
        "--padding",
        default="log_mel",
        choices=["log_mel", "audio"],
        help="pad the 30 s window in the log-mel domain (faster-whisper) or the audio (transformers)",
    )
    t.add_argument(
        "--long-form",
        default="sequential",
        choices=["sequential", "windows"],
        help="recordings over 30 s: seek by timestamps (faster-whisper's default) or "
        "consecutive 30 s windows without timestamps (its without_timestamps=True)",
    )
    t.add_argument("--timestamps", action="store_true", help="segments with start/end (s) in each record")
    t.add_argument(
        "--format",
        choices=["jsonl", "srt", "vtt"],
        help="output format (default: by --output suffix, else jsonl)",
    )
    t.add_argument(
        "--no-speech-threshold", type=_optional_float, default=0.6, help="'none' turns the skip off"
    )
    t.add_argument("--log-prob-threshold", type=_optional_float, default=-1.0)
    t.add_argument("--compression-ratio-threshold", type=_optional_float, default=2.4)
    t.set_defaults(func=cmd_transcribe)

    pl = sub.add_parser("pseudo-label", help="write the teacher's greedy transcripts of a data spec")
    pl.add_argument("--model", default="tiny.en", help="teacher: tiny.en, base, a path or a hub id")
    pl.add_argument("--data", required=True, help="data spec (see jaxwhisper/data/sources.py)")
    pl.add_argument("--output", required=True, help="output directory (resumed if it exists)")
    pl.add_argument("--batch-size", type=int, default=16)
    pl.add_argument("--dtype", default="float32", help="compute dtype: float32 or bfloat16")
    pl.set_defaults(func=cmd_pseudo_label)

    dc = sub.add_parser("demo-corpus", help="build the CPU demo's training and evaluation manifests")
    dc.add_argument("--output", default="runs/demo/corpus")
    dc.add_argument("--tts-sentences", type=int, default=None, help="sentences to synthesize (default: all)")
    dc.set_defaults(func=cmd_demo_corpus)

    e = sub.add_parser("evaluate", help="WER of a model (float or fake-quantized) on data specs")
    e.add_argument("--model", default="tiny.en", help="tiny.en, base, a local path or a hub id")
    e.add_argument("--data", action="append", required=True, help="data spec (repeatable)")
    e.add_argument("--quantize", help="w8a8, w8a8-per-channel, w4a8, w8a16, ... (jaxwhisper/quant/config.py)")
    e.add_argument("--calibration", help="data spec of the calibration clips")
    e.add_argument("--calibration-batches", type=int, default=16)
    e.add_argument("--ranges", help="reuse a ranges file written by an earlier calibration")
    e.add_argument("--batch-size", type=int, default=16)
    e.add_argument("--max-examples", type=int, default=0, help="first N utterances of each set (0: all)")
    e.add_argument("--output", required=True, help="results.json; hypotheses go beside it")
    e.set_defaults(func=cmd_evaluate)

    o = sub.add_parser(
        "outliers", help="kurtosis, inf-norm and 6-sigma outliers of every attention/block output"
    )
    o.add_argument("--model", default="tiny.en", help="tiny.en, base, a local path or a hub id")
    o.add_argument("--data", required=True, help="data spec (see jaxwhisper/data/sources.py)")
    o.add_argument("--output", required=True, help="directory for outliers.json, table.md and the figures")
    o.add_argument("--batch-size", type=int, default=8)
    o.add_argument("--max-examples", type=int, default=64, help="first N utterances (0: all)")
    o.add_argument("--include-padding", action="store_true", help="count padded encoder frames and tokens")
    o.add_argument("--layer", type=int, default=-1, help="decoder layer of the attention figure")
    o.add_argument("--head", type=int, default=0, help="head of the attention figure")
    o.add_argument(
        "--utterance", type=int, default=0, help="utterance (of the first batch) of the attention figure"
    )
    o.set_defaults(func=cmd_outliers)

    r = sub.add_parser("report", help="Tables 1-2 and the figures of several runs in one Markdown report")
    r.add_argument("--runs", nargs="+", required=True, help="run directories (train/quant/outliers results)")
    r.add_argument("--output", required=True, help="report.md; figures go beside it")
    r.set_defaults(func=cmd_report)

    c = sub.add_parser("convert", help="write a jaxwhisper (Flax) checkpoint from any supported weights")
    c.add_argument("src", help="tiny.en, base, CTranslate2/HF directory, OpenAI .pt, or hub id")
    c.add_argument("dst", help="output directory")
    c.set_defaults(func=cmd_convert)
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )
    if args.distributed:
        from jaxwhisper import distributed

        distributed.initialize()
    from jaxwhisper.errors import USER_ERRORS, one_line, show_traceback

    try:
        return args.func(args)
    except CliError as e:
        print(f"jaxwhisper {args.command}: error: {e}", file=sys.stderr)
        return 2
    except USER_ERRORS as e:
        if show_traceback():
            raise
        print(f"jaxwhisper {args.command}: error: {one_line(e)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
