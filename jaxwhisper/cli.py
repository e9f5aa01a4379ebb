"""`jaxwhisper` command line: transcribe, evaluate, outliers, report, pseudo-label, demo-corpus, convert.

Flags are parsed here; each subcommand is a handler in `commands.py`. Errors are one line
on stderr naming the input and the cause, with a non-zero exit status: 2 for arguments
refused before any work (checked before a model is loaded: outputs, data specs, ids), 1 for
inputs that failed while running (`JAXWHISPER_TRACEBACK=1` shows the traceback of a
ValueError/OSError).
"""

from __future__ import annotations

import argparse
import logging
import sys

from jaxwhisper import distributed, spmd
from jaxwhisper.commands import (
    CliError,
    cmd_convert,
    cmd_demo_corpus,
    cmd_evaluate,
    cmd_outliers,
    cmd_pseudo_label,
    cmd_report,
    cmd_transcribe,
)
from jaxwhisper.entry import use_compilation_cache
from jaxwhisper.errors import USER_ERRORS, one_line, show_traceback

# Commands whose work is decoding: on CPU they split the cores into devices that decode
# rows side by side (spmd.use_cpu_cores).
DECODING_COMMANDS = ("transcribe", "evaluate", "pseudo-label")


def _fallback_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--temperature-fallback",
        action="store_true",
        help="decode a transcript that is too repetitive or unlikely again at temperatures 0.2-1.0, "
        "best of 5 samples (faster-whisper's default; every input then goes window by window)",
    )


def _optional_float(text: str):
    if text.lower() == "none":
        return None
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number or 'none', got {text!r}") from None


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
        choices=["sequential", "windows", "chunked"],
        help="recordings over 30 s: seek by timestamps (faster-whisper's default), "
        "consecutive 30 s windows without timestamps (its without_timestamps=True), or chunks "
        "cut at pauses and sought by timestamps, one file's chunks batched together",
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
    _fallback_arguments(t)
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
    dc.add_argument(
        "--augment",
        action="store_true",
        help="other voices, rooms, noise for 3 of 4 synthesized sentences",
    )
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
    _fallback_arguments(e)
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
        distributed.initialize()
    elif args.command in DECODING_COMMANDS:
        spmd.use_cpu_cores(args.batch_size)
    use_compilation_cache()

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
