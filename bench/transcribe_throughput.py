"""Throughput of `jaxwhisper transcribe` against faster-whisper, in one run.

    python bench/transcribe_throughput.py [--manifest M] [--limit N] [--batch-size 16]

Default data: the 363 real Asterisk prompts in ../shared/data/prompts (falls back to the
vendored fixture). Everything is greedy, English, no timestamps, no VAD, on the same tiny.en
weights; faster-whisper runs with 2 CPU threads in float32 and int8. jaxwhisper runs in
float32, bf16 and as the paper's W8A8 with real int8 matmuls (`w8a8-real-int8`, calibrated
first on the 59 clips of the vendored fixture, not the measured data; calibration not timed).
Prints wall time, audio seconds per second and ratios; first-call compile time; and the
encoder's achieved GFLOP/s next to a plain numpy f32 matmul measured in the same run.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path

import jax
import numpy as np
from machine import describe  # bench/machine.py (the script's folder is on sys.path)

from jaxwhisper import spmd
from jaxwhisper.data.audio import load_audio
from jaxwhisper.data.eval_sets import load_eval_set
from jaxwhisper.data.features import N_SAMPLES
from jaxwhisper.evaluation.wer import word_error_rate
from jaxwhisper.inference.inputs import read_manifest
from jaxwhisper.inference.transcribe import Transcriber
from jaxwhisper.models.weights.resolve import bundled_model_files, resolve_model
from jaxwhisper.models.whisper import Whisper
from jaxwhisper.quant.calibrate import calibrate_on_audio
from jaxwhisper.quant.config import preset
from jaxwhisper.quant.ptq import quantize_model

REPO = Path(__file__).resolve().parent.parent
SHARED = REPO.parent / "shared" / "data" / "prompts" / "manifest.jsonl"


def encoder_flops(c, batch: int) -> float:
    """Multiply-adds x 2 of one encoder pass (convolutions, projections, attention, MLP)."""
    t, d, f = c.n_audio_ctx, c.d_model, c.ffn_dim
    conv = 2 * (c.n_frames * c.n_mels * d * 3 + t * d * d * 3)
    per_layer = 2 * t * (4 * d * d + 2 * d * f) + 2 * 2 * t * t * d
    return batch * (conv + c.encoder_layers * per_layer)


def numpy_matmul_gflops(n: int = 2048, repeats: int = 5) -> float:
    a = np.random.default_rng(0).normal(size=(n, n)).astype(np.float32)
    b = a.T.copy()
    a @ b
    best = min(_timed(lambda: a @ b) for _ in range(repeats))
    return 2 * n**3 / best / 1e9


def _timed(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def run_faster_whisper(clips, compute_type: str) -> tuple[list[str], float]:
    import faster_whisper

    _, model_dir = bundled_model_files("tiny.en")
    model = faster_whisper.WhisperModel(
        str(model_dir), device="cpu", compute_type=compute_type, cpu_threads=2
    )
    texts = []
    start = time.perf_counter()
    for audio in clips:
        segments, _ = model.transcribe(
            audio,
            language="en",
            beam_size=1,
            temperature=0.0,
            condition_on_previous_text=False,
            without_timestamps=True,
            vad_filter=False,
            no_speech_threshold=None,
            log_prob_threshold=None,
            compression_ratio_threshold=None,
        )
        texts.append("".join(s.text for s in segments).strip())
    return texts, time.perf_counter() - start


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument(
        "--manifest", default=str(SHARED if SHARED.exists() else REPO / "data/fixture/manifest.jsonl")
    )
    p.add_argument("--limit", type=int, default=0, help="first N clips only (0: all)")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--skip-int8", action="store_true")
    p.add_argument("--skip-bf16", action="store_true")
    p.add_argument("--skip-w8a8", action="store_true")
    args = p.parse_args()
    # As `jaxwhisper transcribe` does: one CPU device per core decoding rows side by side.
    spmd.use_cpu_cores(args.batch_size)

    rows = [u for u in read_manifest(Path(args.manifest))]
    clips = [load_audio(u.audio) for u in rows]
    keep = [i for i, c in enumerate(clips) if c.shape[0] <= N_SAMPLES]
    rows, clips = [rows[i] for i in keep], [clips[i] for i in keep]
    if args.limit:
        rows, clips = rows[: args.limit], clips[: args.limit]
    audio_s = sum(c.shape[0] for c in clips) / 16000
    refs = [u.text or "" for u in rows]
    print(f"data: {args.manifest}: {len(clips)} clips, {audio_s:.1f} s of audio")
    print(describe())

    model = resolve_model("tiny.en")
    t = Transcriber(model, batch_size=args.batch_size)
    compile_s = _timed(lambda: t.transcribe_arrays(clips[:1]))
    ours_s = _timed(lambda: globals().__setitem__("_ours", t.transcribe_arrays(clips)))
    ours = globals()["_ours"]

    results = {"jaxwhisper f32": (ours, ours_s)}
    if not args.skip_bf16:
        # bf16 matmuls run ~1.5x faster than f32 on this CPU (AVX512-BF16); numerics differ.
        tb = Transcriber(resolve_model("tiny.en", dtype="bfloat16"), batch_size=args.batch_size)
        tb.transcribe_arrays(clips[:1])
        bf16_s = _timed(lambda: globals().__setitem__("_bf16", tb.transcribe_arrays(clips)))
        results["jaxwhisper bf16"] = (globals()["_bf16"], bf16_s)
    if not args.skip_w8a8:
        calib = load_eval_set(str(REPO / "data/fixture/manifest.jsonl")).clips
        q = dataclasses.replace(preset("w8a8-real-int8"), calibration_batches=-(-len(calib) // 8))
        quantized = quantize_model(model, q, calibrate_on_audio(model, calib, q, 8))
        tq = Transcriber(
            quantized.model,
            batch_size=args.batch_size,
            intercept=quantized.intercept,
            intercept_state=quantized.state,
        )
        tq.transcribe_arrays(clips[:1])
        w8a8_s = _timed(lambda: globals().__setitem__("_w8a8", tq.transcribe_arrays(clips)))
        results["jaxwhisper w8a8 int8"] = (globals()["_w8a8"], w8a8_s)
    results["faster-whisper f32"] = run_faster_whisper(clips, "float32")
    if not args.skip_int8:
        results["faster-whisper int8"] = run_faster_whisper(clips, "int8")
    best_peer = min(v[1] for k, v in results.items() if k.startswith("faster"))

    print(f"\n{'system':<22}{'wall s':>8}{'audio-s/s':>11}{'WER %':>8}{'vs best peer':>14}")
    for name, (texts, wall) in results.items():
        w = word_error_rate(refs, texts).wer
        print(f"{name:<22}{wall:>8.1f}{audio_s / wall:>11.2f}{w:>8.2f}{best_peer / wall:>13.2f}x")
    print(f"\nfirst-call compile (+ one batch): {compile_s:.1f} s (target < 30 s)")

    # Encoder alone: achieved GFLOP/s against numpy's f32 matmul on this machine.
    mel = np.zeros((args.batch_size, model.config.n_mels, model.config.n_frames), np.float32)
    enc = jax.jit(lambda p, m: Whisper(model.config).apply({"params": p}, m, method=Whisper.encode))
    params = jax.device_put(model.params)  # on the device once, not copied in at every call
    enc(params, mel).block_until_ready()
    enc_s = min(_timed(lambda: enc(params, mel).block_until_ready()) for _ in range(3))
    enc_gflops = encoder_flops(model.config, args.batch_size) / enc_s / 1e9
    np_gflops = numpy_matmul_gflops()
    print(
        f"encoder: {enc_s:.2f} s per batch of {args.batch_size}, {enc_gflops:.1f} GFLOP/s; numpy f32 matmul "
        f"{np_gflops:.1f} GFLOP/s; ratio {enc_gflops / np_gflops:.2f} (target >= 0.70)"
    )
    print(json.dumps({k: {"wall_s": round(v[1], 2)} for k, v in results.items()}))


if __name__ == "__main__":
    main()
