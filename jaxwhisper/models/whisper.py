"""Flax linen Whisper: one `Whisper` module for teachers and students.

Parameter names follow Hugging Face's `WhisperForConditionalGeneration` (`encoder/layers_0/
self_attn/q_proj/kernel`, ...), so that loaders are small name maps. Every block sows its
output as `block_out` into the `intermediates` collection; attention modules sow theirs
(see attention.py). These are `tap` points (attention.Tapped): residual sums
(`residual_self_attn`, `residual_cross_attn`, `block_out`), the embedding sums (`embed`) and
the decoder's `logits`; interceptors record or replace them (quantization, statistics).
"""

from __future__ import annotations

import functools
from typing import Optional, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jaxwhisper.models import precision
from jaxwhisper.models.attention import KVCache, MultiHeadAttention, Tapped
from jaxwhisper.models.config import WhisperConfig


def sinusoids(length: int, channels: int, max_timescale: float = 10000.0) -> np.ndarray:
    """Whisper's encoder positions [length, channels]: [sin | cos] at geometric timescales."""
    log_inc = np.log(max_timescale) / (channels // 2 - 1)
    inv = np.exp(-log_inc * np.arange(channels // 2))
    t = np.arange(length)[:, None] * inv[None, :]
    return np.concatenate([np.sin(t), np.cos(t)], axis=1).astype(np.float32)


@jax.custom_vjp
def gelu(x: jax.Array) -> jax.Array:
    """Exact GELU `0.5 x (1 + erf(x / sqrt 2))`, Whisper's activation as PyTorch computes it.

    PyTorch's (and so OpenAI's and CTranslate2's) formula, not `jax.nn.gelu(x, False)`'s
    `0.5 x erfc(-x / sqrt 2)`: XLA:CPU evaluates erfc 2.2x slower than erf (tiny.en's
    encoder runs GELU on 11.5M values per window). Both are within 1.1e-6 of the float64
    function; the erf form's relative error grows in the far negative tail (3.4e-4 where
    |GELU| ~ 1e-3, PyTorch's own 9.3e-4), where the values are negligible next to the
    positive ones they are summed with.

    The backward pass: the derivative `Phi(x) + x * phi(x)` is formed once in the forward
    pass and saved in place of `x` (same memory); XLA on CPU otherwise re-evaluates the
    long polynomial in several fusions of the backward pass (the tiny.en MLP's forward +
    backward took 3x as long, batch 8, 2 cores).
    """
    return _gelu_fwd(x)[0]


def _gelu_fwd(x):
    cdf = 0.5 + 0.5 * jax.lax.erf(x * np.sqrt(0.5).astype(x.dtype))
    deriv = cdf + x * jnp.exp(-0.5 * x * x) * np.asarray(1 / np.sqrt(2 * np.pi), x.dtype)
    return x * cdf, deriv


def _gelu_bwd(deriv, g):
    return (g * deriv,)


gelu.defvjp(_gelu_fwd, _gelu_bwd)


def _layer_norm(c: WhisperConfig, name: str) -> nn.LayerNorm:
    # LayerNorm runs in f32 whatever the compute dtype, with the two-pass variance: padding
    # frames carry activations in the hundreds, where E[x^2] - E[x]^2 loses digits.
    return nn.LayerNorm(
        epsilon=1e-5, dtype=jnp.float32, param_dtype=c.param_dtype, use_fast_variance=False, name=name
    )


class MLP(nn.Module):
    config: WhisperConfig

    @nn.compact
    def __call__(self, x):
        c = self.config
        # In bf16 the Dense results are float32 (see precision.py): GELU runs on them in
        # float32 and fc2 rounds its input to bf16 once.
        x = precision.dense(c.ffn_dim, c.dtype, c.param_dtype, name="fc1")(x)
        x = gelu(x)
        return precision.dense(c.d_model, c.dtype, c.param_dtype, name="fc2")(x)


class ResidualBlock(Tapped):
    """Pre-LN block: self-attention, (cross-attention), MLP, each with a residual."""

    config: WhisperConfig
    cross_attention: bool = False

    def setup(self):
        c = self.config
        self.self_attn_layer_norm = _layer_norm(c, "self_attn_layer_norm")
        self.self_attn = MultiHeadAttention(c, causal=self.cross_attention, name="self_attn")
        if self.cross_attention:
            self.encoder_attn_layer_norm = _layer_norm(c, "encoder_attn_layer_norm")
            cross = c if c.gated_cross_attention else c.replace(gate="none")
            self.encoder_attn = MultiHeadAttention(cross, name="encoder_attn")
        self.final_layer_norm = _layer_norm(c, "final_layer_norm")
        self.mlp = MLP(c, name="mlp")

    def cross_kv(self, encoder_out: jax.Array) -> tuple[jax.Array, jax.Array]:
        return self.encoder_attn.project_kv(encoder_out)

    def __call__(self, x, cross_kv=None, cache: Optional[KVCache] = None, offset=0):
        # In a low-precision dtype the attention and MLP outputs are float32 (precision.py),
        # so the residual sums, and the stream from the first block on, are float32.
        dt = self.config.dtype
        h, cache = self.self_attn(self.self_attn_layer_norm(x).astype(dt), cache=cache, offset=offset)
        x = self.tap("residual_self_attn", x + h)
        if self.cross_attention:
            h, _ = self.encoder_attn(self.encoder_attn_layer_norm(x).astype(dt), kv=cross_kv)
            x = self.tap("residual_cross_attn", x + h)
        x = x + self.mlp(self.final_layer_norm(x).astype(dt))
        return self.tap("block_out", x), cache


def _block_class(config: WhisperConfig) -> type[ResidualBlock]:
    # Same parameter names either way, so checkpoints do not depend on the remat setting.
    return nn.remat(ResidualBlock) if config.remat else ResidualBlock


class AudioEncoder(Tapped):
    """Log-mel [batch, n_mels, frames] -> hidden states [batch, frames // 2, embed]."""

    config: WhisperConfig

    def setup(self):
        c = self.config if self.config.gated_encoder else self.config.replace(gate="none")
        conv = lambda name, stride: nn.Conv(  # noqa: E731
            c.d_model,
            (3,),
            strides=(stride,),
            padding=[(1, 1)],
            dtype=c.dtype,
            param_dtype=c.param_dtype,
            name=name,
        )
        self.conv1 = conv("conv1", 1)
        self.conv2 = conv("conv2", 2)
        # A parameter (not a constant) because converted checkpoints store their own copy
        # (float16 in CTranslate2); it is frozen through stop_gradient below.
        self.embed_positions = self.param(
            "embed_positions",
            lambda *_: jnp.asarray(sinusoids(c.n_audio_ctx, c.d_model), c.param_dtype),
        )
        block = _block_class(c)
        self.layers = [block(c, name=f"layers_{i}") for i in range(c.encoder_layers)]
        self.layer_norm = _layer_norm(c, "layer_norm")

    def __call__(self, mel: jax.Array) -> jax.Array:
        c = self.config
        if mel.shape[2] > c.n_frames:
            raise ValueError(f"{mel.shape[2]} mel frames do not fit the model's window of {c.n_frames}")
        x = jnp.swapaxes(mel, 1, 2).astype(c.dtype)
        x = gelu(self.conv1(x))
        x = gelu(self.conv2(x))
        pos = jax.lax.stop_gradient(self.embed_positions)[: x.shape[1]]
        x = self.tap("embed", (x + pos.astype(c.dtype)).astype(c.dtype))
        for layer in self.layers:
            x, _ = layer(x)
        return self.layer_norm(x).astype(c.dtype)


class TextDecoder(Tapped):
    """Tokens [batch, len] + encoder keys/values -> logits [batch, len, vocab] (f32)."""

    config: WhisperConfig

    def setup(self):
        c = self.config
        self.embed_tokens = precision.Embed(
            c.n_vocab,
            c.d_model,
            embedding_init=nn.initializers.normal(0.02),
            dtype=c.dtype,
            param_dtype=c.param_dtype,
            name="embed_tokens",
        )
        self.embed_positions = self.param(
            "embed_positions", nn.initializers.normal(0.02), (c.n_text_ctx, c.d_model), c.param_dtype
        )
        block = _block_class(c)
        self.layers = [block(c, cross_attention=True, name=f"layers_{i}") for i in range(c.decoder_layers)]
        self.layer_norm = _layer_norm(c, "layer_norm")

    def cross_kv(self, encoder_out: jax.Array) -> list[tuple[jax.Array, jax.Array]]:
        """Per-layer cross-attention keys/values, computed once per utterance."""
        return [layer.cross_kv(encoder_out) for layer in self.layers]

    def __call__(
        self,
        tokens: jax.Array,
        cross_kv: Sequence[tuple[jax.Array, jax.Array]],
        cache: Optional[list[KVCache]] = None,
        offset: jax.Array | int = 0,
    ) -> tuple[jax.Array, Optional[list[KVCache]]]:
        c = self.config
        if jnp.ndim(offset) == 0:
            pos = jax.lax.dynamic_slice_in_dim(self.embed_positions, offset, tokens.shape[1])
        else:  # [batch] offsets: each row at its own position
            pos = self.embed_positions[jnp.reshape(offset, (-1, 1)) + jnp.arange(tokens.shape[1])]
        x = self.tap("embed", (self.embed_tokens(tokens) + pos.astype(c.dtype)).astype(c.dtype))
        new_cache = [] if cache is not None else None
        for i, layer in enumerate(self.layers):
            # Positional: nn.remat traces positional arguments only.
            x, layer_cache = layer(x, cross_kv[i], None if cache is None else cache[i], offset)
            if cache is not None:
                new_cache.append(layer_cache)
        logits = self.output_logits(self.layer_norm(x))
        return self.tap("logits", logits), new_cache

    def output_logits(self, x: jax.Array) -> jax.Array:
        """The output projection, tied to the token embedding, in f32: x [batch, len, embed]
        -> logits [batch, len, vocab]. A method of its own so that an interceptor can compute
        it another way (integer inference: `jaxwhisper.quant.int8`).

        In a low-precision model the operands are rounded to the compute dtype and the
        products summed in f32, as in every other matmul (precision.py): the projection
        reads the [vocab, embed] table once per decoding step, and in bf16 it reads half
        the bytes."""
        c = self.config
        dtype = c.dtype if precision.is_low_precision(c.dtype) else jnp.float32
        table = self.embed_tokens.embedding
        if self.has_variable("cast", "embedding"):  # stored in `dtype` for decoding
            table = self.get_variable("cast", "embedding")
        return precision.tied_logits(x, table, jnp.dtype(dtype))


class Whisper(nn.Module):
    """Whisper encoder-decoder; teacher and student differ only by `config`."""

    config: WhisperConfig

    def setup(self):
        self.encoder = AudioEncoder(self.config, name="encoder")
        self.decoder = TextDecoder(self.config, name="decoder")

    def __call__(self, mel: jax.Array, tokens: jax.Array) -> jax.Array:
        """Teacher-forced logits [batch, len, vocab] for mel [batch, n_mels, frames]."""
        enc = self.encoder(mel)
        logits, _ = self.decoder(tokens, self.decoder.cross_kv(enc))
        return logits

    def encode(self, mel: jax.Array) -> jax.Array:
        return self.encoder(mel)

    def cross_kv(self, encoder_out: jax.Array):
        return self.decoder.cross_kv(encoder_out)

    def decode(self, tokens, cross_kv, cache=None, offset=0):
        return self.decoder(tokens, cross_kv, cache=cache, offset=offset)


def init_kv_cache(config: WhisperConfig, batch: int, max_len: Optional[int] = None) -> list[KVCache]:
    """Zeroed self-attention caches, one per decoder layer, [batch, heads, max_len, head_dim]."""
    shape = (batch, config.n_heads, max_len or config.n_text_ctx, config.head_dim)
    return [
        {"k": jnp.zeros(shape, config.attention_dtype), "v": jnp.zeros(shape, config.attention_dtype)}
        for _ in range(config.decoder_layers)
    ]


def init_params(config: WhisperConfig, rng: jax.Array, batch: int = 1) -> dict:
    """Randomly initialised params (shapes only matter for loaders; use eval_shape for big sizes)."""
    # Two encoder positions: no parameter's shape or value depends on the input's length
    # (positions are sliced from the full table), and a 30 s forward run op by op to create
    # the parameters costs seconds.
    mel = jnp.zeros((batch, config.n_mels, 4), jnp.float32)
    tokens = jnp.zeros((batch, 1), jnp.int32)
    return Whisper(config).init(rng, mel, tokens)["params"]


def param_shapes(config: WhisperConfig) -> dict:
    """Abstract params (jax.ShapeDtypeStruct leaves) without allocating memory; a fresh dict
    per call (the caller may change it)."""
    return jax.tree.map(lambda s: s, _param_shapes(config))


@functools.lru_cache(maxsize=64)
def _param_shapes(config: WhisperConfig) -> dict:
    # Tracing the whole model for its shapes takes seconds, and every load of a checkpoint
    # checks against them: a teacher and its student are loaded again at each resume.
    return jax.eval_shape(lambda r: init_params(config, r), jax.random.PRNGKey(0))
