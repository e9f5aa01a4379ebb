"""What is quantized, and how: one frozen dataclass, with named presets (`w8a8`, `w4a8`, ...).

Activation points are named `MODULE_PATH/POINT`, e.g. `encoder/layers_3/mlp/fc2/output`,
`decoder/layers_1/self_attn/attn_probs`, `decoder/embed`:
  - every `nn.Dense` and `nn.Conv`: `.../input` and `.../output`;
  - every LayerNorm and the token embedding: `.../output`;
  - the taps of the model (`jaxwhisper.models.attention.Tapped`): attention `attn_scores`,
    `attn_probs`, `context`, `out`, `gate`; block residual sums `residual_self_attn`,
    `residual_cross_attn`, `block_out`; the embedding sums `embed`; the decoder's `logits`.
Exclusions are fnmatch patterns over these names; `{last_encoder_layer}` is replaced by the
index of the model's last encoder layer.
"""

from __future__ import annotations

import dataclasses
import fnmatch
from typing import Any, Mapping

# The paper (section 2.2): activations of the last encoder layer's final output projection
# and of the final encoder LayerNorm stay in float. Read here as the projection's output and
# the residual sum it feeds (the layer's output, the LayerNorm's input: the "relatively large
# dynamic range" the paper names sits there; in tiny.en it spans -655..145, 5x any other
# point). The LayerNorm's output is also the input of every decoder layer's cross-attention
# key/value projections: excluded there too, or their input quantizers would quantize it.
PAPER_EXCLUSION = (
    "encoder/layers_{last_encoder_layer}/mlp/fc2/output",
    "encoder/layers_{last_encoder_layer}/block_out",
    "encoder/layer_norm/output",
    "decoder/layers_*/encoder_attn/k_proj/input",
    "decoder/layers_*/encoder_attn/v_proj/input",
)
# Gates stay in float (Bondarenko et al. 2023 do; the DESIGN allows it): one scalar per token.
GATE_EXCLUSION = ("*/gate_proj/*", "*/gate")
# The logits feed only the argmax: an INT8 engine dequantizes the int32 accumulator of the
# last matmul and never requantizes it (there is no next integer layer). Quantizing them to
# 8 bits makes near-tied tokens swap, which no deployment does (`quantize_logits` to measure).
LOGITS = ("decoder/logits",)

ESTIMATORS = ("minmax_ema", "percentile", "mse")


