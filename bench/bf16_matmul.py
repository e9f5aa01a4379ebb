"""bf16 compute on CPU: three matmul variants and tiny.en's encoder forward. One run.

    python bench/bf16_matmul.py [--batch 8] [--repeats 5]

Matmuls on tiny.en's Dense shapes ([batch * 1500, 384] times [384, 384], [384, 1536],
[1536, 384]), GFLOP/s of
  - f32:          float32 inputs, float32 result;
  - bf16-out:     bfloat16 inputs, bfloat16 result (what Flax's bf16 `nn.Dense` asks for);
  - bf16-f32acc:  bfloat16 inputs, float32 result (`preferred_element_type`), which is what
                  `jaxwhisper.models.precision.dense` builds for a bf16 model.
Then one encoder forward of `--batch` 30 s windows in float32, in bf16 with Flax's Dense
(bf16 results; emulated by an interceptor on the Dense calls, the attention einsums as in the
model) and in bf16 as the model now computes it. Variants run interleaved and each reports
the minimum over `--repeats` runs, so that load from other processes on a shared machine
hits all of them alike. Prints the CPU model, its bf16 flags and the JAX version.
"""

from __future__ import annotations

import argparse
import time

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from machine import describe  # bench/machine.py (the script's folder is on sys.path)

from jaxwhisper.models.weights.resolve import resolve_model
from jaxwhisper.models.whisper import Whisper

BF16 = jnp.bfloat16
_DIMS = (((1,), (0,)), ((), ()))


def min_times(fns: dict, repeats: int) -> dict:
    """{name: min seconds} of each zero-argument fn (already compiled), run interleaved."""
    best = {k: float("inf") for k in fns}
    for _ in range(repeats):
        for k, fn in fns.items():
            start = time.perf_counter()
            jax.block_until_ready(fn())
            best[k] = min(best[k], time.perf_counter() - start)
    return best


def matmul_variants(m: int, k: int, n: int) -> dict:
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.standard_normal((m, k)), jnp.float32)
    w = jnp.asarray(rng.standard_normal((k, n)) / np.sqrt(k), jnp.float32)
    xb, wb = x.astype(BF16), w.astype(BF16)
    f32 = jax.jit(lambda a, b: jax.lax.dot_general(a, b, _DIMS))
    out = jax.jit(lambda a, b: jax.lax.dot_general(a, b, _DIMS))
    acc = jax.jit(lambda a, b: jax.lax.dot_general(a, b, _DIMS, preferred_element_type=jnp.float32))
    fns = {"f32": lambda: f32(x, w), "bf16-out": lambda: out(xb, wb), "bf16-f32acc": lambda: acc(xb, wb)}
    for fn in fns.values():
        jax.block_until_ready(fn())
    return fns


def flax_bf16_dense_interceptor():
    """Dense calls computed as Flax's own bf16 `nn.Dense`: bf16 inputs, kernel and bias, a
    bf16 dot result."""

    def interceptor(next_fun, args, kwargs, context):
        module = context.module
        if not (isinstance(module, nn.Dense) and context.method_name == "__call__"):
            return next_fun(*args, **kwargs)
        params = module.variables["params"]
        y = jnp.dot(args[0].astype(BF16), params["kernel"].astype(BF16))
        if "bias" in params:
            y = y + params["bias"].astype(BF16)
        return y

    return nn.intercept_methods(interceptor)


def encoder_variants(batch: int) -> dict:
    f32_model = resolve_model("tiny.en")
    cfg16 = f32_model.config.replace(dtype="bfloat16")
    mel = jnp.asarray(np.random.default_rng(0).uniform(-1.0, 1.0, (batch, 80, 3000)), jnp.float32)

    def encoder(config, intercept=None):
        def run(p, m):
            if intercept is None:
                return Whisper(config).apply({"params": p}, m, method=Whisper.encode)
            with intercept():
                return Whisper(config).apply({"params": p}, m, method=Whisper.encode)

        return jax.jit(run)

    enc_f32 = encoder(f32_model.config)
    enc_old = encoder(cfg16, flax_bf16_dense_interceptor)
    enc_new = encoder(cfg16)
    params = f32_model.params
    fns = {
        "f32": lambda: enc_f32(params, mel),
        "bf16-out (Flax Dense)": lambda: enc_old(params, mel),
        "bf16-f32acc (model)": lambda: enc_new(params, mel),
    }
    outs = {k: np.asarray(jax.block_until_ready(fn()), np.float32) for k, fn in fns.items()}
    ref = outs["f32"]
    for k, o in outs.items():
        rel = np.linalg.norm(o - ref) / np.linalg.norm(ref)
        print(f"  {k:<24} relative L2 distance of the encoder output to f32: {rel:.2e}")
    return fns


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--repeats", type=int, default=5)
    args = p.parse_args()
    print(describe())
    print(f"jax {jax.__version__}, devices {jax.devices()}")

    rows = args.batch * 1500
    print(f"\nmatmul GFLOP/s (min of {args.repeats}, interleaved)")
    print(f"{'[m, k] x [k, n]':<26}{'f32':>8}{'bf16-out':>10}{'bf16-f32acc':>13}{'acc/f32':>9}{'acc/out':>9}")
    for k, n in ((384, 384), (384, 1536), (1536, 384)):
        t = min_times(matmul_variants(rows, k, n), args.repeats)
        g = {name: 2 * rows * k * n / s / 1e9 for name, s in t.items()}
        shape = f"[{rows}, {k}] x [{k}, {n}]"
        acc = g["bf16-f32acc"]
        print(
            f"{shape:<26}{g['f32']:>8.0f}{g['bf16-out']:>10.0f}{acc:>13.0f}"
            f"{acc / g['f32']:>9.2f}{acc / g['bf16-out']:>9.2f}"
        )

    print(f"\ntiny.en encoder forward, batch {args.batch}")
    t = min_times(encoder_variants(args.batch), args.repeats)
    base = t["f32"]
    for name, s in t.items():
        print(f"  {name:<24} {s:6.2f} s   f32 / this: {base / s:.2f}x")
    ratio = t["bf16-out (Flax Dense)"] / t["bf16-f32acc (model)"]
    print(f"  new / old (bf16-out time / bf16-f32acc time): {ratio:.2f}x")


if __name__ == "__main__":
    main()
