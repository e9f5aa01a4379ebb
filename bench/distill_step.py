"""The distillation step, jaxwhisper against the same step in transformers PyTorch. One run.

    python bench/distill_step.py [--batch 8] [--steps 5] [--label-len 96]

Teacher tiny.en (the bundled CTranslate2 weights), student 2+2 copied by the paper's map,
one batch of real speech (30 s windows). Each step is the whole distillation update:
log-mel features from the waveform, the frozen teacher's forward, the student's forward and
backward, `0.8 * CE + 4 * KL` over target tokens, clipping and AdamW with warm-up.

  jaxwhisper: `make_train_step` under `jax.jit` (features on device, donated state).
  PyTorch:    transformers `WhisperForConditionalGeneration` teacher (eval, no_grad) and
              student (train), transformers' torch log-mel, `torch.optim.AdamW`, eager mode.

Each in float32 and in bf16 (jaxwhisper: student and teacher `dtype=bfloat16`, f32 params and
AdamW state; PyTorch: `torch.autocast("cpu", dtype=torch.bfloat16)` around both forwards and
the loss).

Before timing, both steps are given the same weights and the same log-mel features and
must agree on the loss (a check that the two steps compute the same thing). Prints the time
per step (median of `--steps` rounds after one warm-up; the steps alternate so that drift
in the machine's speed hits both), the loss of each system's first step (the same batch and
weights: bf16 moves it) and each system's ratio to the faster PyTorch configuration; the
target is >= 1.5x.
Both sides use every core of the machine (torch threads = os.cpu_count()).
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from machine import describe  # bench/machine.py (the script's folder is on sys.path)

from jaxwhisper.config import OptimizerConfig
from jaxwhisper.data.batches import BatchConfig
from jaxwhisper.data.features import log_mel_batch
from jaxwhisper.data.pipeline import BatchLoader
from jaxwhisper.data.sources import parse_spec
from jaxwhisper.inference.tokenizer import WhisperTokenizer
from jaxwhisper.models.weights.ct2 import ct2_to_hf_state_dict, read_model_bin
from jaxwhisper.models.weights.hf import config_to_hf
from jaxwhisper.models.weights.resolve import bundled_model_files, resolve_model
from jaxwhisper.train.losses import distillation_loss
from jaxwhisper.train.step import init_state, make_train_step
from jaxwhisper.train.student import decoder_layer_map, encoder_layer_map, make_student

REPO = Path(__file__).resolve().parent.parent
OPT = OptimizerConfig(learning_rate=1e-4, warmup_steps=20)
TOTAL_STEPS = 300
T, CE_W, KL_W = 2.0, 0.8, 1.0


def real_batch(batch: int, label_len: int, tok) -> dict:
    src = parse_spec(str(REPO / "data/fixture/manifest.jsonl"))
    cfg = BatchConfig(global_batch=batch, max_label_len=label_len)
    loader = BatchLoader([src], cfg, tok.prefix, tok.eot, tok.encode)
    return loader.load_step(0)


def time_steps(fn, steps: int) -> tuple[float, list[float]]:
    """(first call s, [s of each of the next `steps` calls])."""
    t = time.perf_counter()
    fn()
    first = time.perf_counter() - t
    times = []
    for _ in range(steps):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return first, times


# ---------------------------------------------------------------- jaxwhisper


def jax_stepper(teacher, gate: str, b: dict, dtype: str = "float32"):
    s_cfg, s_params = make_student(teacher.config, teacher.params, 2, 2, gate=gate, rng=jax.random.PRNGKey(0))
    # bf16: student and frozen teacher compute in bf16 (f32 params and AdamW state), as
    # configs/distill_large_v2.py trains.
    step, tx = make_train_step(
        s_cfg.replace(dtype=dtype), teacher.config.replace(dtype=dtype), OPT, TOTAL_STEPS
    )
    step = jax.jit(step, donate_argnums=0)
    batch = {k: jnp.asarray(b[k]) for k in ("audio", "audio_len", "decoder_input_ids", "labels")}
    t_params = jax.device_put(teacher.params)
    box = {"state": init_state(s_params, tx)}

    def run():
        box["state"], m = step(box["state"], t_params, batch)
        return float(m["train/loss"])

    return run


# ---------------------------------------------------------------- PyTorch


def torch_models(teacher_cfg):
    import torch
    import transformers

    parts, _ = bundled_model_files("tiny.en")
    _, sd = ct2_to_hf_state_dict(read_model_bin(parts)[1], "tiny.en")
    hf_t = transformers.WhisperConfig(**config_to_hf(teacher_cfg))
    teacher = transformers.WhisperForConditionalGeneration(hf_t).eval()
    missing, _ = teacher.model.load_state_dict({k: torch.from_numpy(v) for k, v in sd.items()}, strict=False)
    assert not [k for k in missing if "proj_out" not in k], missing
    maps = {
        "encoder": encoder_layer_map(teacher_cfg.encoder_layers, 2),
        "decoder": decoder_layer_map(teacher_cfg.decoder_layers, 2),
    }
    student_sd = {}
    for k, v in sd.items():
        side, rest = k.split(".", 1)
        if rest.startswith("layers."):
            j, tail = rest[len("layers.") :].split(".", 1)
            for i, src in enumerate(maps[side]):
                if src == int(j):
                    student_sd[f"{side}.layers.{i}.{tail}"] = v
        else:
            student_sd[k] = v
    hf_s = transformers.WhisperConfig(**config_to_hf(teacher_cfg.replace(encoder_layers=2, decoder_layers=2)))
    student = transformers.WhisperForConditionalGeneration(hf_s).train()
    weights = {k: torch.from_numpy(v.copy()) for k, v in student_sd.items()}
    missing, _ = student.model.load_state_dict(weights, strict=False)
    assert not [k for k in missing if "proj_out" not in k], missing
    student.tie_weights()
    return teacher, student


def torch_loss(student, teacher, feats, dec_in, labels):
    import torch
    import torch.nn.functional as F

    with torch.no_grad():
        t_logits = teacher(input_features=feats, decoder_input_ids=dec_in).logits
    s_logits = student(input_features=feats, decoder_input_ids=dec_in).logits
    mask = (labels != -100).float()
    n = mask.sum().clamp(min=1.0)
    logp = F.log_softmax(s_logits, -1)
    nll = -logp.gather(-1, labels.clamp(min=0).unsqueeze(-1)).squeeze(-1)
    ce = (nll * mask).sum() / n
    log_ps, log_pt = F.log_softmax(s_logits / T, -1), F.log_softmax(t_logits / T, -1)
    kl = ((log_pt.exp() * (log_pt - log_ps)).sum(-1) * mask).sum() / n
    return CE_W * ce + KL_W * T**2 * kl


def torch_stepper(student, teacher, fe, b: dict, autocast: bool = False):
    import contextlib

    import torch

    opt = torch.optim.AdamW(
        student.parameters(), lr=OPT.learning_rate, betas=(OPT.b1, OPT.b2), eps=OPT.eps, weight_decay=0.0
    )
    warm, total = OPT.warmup_steps, TOTAL_STEPS
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: s / warm if s < warm else max(0.0, (total - s) / (total - warm))
    )
    audio = np.asarray(b["audio"], np.float32)
    dec_in = torch.from_numpy(np.asarray(b["decoder_input_ids"])).long()
    labels = torch.from_numpy(np.asarray(b["labels"])).long()

    def run():
        feats = torch.from_numpy(fe._torch_extract_fbank_features(audio, "cpu"))
        # torch's bf16 autocast on CPU: matmuls in bf16, softmax/log-softmax in f32.
        mixed = torch.autocast("cpu", dtype=torch.bfloat16) if autocast else contextlib.nullcontext()
        with mixed:
            loss = torch_loss(student, teacher, feats, dec_in, labels)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(student.parameters(), OPT.clip_norm)
        opt.step()
        sched.step()
        return loss.detach().item()

    return run


SYSTEMS = (
    "jaxwhisper gate=none",
    "jaxwhisper gate=shared",
    "jaxwhisper bf16 gate=none",
    "transformers + torch AdamW",
    "transformers + torch AdamW, bf16 autocast",
)


def measure(system: str, args) -> None:
    """Times one system in this (fresh) process and prints its JSON on the last line."""
    import json

    teacher = resolve_model("tiny.en")
    tok = WhisperTokenizer(teacher.tokenizer_dir, multilingual=False)
    b = real_batch(args.batch, args.label_len, tok)
    if system.startswith("jaxwhisper"):
        run = jax_stepper(teacher, system.split("=")[1], b, "bfloat16" if "bf16" in system else "float32")
    else:
        import torch
        import transformers

        torch.set_num_threads(os.cpu_count())
        t_model, s_model = torch_models(teacher.config)
        fe = transformers.WhisperFeatureExtractor(feature_size=80)
        run = torch_stepper(s_model, t_model, fe, b, autocast="bf16" in system)
    losses = []
    first, times = time_steps(lambda: losses.append(run()), args.steps)
    print(json.dumps({"first": first, "times": times, "loss": losses[0]}))


def check_same_loss(args) -> None:
    """Same weights, same log-mel features: the two losses must agree before anything is timed."""
    import torch

    from jaxwhisper.models.whisper import Whisper

    teacher = resolve_model("tiny.en")
    tok = WhisperTokenizer(teacher.tokenizer_dir, multilingual=False)
    b = real_batch(args.batch, args.label_len, tok)
    mel = np.array(log_mel_batch(jnp.asarray(b["audio"]), jnp.asarray(b["audio_len"]), n_mels=80))
    s_cfg, s_params = make_student(teacher.config, teacher.params, 2, 2, gate="none")
    t_logits = Whisper(teacher.config).apply({"params": teacher.params}, mel, b["decoder_input_ids"])
    s_logits = Whisper(s_cfg).apply({"params": s_params}, mel, b["decoder_input_ids"])
    jax_loss = float(distillation_loss(s_logits, t_logits, jnp.asarray(b["labels"]), T, CE_W, KL_W)[0])
    t_model, s_model = torch_models(teacher.config)
    with torch.no_grad():
        ids, labels = (torch.from_numpy(np.asarray(b[k])).long() for k in ("decoder_input_ids", "labels"))
        pt_loss = float(torch_loss(s_model, t_model, torch.from_numpy(mel), ids, labels))
    print(f"loss on identical inputs: jax {jax_loss:.5f}  torch {pt_loss:.5f}")
    if abs(jax_loss - pt_loss) > 1e-3 * abs(pt_loss):
        raise SystemExit("the two steps disagree on the loss: not the same computation, not timing")


def main():
    import json
    import subprocess
    import sys

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--label-len", type=int, default=96)
    p.add_argument("--rounds", type=int, default=2, help="fresh processes per system, alternating")
    p.add_argument("--only", choices=SYSTEMS, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.only:
        return measure(args.only, args)

    import torch
    import transformers

    print(
        f"tiny.en -> 2+2, batch {args.batch} x 30 s, labels {args.label_len}; jax {jax.__version__} "
        f"{jax.devices()[0].platform} x{jax.device_count()}; torch {torch.__version__} "
        f"({os.cpu_count()} threads); transformers {transformers.__version__}"
    )
    print(describe())
    check_same_loss(args)
    # Each system runs alone in a fresh process (two frameworks' thread pools and heaps in one
    # process slow each other down), alternating over rounds so that drift hits all alike.
    results = {name: ([], [], []) for name in SYSTEMS}
    common = ["--batch", str(args.batch), "--steps", str(args.steps), "--label-len", str(args.label_len)]
    for _ in range(args.rounds):
        for name in SYSTEMS:
            cmd = [sys.executable, __file__, "--only", name, *common]
            out = subprocess.run(cmd, capture_output=True, text=True, check=True)
            r = json.loads(out.stdout.strip().splitlines()[-1])
            results[name][0].append(r["first"])
            results[name][1].extend(r["times"])
            results[name][2].append(r["loss"])
    torch_names = [k for k in SYSTEMS if k.startswith("transformers")]
    ref = min(statistics.median(results[k][1]) for k in torch_names)
    n = args.rounds * args.steps
    print(
        f"\n| step | first call s | s/step (median of {n}) | examples/s | loss of step 1 "
        "| vs faster PyTorch |"
    )
    print("|---|---|---|---|---|---|")
    for name, (firsts, times, losses) in results.items():
        per = statistics.median(times)
        print(
            f"| {name} | {min(firsts):.2f} | {per:.3f} | {args.batch / per:.2f} | {losses[0]:.5f} "
            f"| {ref / per:.2f}x |"
        )
    print(
        "\nPyTorch has no gated attention; compare it with gate=none. Ratios are against the faster "
        "PyTorch configuration. Target >= 1.5x."
    )


if __name__ == "__main__":
    main()
