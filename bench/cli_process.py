"""Transcription as a user runs it: whole processes, start to exit, against faster-whisper.

    python bench/cli_process.py [--manifest M] [--batch-size 16]

Each system is one process per run, timed from its start to its exit:

* `jaxwhisper transcribe MANIFEST --output FILE` in float32 and bfloat16 (`--dtype`), each
  twice: first with an empty compilation cache (a fresh `XDG_CACHE_HOME`: what a user's
  first run pays), then again with the programs the first run cached;
* faster-whisper 1.2.1 (int8 and float32, 2 CPU threads) in a `python -c` process that loads
  the same tiny.en weights and transcribes the same clips with the options of
  `bench/transcribe_throughput.py` (greedy, no timestamps, no VAD, no thresholds).

Besides the process's wall time it prints the part spent before the transcription loop
(interpreter, imports, model load) and the loop itself (jaxwhisper's own "in X s" line,
which includes compilation on a cold cache), WER from each system's transcripts, and each
process's speed relative to the faster faster-whisper process. Default data: the 363 Asterisk
prompts of ../shared/data/prompts (falls back to the vendored fixture).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from machine import describe  # bench/machine.py (the script's folder is on sys.path)

from jaxwhisper import spmd
from jaxwhisper.data.audio import load_audio
from jaxwhisper.evaluation.wer import word_error_rate
from jaxwhisper.inference.inputs import read_manifest
from jaxwhisper.models.weights.resolve import bundled_model_files

REPO = Path(__file__).resolve().parent.parent
CLI = Path(sys.executable).parent / "jaxwhisper"  # the installed console script
SHARED = REPO.parent / "shared" / "data" / "prompts" / "manifest.jsonl"

# The clips come decoded by jaxwhisper's loader (the same samples both systems see) in an
# .npz, so that the faster-whisper process imports neither JAX nor jaxwhisper.
FASTER_WHISPER = """
import json, sys, time
import numpy as np
import faster_whisper
model_dir, clips_npz, compute_type = sys.argv[1:4]
model = faster_whisper.WhisperModel(model_dir, device="cpu", compute_type=compute_type, cpu_threads=2)
clips = np.load(clips_npz)
start, texts = time.perf_counter(), []
for i in range(len(clips.files)):
    segments, _ = model.transcribe(
        clips[f"c{i}"], language="en", beam_size=1, temperature=0.0,
        condition_on_previous_text=False, without_timestamps=True, vad_filter=False,
        no_speech_threshold=None, log_prob_threshold=None, compression_ratio_threshold=None,
    )
    texts.append("".join(s.text for s in segments).strip())
print(json.dumps({"loop_s": time.perf_counter() - start, "texts": texts}))
"""


def run(cmd: list[str], env: dict) -> tuple[float, subprocess.CompletedProcess]:
    start = time.perf_counter()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd[:3])}...: exit {proc.returncode}: {proc.stderr[-2000:]}")
    return wall, proc


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument(
        "--manifest", default=str(SHARED if SHARED.exists() else REPO / "data/fixture/manifest.jsonl")
    )
    p.add_argument("--batch-size", type=int, default=16)
    args = p.parse_args()
    spmd.use_cpu_cores(args.batch_size)  # as the CLI processes do: the header shows their devices

    rows = [u for u in read_manifest(Path(args.manifest)) if not u.error]
    refs = [u.text or "" for u in rows]
    print(f"data: {args.manifest}: {len(rows)} clips")
    print(describe(), flush=True)
    env = {k: v for k, v in os.environ.items() if k not in ("JAX_COMPILATION_CACHE_DIR", "XLA_FLAGS")}
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for dtype in ("float32", "bfloat16"):
            env["XDG_CACHE_HOME"] = str(Path(tmp) / f"cache-{dtype}")  # empty: a first run
            for run_name in ("cold cache", "warm cache"):
                out = Path(tmp) / f"{dtype}-{run_name[:4]}.jsonl"
                cmd = (
                    [str(CLI), "transcribe", args.manifest]
                    if CLI.exists()
                    else [sys.executable, "-m", "jaxwhisper.cli", "transcribe", args.manifest]
                )
                cmd += ["--dtype", dtype, "--batch-size", str(args.batch_size), "--output", str(out)]
                wall, proc = run(cmd, env)
                loop = float(re.search(r"audio in ([\d.]+) s", proc.stderr).group(1))
                by_id = {}
                for line in out.read_text().splitlines():
                    rec = json.loads(line)
                    by_id[rec["id"]] = rec.get("text", "")
                texts = [by_id.get(u.id, "") for u in rows]
                name = f"jaxwhisper {'f32' if dtype == 'float32' else 'bf16'}, {run_name}"
                results[name] = (wall, loop, texts)
                print(f"  {name}: {wall:.1f} s", flush=True)
        clips_npz = Path(tmp) / "clips.npz"
        np.savez(clips_npz, **{f"c{i}": load_audio(u.audio) for i, u in enumerate(rows)})
        _, model_dir = bundled_model_files("tiny.en")
        for compute_type in ("int8", "float32"):
            cmd = [sys.executable, "-c", FASTER_WHISPER, str(model_dir), str(clips_npz), compute_type]
            wall, proc = run(cmd, env)
            out = json.loads(proc.stdout.strip().splitlines()[-1])
            name = f"faster-whisper {compute_type}"
            results[name] = (wall, out["loop_s"], out["texts"])
            print(f"  {name}: {wall:.1f} s", flush=True)

    best = min(v[0] for k, v in results.items() if k.startswith("faster"))
    print(f"\n{'process':<34}{'wall s':>8}{'before loop':>13}{'loop s':>8}{'WER %':>8}{'vs best peer':>14}")
    for name, (wall, loop, texts) in results.items():
        w = word_error_rate(refs, texts).wer
        print(f"{name:<34}{wall:>8.1f}{wall - loop:>13.1f}{loop:>8.1f}{w:>8.2f}{best / wall:>13.2f}x")
    print(f"load average after: {os.getloadavg()}")


if __name__ == "__main__":
    main()
