"""Typed experiment configs: an `ml_collections.ConfigDict` validated into frozen dataclasses.

Config files (`configs/*.py`) return a ConfigDict; `train_config_from_dict` turns it into a
`TrainConfig`, rejecting unknown keys with the path of the offending key and checking the
cross-field rules once (derived values such as the per-process batch live here).
"""

from __future__ import annotations

import dataclasses
import typing
from typing import Any, Mapping, Optional

from jaxwhisper.models.config import GATE_TYPES
from jaxwhisper.train.optim import OptimizerConfig


@dataclasses.dataclass(frozen=True)
class StudentConfig:
    """Attributes:
    encoder_layers, decoder_layers: student depth.
    layer_map: "paper" (every k-th teacher encoder layer from the first) or "linspace".
    gate: "none" | "shared" | "per_head".
    dtype: compute dtype; params and optimizer state stay float32 (mixed precision).
    remat: recompute block activations in the backward pass (memory for compute).
    """

    encoder_layers: int = 2
    decoder_layers: int = 2
    layer_map: str = "paper"
    gate: str = "shared"
    dtype: str = "float32"
    remat: bool = False

    def __post_init__(self):
        if self.gate not in GATE_TYPES:
            raise ValueError(f"student.gate must be one of {GATE_TYPES}, got {self.gate!r}")


@dataclasses.dataclass(frozen=True)
class DataConfig:
    """Attributes:
    train: data specs of the training mixture.
    weights: mixture weights (empty: proportional to size).
    eval: data specs of the validation sets (WER each; the mean selects the best checkpoint).
    max_label_len: decoder positions per training row.
    max_audio_s: longest training clip.
    max_drop_fraction: the run fails when more of the data seen so far is unusable.
    seed: data order seed.
    max_eval_examples: cap per validation set (0: all).
    """

    train: tuple = ()
    weights: tuple = ()
    eval: tuple = ()
    max_label_len: int = 128
    max_audio_s: float = 30.0
    max_drop_fraction: float = 0.2
    seed: int = 0
    max_eval_examples: int = 0


@dataclasses.dataclass(frozen=True)
class LossConfig:
    temperature: float = 2.0
    ce_weight: float = 0.8
    kl_weight: float = 1.0


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Attributes:
    teacher: model spec of the frozen teacher.
    teacher_dtype: the teacher's compute dtype (bfloat16 halves its cost; it gets no gradients).
    global_batch: rows per micro-step over all devices and hosts.
    total_steps: micro-steps to run.
    mesh_fsdp: devices that shard params and optimizer state; the rest is data parallel.
    eval_every_steps, checkpoint_every_steps, log_every_steps: intervals (0 disables eval).
    keep_best: checkpoints kept by lowest validation WER (plus the latest).
    eval_batch_size: rows per decoding call in validation.
    max_nan_skips: 0 aborts on the first non-finite loss; N > 0 skips up to N non-finite
      micro-steps over the run (`optax.apply_if_finite`, counted) and aborts on the next.
    """

    teacher: str = "tiny.en"
    teacher_dtype: str = "float32"
    student: StudentConfig = StudentConfig()
    data: DataConfig = DataConfig()
    optimizer: OptimizerConfig = OptimizerConfig()
    loss: LossConfig = LossConfig()
    global_batch: int = 8
    total_steps: int = 100
    mesh_fsdp: int = 1
    eval_every_steps: int = 50
    checkpoint_every_steps: int = 50
    log_every_steps: int = 10
    keep_best: int = 2
    eval_batch_size: int = 8
    max_nan_skips: int = 0
    seed: int = 0


def _build(cls, values: Mapping[str, Any], path: str):
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - set(fields))
    if unknown:
        raise ValueError(
            f"unknown config key(s) {', '.join(path + k for k in unknown)}; known: {sorted(fields)}"
        )
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for name, value in values.items():
        hint = hints[name]
        if dataclasses.is_dataclass(hint):
            kwargs[name] = _build(hint, dict(value), f"{path}{name}.")
        elif hint in (tuple, Optional[tuple]) and value is not None:
            kwargs[name] = tuple(value) if isinstance(value, (list, tuple)) else (value,)
        else:
            kwargs[name] = value
    return cls(**kwargs)


def build_dataclass(cls, values: Mapping[str, Any]):
    """Any config dataclass from a (ConfigDict-derived) mapping; unknown keys are errors."""
    return _build(cls, dict(values), "")


def train_config_from_dict(values: Mapping[str, Any]) -> TrainConfig:
    """Validates a (ConfigDict-derived) mapping into a TrainConfig."""
    cfg = _build(TrainConfig, dict(values), "")
    if not cfg.data.train:
        raise ValueError("data.train is empty: name at least one training data spec")
    if cfg.data.weights and len(cfg.data.weights) != len(cfg.data.train):
        raise ValueError(
            f"data.weights has {len(cfg.data.weights)} entries for {len(cfg.data.train)} sources"
        )
    if cfg.global_batch < 1 or cfg.total_steps < 1:
        raise ValueError("global_batch and total_steps must be positive")
    return cfg


def to_dict(cfg) -> dict:
    return dataclasses.asdict(cfg)
