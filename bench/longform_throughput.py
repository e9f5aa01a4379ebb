"""Long-form throughput and WER of `jaxwhisper transcribe` against faster-whisper, in one run.

    python bench/longform_throughput.py [--manifest M] [--targets 70,130,190,240,100] [--batch-size 8]

Recordings of 1-4 minutes are built by joining a manifest's real clips in order with
0.3-0.8 s pauses (`jaxwhisper.evaluation.longform_sets`); the references are the joined
texts. Default clips: the 363 Asterisk prompts in ../shared/data/prompts, which the tests
never see (falls back to the vendored fixture). On the same tiny.en weights, greedy
(temperature 0 only), no VAD, no previous-text conditioning, faster-whisper's default
no-speech / log-prob thresholds:

* faster-whisper 1.2.1 long-form with timestamps, int8 and float32, 2 CPU threads, one
  recording at a time (its `transcribe`);
* jaxwhisper `sequential` (timestamps, seek), `windows` (no timestamps) and `chunked`
  (cut at pauses, each chunk sought by timestamps), float32, the recordings' windows batched
  across files; and `chunked` given one recording per call, as faster-whisper is, so that
  only one file's chunks fill each batch.

Prints the CPU, the load average before and after (the machine may be shared), wall time,
audio seconds per second, WER, deletions, the longest run of deleted reference words, and
each system's speed relative to the faster faster-whisper configuration.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

from machine import describe  # bench/machine.py (the script's folder is on sys.path)

from jaxwhisper import spmd
from jaxwhisper.data.audio import load_audio
from jaxwhisper.evaluation.longform_sets import join_clips, longest_deleted_run
from jaxwhisper.evaluation.wer import word_error_rate
from jaxwhisper.inference.inputs import read_manifest
from jaxwhisper.inference.transcribe import Transcriber
from jaxwhisper.models.weights.resolve import bundled_model_files, resolve_model

REPO = Path(__file__).resolve().parent.parent
SHARED = REPO.parent / "shared" / "data" / "prompts" / "manifest.jsonl"


def run_faster_whisper(recordings, compute_type: str, threads: int) -> tuple[list[str], float]:
    import faster_whisper

    _, model_dir = bundled_model_files("tiny.en")
    model = faster_whisper.WhisperModel(
        str(model_dir), device="cpu", compute_type=compute_type, cpu_threads=threads
    )
    texts = []
    start = time.perf_counter()
    for r in recordings:
        segments, _ = model.transcribe(
            r.audio,
            language="en",
            beam_size=1,
            temperature=0.0,
            condition_on_previous_text=False,
            without_timestamps=False,
            vad_filter=False,
        )
        texts.append("".join(s.text for s in segments).strip())
    return texts, time.perf_counter() - start


def run_ours(
    recordings, mode: str, batch_size: int, dtype: str, per_file: bool = False
) -> tuple[list[str], float, float]:
    t = Transcriber(resolve_model("tiny.en", dtype=dtype), batch_size=batch_size, long_form=mode)
    start = time.perf_counter()
    # compile: three 35 s recordings, at least three windows at once in every mode, so that
    # on CPU the second device prepares one too (it compiles its own `prepare`)
    t.transcribe_arrays([recordings[0].audio[: 16000 * 35]] * 3)
    compile_s = time.perf_counter() - start
    start = time.perf_counter()
    if per_file:
        texts = [text for r in recordings for text in t.transcribe_arrays([r.audio])]
    else:
        texts = t.transcribe_arrays([r.audio for r in recordings])
    return texts, time.perf_counter() - start, compile_s


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument(
        "--manifest", default=str(SHARED if SHARED.exists() else REPO / "data/fixture/manifest.jsonl")
    )
    p.add_argument("--targets", default="70,130,190,240,100", help="recording lengths (s), in order")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--threads", type=int, default=2, help="faster-whisper's CPU threads")
    p.add_argument("--skip-windows", action="store_true")
    p.add_argument("--bf16", action="store_true", help="also jaxwhisper with bfloat16 compute")
    args = p.parse_args()
    # As `jaxwhisper transcribe` does: one CPU device per core decoding rows side by side.
    spmd.use_cpu_cores(args.batch_size)

    rows = read_manifest(Path(args.manifest))
    clips = [(u.id, load_audio(u.audio), u.text or "") for u in rows if not u.error]
    recordings = join_clips(clips, [float(x) for x in args.targets.split(",")])
    audio_s = sum(r.duration_s for r in recordings)
    refs = [r.text for r in recordings]
    lengths = [round(r.duration_s) for r in recordings]
    print(f"data: {args.manifest}: {len(recordings)} recordings of {lengths} s", flush=True)
    print(describe(), flush=True)

    def report(name, texts, wall):
        w = word_error_rate(refs, texts)
        run = max(longest_deleted_run(r, t) for r, t in zip(refs, texts))
        print(
            f"{name:<42}{wall:>8.1f}{audio_s / wall:>11.2f}{w.wer:>8.2f}{w.deletions:>5}{run:>13}"
            f"  load {os.getloadavg()[0]:.1f}",
            flush=True,
        )

    print(f"{'system':<42}{'wall s':>8}{'audio-s/s':>11}{'WER %':>8}{'D':>5}{'max del run':>13}", flush=True)
    results = {}
    for compute_type in ("int8", "float32"):
        name = f"faster-whisper {compute_type}"
        results[name] = run_faster_whisper(recordings, compute_type, args.threads)
        report(name, *results[name])
    systems = [("sequential", "float32", False), ("chunked", "float32", False), ("chunked", "float32", True)]
    systems += [] if args.skip_windows else [("windows", "float32", False)]
    bf16 = [("sequential", "bfloat16", False), ("chunked", "bfloat16", False), ("chunked", "bfloat16", True)]
    systems += bf16 if args.bf16 else []
    for mode, dtype, per_file in systems:
        name = f"jaxwhisper {mode} {'f32' if dtype == 'float32' else 'bf16'} b{args.batch_size}"
        name += ", 1 file/call" if per_file else ""
        texts, wall, compile_s = run_ours(recordings, mode, args.batch_size, dtype, per_file)
        results[name] = (texts, wall)
        report(name, texts, wall)
        print(f"  (first call: compile + three 35 s recordings, {compile_s:.1f} s)", flush=True)
    best_name, (_, best_peer) = min(
        ((k, v) for k, v in results.items() if k.startswith("faster")), key=lambda kv: kv[1][1]
    )
    print(f"\nload average after: {os.getloadavg()}; {audio_s:.1f} s of audio; speed vs {best_name}:")
    for name, (_, wall) in results.items():
        print(f"  {name:<42}{best_peer / wall:.2f}x")


if __name__ == "__main__":
    main()