@dataclasses.dataclass(frozen=True)
class QuantConfig:
    """Attributes:
    weight_bits: bits of every weight matrix, convolution kernel and embedding (0: float).
    act_bits: bits of every activation point (0: float).
    weight_per_channel: one range per output channel (Dense/Conv kernels: last axis;
      embeddings: per row) instead of per tensor.
    weight_symmetric, act_symmetric: symmetric grid without a zero point.
    estimator: activation range per batch, then averaged over batches with the EMA:
      "minmax_ema" (the paper: the batch's min and max), "percentile" (the batch's
      (100 - p)th and pth percentiles), "mse" (the min/max scaled by the clipping ratio with
      the least quantization MSE on the batch). See `fakequant.batch_range`.
    percentile: p of the percentile estimator.
    momentum: EMA momentum of the running range (paper: 0.9).
    calibration_batches: batches of calibration data (paper: 16).
    paper_exclusion: keep the paper's excluded activations in float.
    exclude: further activation points kept in float (fnmatch patterns).
    quantize_gates: also quantize the gates (default: float, as Bondarenko).
    quantize_logits: also quantize the decoder's output logits (default: float).
    real_int8: run the quantized Dense layers as int8 x int8 -> int32 matmuls on int8 weights
      (`jaxwhisper.quant.int8`) instead of emulating them in float32; needs w8a8.
    smoothquant: before calibration, migrate activation outliers from each block's LayerNorm
      outputs into the weights that consume them (`jaxwhisper.quant.smoothquant`).
    smooth_alpha: SmoothQuant's migration strength alpha (paper: 0.5).
    """

    weight_bits: int = 8
    act_bits: int = 8
    weight_per_channel: bool = False
    weight_symmetric: bool = False
    act_symmetric: bool = False
    estimator: str = "minmax_ema"
    percentile: float = 99.99
    momentum: float = 0.9
    calibration_batches: int = 16
    paper_exclusion: bool = True
    exclude: tuple = ()
    quantize_gates: bool = False
    quantize_logits: bool = False
    real_int8: bool = False
    smoothquant: bool = False
    smooth_alpha: float = 0.5

    def __post_init__(self):
        for name in ("weight_bits", "act_bits"):
            bits = getattr(self, name)
            if bits and not 2 <= bits <= 16:
                raise ValueError(f"{name} must be 0 (float) or in [2, 16], got {bits}")
        if self.estimator not in ESTIMATORS:
            raise ValueError(f"estimator must be one of {ESTIMATORS}, got {self.estimator!r}")
        if not 50.0 < self.percentile <= 100.0:
            raise ValueError(f"percentile must be in (50, 100], got {self.percentile}")
        if not 0.0 <= self.momentum < 1.0:
            raise ValueError(f"momentum must be in [0, 1), got {self.momentum}")
        if self.real_int8 and (self.weight_bits != 8 or self.act_bits != 8):
            raise ValueError("real_int8 needs 8-bit weights and 8-bit activations")
        if not 0.0 <= self.smooth_alpha <= 1.0:
            raise ValueError(f"smooth_alpha must be in [0, 1], got {self.smooth_alpha}")
        if self.calibration_batches < 1:
            raise ValueError("calibration_batches must be at least 1")

    @property
    def name(self) -> str:
        tag = f"w{self.weight_bits or 32}a{self.act_bits or 32}"
        if self.weight_per_channel:
            tag += "-per-channel"
        if self.estimator != "minmax_ema":
            tag += f"-{self.estimator}"
        if self.smoothquant:
            tag += "-smoothquant" + ("" if self.smooth_alpha == 0.5 else f"{self.smooth_alpha:g}")
        if not self.paper_exclusion:
            tag += "-no-exclusion"
        if self.real_int8:
            tag += "-real-int8"
        return tag

    def exclusion_patterns(self, encoder_layers: int) -> tuple[str, ...]:
        patterns = tuple(self.exclude)
        if self.paper_exclusion:
            patterns += tuple(p.format(last_encoder_layer=encoder_layers - 1) for p in PAPER_EXCLUSION)
        if not self.quantize_gates:
            patterns += GATE_EXCLUSION
        if not self.quantize_logits:
            patterns += LOGITS
        return patterns

    def is_excluded(self, point: str, encoder_layers: int) -> bool:
        return any(fnmatch.fnmatchcase(point, p) for p in self.exclusion_patterns(encoder_layers))

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "QuantConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"unknown quantization config key(s) {unknown}; known: {sorted(known)}")
        d = dict(d)
        if "exclude" in d:
            d["exclude"] = tuple(d["exclude"])
        return cls(**d)


PRESETS: dict[str, QuantConfig] = {
    "w8a8": QuantConfig(),
    "w8a8-no-exclusion": QuantConfig(paper_exclusion=False),
    "w8a8-per-channel": QuantConfig(weight_per_channel=True),
    "w8a8-real-int8": QuantConfig(real_int8=True),
    "w8a8-per-channel-real-int8": QuantConfig(weight_per_channel=True, real_int8=True),
    "w4a8": QuantConfig(weight_bits=4),
    "w4a8-per-channel": QuantConfig(weight_bits=4, weight_per_channel=True),
    "w8a8-smoothquant": QuantConfig(smoothquant=True),
    "w8a8-per-channel-smoothquant": QuantConfig(weight_per_channel=True, smoothquant=True),
    "w8a8-percentile": QuantConfig(estimator="percentile"),
    "w8a8-mse": QuantConfig(estimator="mse"),
    "w8a16": QuantConfig(act_bits=16),
    "w8a32": QuantConfig(act_bits=0),
    "w32a8": QuantConfig(weight_bits=0),
}


def preset(name: str) -> QuantConfig:
    if name not in PRESETS:
        raise ValueError(f"unknown quantization {name!r}; known: {', '.join(PRESETS)}")
    return PRESETS[name]
