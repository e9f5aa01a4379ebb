"""Typed Whisper architecture config, one preset per official size.

Teacher and student are the same `Whisper` module; they differ only by this config
(layer counts, gate type). Unknown keys are rejected so that a typo in an experiment
config is an error, not a silently ignored setting.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping, Optional

GATE_TYPES = ("none", "shared", "per_head")


@dataclasses.dataclass(frozen=True)
class WhisperConfig:
    """Architecture and numerics of one Whisper encoder-decoder.

    Attributes:
      n_mels: mel bins of the input features (80; 128 for large-v3).
      n_audio_ctx: encoder positions after the stride-2 convolution (1500 for 30 s).
      n_text_ctx: decoder positions (448).
      n_vocab: vocabulary size (51864 for `.en`, 51865 multilingual, 51866 large-v3).
      d_model: hidden size.
      n_heads: attention heads.
      encoder_layers: encoder blocks.
      decoder_layers: decoder blocks.
      ffn_dim: hidden size of the MLP (4 * d_model in every official model).
      gate: `none` | `shared` (one Linear(d_model -> 1) for all heads, the paper's
        choice) | `per_head` (one Linear(d_head -> 1) per head, Bondarenko et al.).
      gate_pi_init: the gate's initial open probability; the gate output is scaled by
        1 / gate_pi_init so that it starts near 1 (fine-tuning mode).
      gate_init_std: std of the gate weights' normal initialisation.
      gated_encoder: False keeps the encoder's attention ungated whatever `gate` says (a
        student whose encoder is its teacher's, frozen: gates only in the decoder).
      gated_cross_attention: False keeps the decoder's cross-attention ungated (gates only
        in self-attention, the blocks of the paper's eq. 3-4).
      softmax_clip_gamma: clipped softmax lower stretch (<= 0; 0 disables).
      softmax_clip_zeta: clipped softmax upper stretch (>= 1; 1 disables).
      dtype: compute dtype ("float32" or "bfloat16"): the operands of every matmul; in
        bfloat16 they accumulate in float32 (models/precision.py). Softmax, LayerNorm, the
        residual stream and the logits stay f32.
      param_dtype: parameter dtype.
      kv_dtype: dtype of the keys and values that decoding keeps (cross-attention keys and
        values, the self-attention cache) and of the attention products outside the
        encoder's tiled path; None means `dtype`. Inference on CPU sets float32 for a
        bfloat16 model (`precision.inference_config`): XLA:CPU runs the one-query bf16
        products of a decoding step on a slow path.
      remat: recompute each residual block's activations in the backward pass
        (`nn.remat`) instead of keeping them: training memory for compute; the forward
        values are unchanged.
    """

    n_mels: int = 80
    n_audio_ctx: int = 1500
    n_text_ctx: int = 448
    n_vocab: int = 51864
    d_model: int = 384
    n_heads: int = 6
    encoder_layers: int = 4
    decoder_layers: int = 4
    ffn_dim: int = 1536
    gate: str = "none"
    # Chosen by what learns (README, "Gate initialisation"): at 0.99 the sigmoid's slope is
    # 0.0099 and gates stay put; at 0.5 (Bondarenko et al.'s default) they may double an
    # attention output, and 4+3 tiny.en students looped on 2 seeds of 3 (68-72% WER); at 0.9
    # (at most 1.11x) they moved (mean 0.83-1.10 per layer) and no seed looped (17.7-27.6%).
    # With weights ~ N(0, 0.01) tiny.en's logits move about 9% when gates are added to every
    # layer: the students above were distilled from that start.
    gate_pi_init: float = 0.9
    gate_init_std: float = 0.01
    softmax_clip_gamma: float = 0.0
    softmax_clip_zeta: float = 1.0
    dtype: str = "float32"
    param_dtype: str = "float32"
    kv_dtype: Optional[str] = None
    remat: bool = False
    gated_encoder: bool = True
    gated_cross_attention: bool = True

    def __post_init__(self):
        if self.gate not in GATE_TYPES:
            raise ValueError(f"gate must be one of {GATE_TYPES}, got {self.gate!r}")
        if self.d_model % self.n_heads:
            raise ValueError(f"d_model ({self.d_model}) must be divisible by n_heads ({self.n_heads})")
        if not 0.0 < self.gate_pi_init < 1.0:
            raise ValueError(f"gate_pi_init must be in (0, 1), got {self.gate_pi_init}")
        if self.softmax_clip_gamma > 0 or self.softmax_clip_zeta < 1:
            raise ValueError(
                "clipped softmax needs softmax_clip_gamma <= 0 and softmax_clip_zeta >= 1, "
                f"got gamma={self.softmax_clip_gamma}, zeta={self.softmax_clip_zeta}"
            )
        for name in ("dtype", "param_dtype"):
            if getattr(self, name) not in ("float32", "bfloat16", "float16"):
                raise ValueError(f"{name} must be float32, bfloat16 or float16")
        if self.kv_dtype not in (None, "float32", "bfloat16", "float16"):
            raise ValueError("kv_dtype must be None, float32, bfloat16 or float16")

    @property
    def head_dim(self) -> int:
        return self.d_model // self.n_heads

    @property
    def attention_dtype(self) -> str:
        """The dtype of decoding's keys/values and of the untiled attention products."""
        return self.kv_dtype or self.dtype

    @property
    def is_multilingual(self) -> bool:
        return self.n_vocab >= 51865

    @property
    def n_frames(self) -> int:
        """Mel frames of the model's window (2 * n_audio_ctx): 3000, 30 s, for Whisper."""
        return 2 * self.n_audio_ctx

    def replace(self, **changes: Any) -> "WhisperConfig":
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "WhisperConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"unknown WhisperConfig keys: {unknown}")
        return cls(**dict(d))


def _size(d_model, n_heads, layers, n_vocab, n_mels=80):
    return WhisperConfig(
        n_mels=n_mels,
        n_vocab=n_vocab,
        d_model=d_model,
        n_heads=n_heads,
        encoder_layers=layers,
        decoder_layers=layers,
        ffn_dim=4 * d_model,
    )


_EN, _MULTI, _V3 = 51864, 51865, 51866

PRESETS: dict[str, WhisperConfig] = {
    "tiny.en": _size(384, 6, 4, _EN),
    "tiny": _size(384, 6, 4, _MULTI),
    "base.en": _size(512, 8, 6, _EN),
    "base": _size(512, 8, 6, _MULTI),
    "small.en": _size(768, 12, 12, _EN),
    "small": _size(768, 12, 12, _MULTI),
    "medium.en": _size(1024, 16, 24, _EN),
    "medium": _size(1024, 16, 24, _MULTI),
    "large-v1": _size(1280, 20, 32, _MULTI),
    "large-v2": _size(1280, 20, 32, _MULTI),
    "large-v3": _size(1280, 20, 32, _V3, n_mels=128),
    "large-v3-turbo": _size(1280, 20, 32, _V3, n_mels=128).replace(decoder_layers=4),
}
PRESETS["large"] = PRESETS["large-v2"]


def preset(name: str, **overrides: Any) -> WhisperConfig:
    """Returns the config of an official size, e.g. `preset("tiny.en", gate="shared")`."""
    if name not in PRESETS:
        raise ValueError(f"unknown Whisper size {name!r}; known: {sorted(PRESETS)}")
    return PRESETS[name].replace(**overrides)
