"""Outlier analysis of a Whisper (paper section 3.2, Table 1, Figures 1-2), streamed.

`analyze(model, clips)` teacher-forces the model's own greedy transcripts
(`jaxwhisper.inference.teacher_forcing`) and, through an interceptor on the model's taps (the model is
not edited), reduces every attention output (`.../self_attn/out`, `.../encoder_attn/out`: the
output projection) and every block output (`.../block_out`) of each batch to the sums of
`jaxwhisper.analysis.outlier_stats` inside the jitted forward. Only sums leave the device: memory is
proportional to the hidden size, not to the data. Gate values are histogrammed the same way.

Padding is excluded: encoder frames after the clip's last log-mel frame (Whisper always
encodes 30 s; the padded frames of tiny.en's last encoder layer reach ~630, DESIGN.md) and
decoder positions after the first end-of-text. `include_padding=True` counts them.

`outliers.json` (`analyze`'s result), stable keys:
  model, utterances, padding ("excluded" or "included"), definitions (strings),
  summary: {avg_kurtosis, max_inf_norm} over attention outputs (the paper's Table 1), and
           {avg_kurtosis_all, max_inf_norm_all} over attention and block outputs,
  layers: {POINT: {kurtosis, inf_norm, max_inf_norm, outliers_per_dim, outlier_share}},
  gates: {POINT: {edges, counts, mean}} (gated models),
  attention_sink: {decoder self-attention layer: {mass_on_first_token, value_norm_ratio}}.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Callable, Iterable, Optional

import flax.linen as nn
import flax.traverse_util
import jax
import jax.numpy as jnp
import numpy as np
from tqdm import tqdm

from jaxwhisper.analysis import outlier_stats, plots
from jaxwhisper.data.eval_sets import load_eval_set
from jaxwhisper.inference.teacher_forcing import ForcedBatch, forced_batches
from jaxwhisper.inference.transcribe import Transcriber
from jaxwhisper.models.attention import Tapped
from jaxwhisper.models.config import WhisperConfig
from jaxwhisper.models.whisper import Whisper

log = logging.getLogger(__name__)

COLLECTION = "outliers"
STAT_TAPS = ("out", "block_out")
GATE_BINS = 40
DEFINITIONS = {
    "kurtosis": "Pearson kurtosis E[(x-mu)^4]/sigma^4 (normal = 3, population moments) per "
    "utterance over the tensor's unpadded values, averaged over utterances",
    "inf_norm": "max |x| per utterance, averaged over utterances (max_inf_norm: the largest)",
    "outliers_per_dim": "values more than 6 standard deviations from the utterance's tensor "
    "mean, counted per hidden dimension over all utterances",
    "outlier_share": "outliers / values counted",
    "avg_kurtosis": "mean over attention outputs of their kurtosis (paper Table 1)",
    "max_inf_norm": "max over attention outputs of their inf_norm (paper Table 1)",
    "mass_on_first_token": "attention probability on <|startoftranscript|>, averaged over "
    "heads and unpadded query positions after it",
    "value_norm_ratio": "|v| of <|startoftranscript|> / mean |v| of the other tokens (per "
    "head, averaged); both on the first batch",
}


def attention_points(config: WhisperConfig) -> list[str]:
    pts = [f"encoder/layers_{i}/self_attn/out" for i in range(config.encoder_layers)]
    for i in range(config.decoder_layers):
        pts += [f"decoder/layers_{i}/self_attn/out", f"decoder/layers_{i}/encoder_attn/out"]
    return pts


def _gate_edges(config: WhisperConfig) -> np.ndarray:
    return np.linspace(0.0, 1.0 / config.gate_pi_init, GATE_BINS + 1, dtype=np.float32)


def make_batch_stats(config: WhisperConfig) -> Callable:
    """`stats(params, mel, tokens, encoder_mask, decoder_mask) -> ({point: BatchStats},
    {gate point: counts [GATE_BINS]})`, jitted."""
    model = Whisper(config)
    edges = jnp.asarray(_gate_edges(config))

    @jax.jit
    def stats(params, mel, tokens, encoder_mask, decoder_mask):
        def interceptor(next_fun, args, kwargs, context):
            module = context.module
            if isinstance(module, Tapped) and context.method_name == "tap":
                name, x = args
                path = "/".join(module.path)
                mask = encoder_mask if path.startswith("encoder") else decoder_mask
                if name in STAT_TAPS:
                    module.sow(COLLECTION, f"{path}/{name}", outlier_stats.batch_stats(x, mask))
                elif name == "gate":  # [b, q, 1 or heads]
                    w = jnp.broadcast_to(mask[..., None], x.shape).reshape(-1)
                    counts, _ = jnp.histogram(x.reshape(-1), bins=edges, weights=w)
                    module.sow(COLLECTION, f"{path}/{name}", (counts, jnp.sum(x.reshape(-1) * w), jnp.sum(w)))
            return next_fun(*args, **kwargs)

        with nn.intercept_methods(interceptor):
            _, cols = model.apply({"params": params}, mel, tokens, mutable=[COLLECTION])
        flat = flax.traverse_util.flatten_dict(cols[COLLECTION])
        points, gates = {}, {}
        for key, (value,) in flat.items():  # each tap is called once per forward
            (gates if key[-1].endswith("/gate") else points)[key[-1]] = value
        return points, gates

    return stats


def attention_sink(config: WhisperConfig, params, batch: ForcedBatch) -> dict:
    """Per decoder layer: the attention mass on <|startoftranscript|> (position 0) and the
    relative norm of its value vector (the paper's Fig. 1 pattern, as numbers)."""
    probs, values = _decoder_attention(config, params, batch.mel, batch.tokens)
    mask = batch.decoder_mask
    out = {}
    for layer in range(config.decoder_layers):
        p = probs[layer]  # [b, h, q, k]
        v = np.linalg.norm(values[layer], axis=-1)  # [b, h, k]
        q_mask = mask[:, None, 1:]  # queries after the first token (it can only see itself)
        mass = (p[:, :, 1:, 0] * q_mask).sum() / max(q_mask.sum() * p.shape[1], 1.0)
        k_mask = mask[:, None, 1:]
        others = (v[:, :, 1:] * k_mask).sum(-1) / np.maximum(k_mask.sum(-1), 1.0)
        out[f"decoder/layers_{layer}/self_attn"] = {
            "mass_on_first_token": float(mass),
            "value_norm_ratio": float(np.mean(v[:, :, 0] / np.maximum(others, 1e-12))),
        }
    return out


def _decoder_attention(config: WhisperConfig, params, mel, tokens):
    """Decoder self-attention probabilities [layer][b, h, q, k] and values [layer][b, h, k, d]."""
    model = Whisper(config)

    @jax.jit
    def run(params, mel, tokens):
        # The encoder runs without collecting (its dense probabilities are GBs); only the
        # decoder's taps and value projections are kept.
        kv = model.apply({"params": params}, model.apply({"params": params}, mel, method=Whisper.encode),
                         method=Whisper.cross_kv)  # fmt: skip

        def self_attn_values(mdl, name):
            return name == "__call__" and tuple(mdl.path[-2:]) == ("self_attn", "v_proj")

        _, cols = model.apply(
            {"params": params}, tokens, kv, method=Whisper.decode, mutable=["intermediates"],
            capture_intermediates=self_attn_values,
        )  # fmt: skip
        dec = cols["intermediates"]["decoder"]
        layers = [dec[f"layers_{i}"]["self_attn"] for i in range(config.decoder_layers)]
        b, n = tokens.shape
        probs = [layer["attn_probs"][0] for layer in layers]
        values = [
            layer["v_proj"]["__call__"][0]
            .reshape(b, n, config.n_heads, config.head_dim)
            .transpose(0, 2, 1, 3)
            for layer in layers
        ]
        return probs, values

    probs, values = jax.device_get(run(params, mel, tokens))
    return [np.asarray(p, np.float32) for p in probs], [np.asarray(v, np.float32) for v in values]


def attention_example(config: WhisperConfig, params, batch: ForcedBatch, layer: int, head: int, row: int):
    """The data of the paper's Fig. 1 for one decoder self-attention head and utterance:
    probs [n, n], values [n, head_dim], output probs @ values [n, head_dim] (n: unpadded
    tokens)."""
    if not 0 <= layer < config.decoder_layers or not 0 <= head < config.n_heads:
        raise ValueError(
            f"layer {layer} / head {head} out of range "
            f"({config.decoder_layers} decoder layers, {config.n_heads} heads)"
        )
    probs, values = _decoder_attention(config, params, batch.mel[row : row + 1], batch.tokens[row : row + 1])
    n = int(batch.decoder_mask[row].sum())
    p = probs[layer][0, head, :n, :n]
    v = values[layer][0, head, :n]
    return {"token_ids": batch.tokens[row, :n].tolist(), "probs": p, "values": v, "output": p @ v}


def analyze(
    config: WhisperConfig,
    params,
    batches: Iterable[ForcedBatch],
    include_padding: bool = False,
    progress: Optional[Callable[[int], None]] = None,
) -> dict:
    """Streams `batches` through the model; returns the `outliers.json` dict (without model)."""
    stats_fn = make_batch_stats(config)
    acc: dict = {}
    gates: dict = {}
    utterances = 0
    sink = None
    for batch in batches:
        enc = np.ones_like(batch.encoder_mask) if include_padding else batch.encoder_mask
        dec = np.ones_like(batch.decoder_mask) if include_padding else batch.decoder_mask
        points, gate_sums = jax.device_get(stats_fn(params, batch.mel, batch.tokens, enc, dec))
        for point, s in points.items():
            acc[point] = outlier_stats.merge(acc.get(point), s)
        for point, (counts, total, n) in gate_sums.items():
            c0, t0, n0 = gates.get(point, (0.0, 0.0, 0.0))
            gates[point] = (c0 + np.asarray(counts), t0 + float(total), n0 + float(n))
        if sink is None:
            sink = attention_sink(config, params, batch)
        utterances += batch.tokens.shape[0]
        if progress:
            progress(batch.tokens.shape[0])
    if not utterances:
        raise ValueError("outlier analysis needs at least one clip")
    layers = {point: outlier_stats.summarize(s) for point, s in sorted(acc.items())}
    attn = [layers[p] for p in attention_points(config)]
    edges = _gate_edges(config).tolist()
    return {
        "utterances": utterances,
        "padding": "included" if include_padding else "excluded",
        "definitions": DEFINITIONS,
        "summary": {
            "avg_kurtosis": float(np.mean([s["kurtosis"] for s in attn])),
            "max_inf_norm": float(np.max([s["inf_norm"] for s in attn])),
            "avg_kurtosis_all": float(np.mean([s["kurtosis"] for s in layers.values()])),
            "max_inf_norm_all": float(np.max([s["inf_norm"] for s in layers.values()])),
        },
        "layers": layers,
        "gates": {
            p: {"edges": edges, "counts": c.astype(int).tolist(), "mean": t / max(n, 1.0)}
            for p, (c, t, n) in sorted(gates.items())
        },
        "attention_sink": sink,
    }


def markdown_table(rows: dict[str, dict]) -> str:
    """The paper's Table 1 shape: {label: outliers.json} -> Markdown."""
    lines = ["| model | gate | avg. kurtosis | max. inf. norm |", "|---|---|---|---|"]
    for label, r in rows.items():
        gate = "yes" if r.get("gates") else "no"
        s = r["summary"]
        lines.append(f"| {label} | {gate} | {s['avg_kurtosis']:.1f} | {s['max_inf_norm']:.1f} |")
    return "\n".join(lines)


def token_labels(tokenizer, ids: Iterable[int]) -> list[str]:
    """Readable token strings for figure axes (byte-level BPE's 'Ġ' shown as a space)."""
    return [(tokenizer.tokenizer.id_to_token(int(i)) or f"<{i}>").replace("Ġ", " ") for i in ids]


def run(
    model,
    data_spec: str,
    output: Path,
    batch_size: int = 8,
    max_examples: int = 64,
    include_padding: bool = False,
    layer: int = -1,
    head: int = 0,
    utterance: int = 0,
    show_progress: bool = True,
) -> dict:
    """The `jaxwhisper outliers` job: statistics over the first `max_examples` utterances of
    `data_spec` (0: all), written to `output/outliers.json` with `table.md` and the figures
    (`outlier_share.png`, `attention.png`, `kurtosis.png`, `gates.png` for gated models).
    Clips are teacher-forced in groups, so audio and features of one group at a time are held."""
    config = model.config
    data = load_eval_set(data_spec, max_examples)
    if not data.clips:
        raise ValueError(f"{data_spec}: no usable utterances (skipped: {dict(data.skipped)})")
    output = Path(output)
    output.mkdir(parents=True, exist_ok=True)
    layer = layer % config.decoder_layers
    group = 8 * batch_size
    bar = tqdm(
        total=len(data.clips), unit="clip", desc="outliers", disable=not show_progress, dynamic_ncols=True
    )
    first: list = []
    transcriber = Transcriber(model, batch_size=batch_size)  # one decoder compilation for all groups

    def batches():
        for start in range(0, len(data.clips), group):
            for b in forced_batches(
                model, data.clips[start : start + group], batch_size, transcriber=transcriber
            ):
                if not first:
                    first.append(b)
                yield b

    result = analyze(config, model.params, batches(), include_padding, progress=bar.update)
    bar.close()
    result = {"model": model.source, "data": data_spec, "skipped": dict(data.skipped), **result}
    (output / "outliers.json").write_text(json.dumps(result, indent=1) + "\n")
    (output / "table.md").write_text(markdown_table({model.source: result}) + "\n")

    label = model.source
    fig2_point = f"decoder/layers_{config.decoder_layers - 1}/self_attn/out"
    plots.outlier_share(
        {label: result["layers"][fig2_point]["outliers_per_dim"]}, fig2_point, output / "outlier_share.png"
    )
    plots.kurtosis({label: result["layers"]}, attention_points(config), output / "kurtosis.png")
    if result["gates"]:
        plots.gates({label: result["gates"]}, output / "gates.png")
    batch = first[0]
    row = min(utterance, batch.tokens.shape[0] - 1)
    example = attention_example(config, model.params, batch, layer, head, row)
    tok = transcriber.tokenizer
    title = f"{label}: decoder layer {layer}, head {head}, utterance {data.ids[row]}"
    plots.attention(example, token_labels(tok, example["token_ids"]), title, output / "attention.png")
    return result
