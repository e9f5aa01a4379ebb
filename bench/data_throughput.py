"""Is training bound by data or by compute? One run, 2 CPU cores.

    python bench/data_throughput.py [--manifest M] [--batch 8] [--steps 5]
    python bench/data_throughput.py --streaming 'DIR/*.parquet' --workers 1,2,4 [--batch 32]

With `--streaming`, only the host side of streaming training is measured: examples/s and
audio s/s of `StreamLoader` (parquet shards read as a stream, FLAC decoded, validated,
tokenised, labelled) with N decode workers each, and the batched log-mel on this machine's
device (docs/streaming.md compares them with the accelerators' step rate).

Measures, on real speech:
  1. the loader (decode + resample + validate + tokenise + labels): examples/s;
  2. log-mel features: numpy reference per example vs the batched jnp version on device;
  3. the distillation step of a tiny.en -> 2+2 gated student (features on device): examples/s;
and prints the ratio of loader to step throughput (> 1: compute-bound, the background
prefetch hides the loader).
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import jax
from machine import describe  # bench/machine.py (the script's folder is on sys.path)

from jaxwhisper.config import OptimizerConfig
from jaxwhisper.data.batches import BatchConfig
from jaxwhisper.data.features import log_mel_batch, log_mel_numpy
from jaxwhisper.data.pipeline import BatchLoader
from jaxwhisper.data.sources import parse_spec
from jaxwhisper.inference.tokenizer import WhisperTokenizer
from jaxwhisper.models.weights.resolve import resolve_model
from jaxwhisper.train.step import init_state, make_train_step
from jaxwhisper.train.student import make_student

REPO = Path(__file__).resolve().parent.parent
SHARED = REPO.parent / "shared" / "data" / "prompts" / "manifest.jsonl"


def main():
    print(describe())
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument(
        "--manifest", default=str(SHARED if SHARED.exists() else REPO / "data/fixture/manifest.jsonl")
    )
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--max-label-len", type=int, default=128)
    p.add_argument("--streaming", help="a parquet glob in a hub schema (audio + text columns)")
    p.add_argument("--workers", default="1,2,4", help="decode workers to try, comma-separated")
    args = p.parse_args()
    if args.streaming:
        return streaming(args)

    teacher = resolve_model("tiny.en")
    tok = WhisperTokenizer(teacher.tokenizer_dir, multilingual=False)
    src = parse_spec(args.manifest)
    loader = BatchLoader(
        [src],
        BatchConfig(global_batch=args.batch, max_label_len=args.max_label_len),
        tok.prefix,
        tok.eot,
        tok.encode,
    )
    print(f"data: {args.manifest} ({len(src)} examples); batch {args.batch}; {jax.devices()}")

    loader.load_step(0)  # warm file caches and soxr
    t = time.perf_counter()
    batches = [loader.load_step(s) for s in range(1, 1 + args.steps)]
    load_s = (time.perf_counter() - t) / args.steps
    load_eps = args.batch / load_s

    clips = [b["audio"][i, : b["audio_len"][i]] for b in batches[:2] for i in range(args.batch)]
    t = time.perf_counter()
    for c in clips:
        log_mel_numpy(c)
    np_feat_eps = len(clips) / (time.perf_counter() - t)
    feat = jax.jit(lambda a, n: log_mel_batch(a, n))
    feat(batches[0]["audio"], batches[0]["audio_len"]).block_until_ready()
    t = time.perf_counter()
    for b in batches:
        feat(b["audio"], b["audio_len"]).block_until_ready()
    jnp_feat_eps = args.batch * len(batches) / (time.perf_counter() - t)

    s_cfg, s_params = make_student(teacher.config, teacher.params, 2, 2, gate="shared")
    step, tx = make_train_step(s_cfg, teacher.config, OptimizerConfig(warmup_steps=10), 100)
    step = jax.jit(step, donate_argnums=0)
    state = init_state(s_params, tx)
    keys = ("audio", "audio_len", "decoder_input_ids", "labels")
    dev = [{k: jax.device_put(b[k]) for k in keys} for b in batches]
    t = time.perf_counter()
    state, m = step(state, teacher.params, dev[0])
    jax.block_until_ready(m)
    compile_s = time.perf_counter() - t
    t = time.perf_counter()
    for b in dev:
        state, m = step(state, teacher.params, b)
    jax.block_until_ready(m)
    step_s = (time.perf_counter() - t) / len(dev)
    step_eps = args.batch / step_s

    print(f"\n{'stage':<44}{'examples/s':>12}")
    print(f"{'loader: decode + resample + validate + labels':<44}{load_eps:>12.1f}")
    print(f"{'log-mel, numpy reference, one by one':<44}{np_feat_eps:>12.1f}")
    print(f"{'log-mel, jnp batched on device':<44}{jnp_feat_eps:>12.1f}")
    print(f"{'distillation step tiny.en -> 2+2 (gated)':<44}{step_eps:>12.1f}")
    print(
        f"\nstep {step_s:.2f} s (first call {compile_s:.1f} s incl. compile); loader/step throughput ratio "
        f"{load_eps / step_eps:.1f}x -> {'compute' if load_eps > step_eps else 'data'}-bound"
    )
    feat_share = args.batch / jnp_feat_eps / step_s
    print(
        f"log-mel inside the step (on device): {args.batch / jnp_feat_eps:.3f} s per batch, "
        f"{feat_share:.1%} of a step"
    )


def streaming(args):
    import numpy as np

    from jaxwhisper.data.streaming import StreamLoader

    teacher = resolve_model("tiny.en")
    tok = WhisperTokenizer(teacher.tokenizer_dir, multilingual=False)
    src = parse_spec(f"hf:local@train?data_files={args.streaming}&streaming=1")
    cpus = os.cpu_count()
    print(f"data: {args.streaming} ({src.num_rows} rows); batch {args.batch}; {cpus} CPUs; {jax.devices()}")
    print(f"\n{'decode workers':<16}{'examples/s':>12}{'audio s/s':>12}")
    for n in [int(x) for x in args.workers.split(",")]:
        loader = StreamLoader(
            [src],
            BatchConfig(global_batch=args.batch, max_label_len=args.max_label_len),
            tok.prefix,
            tok.eot,
            tok.encode,
            decode_workers=n,
        )
        batches = loader.iter_from_step(0, prefetch=1)
        first = next(batches)  # opens the shards, starts the pool
        t, audio_s = time.perf_counter(), 0.0
        for _ in range(args.steps):
            b = next(batches)
            audio_s += float(np.sum(b["audio_len"])) / 16000
        dt = time.perf_counter() - t
        batches.close()
        print(f"{n:<16}{args.batch * args.steps / dt:>12.1f}{audio_s / dt:>12.1f}")
    feat = jax.jit(lambda a, n: log_mel_batch(a, n))
    feat(first["audio"], first["audio_len"]).block_until_ready()
    t = time.perf_counter()
    for _ in range(3):
        feat(first["audio"], first["audio_len"]).block_until_ready()
    eps = 3 * args.batch / (time.perf_counter() - t)
    print(f"{'log-mel, jnp batched on ' + jax.devices()[0].platform:<28}{eps:>12.1f}")


if __name__ == "__main__":
    main()
