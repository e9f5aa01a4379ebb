"""Float vs fake-quantized W8A8 vs real INT8 (int8 x int8 -> int32 Dense layers). One run.

    python bench/quant_speed.py [--clips 32] [--batch 8] [--ranges runs/quant_tiny_en/ranges/...json]

tiny.en greedy decoding of real speech (the vendored clips): wall time after a warm-up
batch, WER, and the size of the weights serialised as .npz (int8 kernels with scales, zero
points and column sums; everything else float32). Calibrates on the Asterisk prompts (or the
given ranges file) first.

Peer, when qwix is installed (`pip install qwix==0.1.8`): qwix's post-training W8A8 of the
same Dense layers (google/qwix, AQT's successor): int8 kernels per output channel, and each
activation quantized at run time per token (dynamic, symmetric) where ours uses ranges
calibrated beforehand (static, per tensor, the paper's). Decoded by the same decoder
(`Transcriber(module=...)`); its size is the bytes of its param tree (the token embedding
stays float32 there).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import jax
from machine import describe  # bench/machine.py (the script's folder is on sys.path)

from jaxwhisper.data.eval_sets import load_eval_set
from jaxwhisper.evaluation.wer import word_error_rate
from jaxwhisper.inference.transcribe import Transcriber
from jaxwhisper.models.weights.base import LoadedModel
from jaxwhisper.models.weights.resolve import resolve_model
from jaxwhisper.quant import fakequant, int8
from jaxwhisper.quant.calibrate import Calibration, calibrate_on_audio
from jaxwhisper.quant.config import QuantConfig

try:
    import qwix
except ImportError:  # the peer row is optional
    qwix = None

REPO = Path(__file__).resolve().parent.parent
QWIX_DENSE = r".*/(q_proj|k_proj|v_proj|out_proj|fc1|fc2)"


def qwix_w8a8(model: LoadedModel):
    """(module, params): `model` quantized by qwix's PTQ, int8 weights and dynamic int8
    activations in the Dense layers that ours quantizes to int8."""
    import jax.numpy as jnp

    from jaxwhisper.models.whisper import Whisper

    rule = qwix.QuantizationRule(
        module_path=QWIX_DENSE, op_names=("dot_general",), weight_qtype="int8", act_qtype="int8"
    )
    provider = qwix.PtqProvider([rule])
    methods = ("__call__", "encode", "cross_kv", "decode")  # what init and the decoder call
    module = qwix.quantize_model(Whisper(model.config), provider, methods=methods)
    c = model.config
    mel, tokens = jnp.zeros((1, c.n_mels, c.n_frames)), jnp.zeros((1, 3), jnp.int32)
    abstract = jax.eval_shape(module.init, jax.random.key(0), mel, tokens)["params"]
    if provider.get_unused_rules():
        raise RuntimeError(f"qwix rules matched nothing: {provider.get_unused_rules()}")
    return module, qwix.quantize_params(jax.tree.map(jnp.asarray, model.params), abstract)


PROMPTS = REPO.parent / "shared" / "data" / "prompts" / "manifest.jsonl"


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--clips", type=int, default=32)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--ranges", help="a ranges file from quantize.py (default: calibrate now)")
    args = p.parse_args()

    model = resolve_model("tiny.en")
    data = load_eval_set(str(REPO / "data/fixture/manifest.jsonl"), args.clips)
    q = QuantConfig(calibration_batches=4)
    if args.ranges:
        ranges = Calibration.load(Path(args.ranges)).ranges
    else:
        calib = load_eval_set(str(PROMPTS if PROMPTS.exists() else REPO / "data/fixture/manifest.jsonl"), 32)
        ranges = calibrate_on_audio(model, calib.clips, q, args.batch).ranges
    qparams = fakequant.quantize_params(model.params, q)
    kernels = int8.int8_kernels(model.params, q)
    quantized = LoadedModel(model.config, qparams, model.tokenizer_dir, model.source)
    systems = {
        "float32": Transcriber(model, batch_size=args.batch),
        "w8a8 fake-quant (float matmuls)": Transcriber(
            quantized,
            batch_size=args.batch,
            intercept=lambda _: fakequant.activation_interceptor(ranges, q, model.config),
        ),
        "w8a8 integer Dense emulated in f32": Transcriber(
            quantized,
            batch_size=args.batch,
            intercept=lambda k: int8.integer_dense_interceptor(k, ranges, q, model.config, real=False),
            intercept_state=kernels,
        ),
        "w8a8 real int8 Dense": Transcriber(
            quantized,
            batch_size=args.batch,
            intercept=lambda k: int8.integer_dense_interceptor(k, ranges, q, model.config, real=True),
            intercept_state=kernels,
        ),
    }
    small, big = int8.serialized_size(kernels, model.params)
    sizes = {name: small if "real int8" in name else big for name in systems}
    if qwix is not None:
        module, qparams = qwix_w8a8(model)
        name = f"qwix {qwix.__version__} W8A8 Dense, dynamic per-token activations (peer)"
        peer = LoadedModel(model.config, qparams, model.tokenizer_dir, model.source)
        systems[name] = Transcriber(peer, batch_size=args.batch, module=module)
        sizes[name] = sum(x.nbytes for x in jax.tree.leaves(qparams))
    else:
        print("qwix not installed: no peer row (pip install qwix==0.1.8)")
    print(describe())
    print(f"tiny.en, {len(data.clips)} clips ({data.audio_s:.0f} s), batch {args.batch}, {jax.devices()[0]}")
    print("\n| system | wall s | audio-s/s | vs float32 | WER % | weights on disk MB | decode temp MB |")
    print("|---|---|---|---|---|---|---|")
    float_wall = None
    for name, t in systems.items():
        t.transcribe_arrays(data.clips[: args.batch])  # compile
        t0 = time.perf_counter()
        hyps = t.transcribe_arrays(data.clips)
        wall = time.perf_counter() - t0
        float_wall = float_wall or wall  # the first system is the float peer
        wer = word_error_rate(data.references, hyps).wer
        size = sizes[name]
        # XLA's buffer assignment for one decoding batch: activations, caches and workspace
        # (the weights and the int8 kernels are arguments of the program, not counted).
        audio, lengths = t._batch_arrays(data.clips[: args.batch])
        temp = t._run.lower(t._weights(), audio, lengths).compile().memory_analysis().temp_size_in_bytes
        print(
            f"| {name} | {wall:.1f} | {data.audio_s / wall:.2f} | {float_wall / wall:.2f}x | {wer:.2f} "
            f"| {size / 1e6:.1f} | {temp / 1e6:.0f} |"
        )


if __name__ == "__main__":
    main()
