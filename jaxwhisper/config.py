"""The one typed schema of every run: distillation, quantization, outliers and the pipeline.

Config files (`configs/*.py`) return an `ml_collections.ConfigDict`; `load(cls, mapping)`
validates it into these frozen dataclasses:
  - an unknown key anywhere fails with one line naming it and the known keys (`ConfigError`);
  - each class checks its own cross-field rules in `__post_init__`, so a config that exists is
    valid however it was built;
  - derived values (`TrainConfig.optimizer_steps`, `TrainConfig.batch_plan`) are computed here
    once, from the fields, never stored twice.

    TrainConfig        train.py          student, data, optimizer, loss + run settings
    QuantRunConfig     quantize.py       presets (`jaxwhisper.quant.config`), test and calibration sets
    OutlierRunConfig   outliers stage    data, batch, padding
    PipelineConfig     reproduce.py      corpus, gates, and one of each of the above
"""

from __future__ import annotations

import dataclasses
import typing
from typing import Any, Mapping, NamedTuple, Optional

from jaxwhisper.models.config import GATE_TYPES, WhisperConfig
from jaxwhisper.quant.config import preset

LAYER_MAPS = ("paper", "linspace")
# WhisperConfig fields a student takes from its teacher: the copied weights fix them.
TEACHER_FIELDS = ("n_mels", "n_audio_ctx", "n_text_ctx", "n_vocab", "d_model", "n_heads", "ffn_dim")


class ConfigError(ValueError):
    """An invalid run config; the message is one line that names the key."""


@dataclasses.dataclass(frozen=True)
class StudentConfig:
    """Attributes:
    encoder_layers, decoder_layers: student depth.
    layer_map: "paper" (every k-th teacher encoder layer from the first) or "linspace"
      (distil-whisper's `np.linspace(0, L - 1, n, dtype=int)`).
    gate: "none" | "shared" | "per_head".
    dtype: compute dtype; params and optimizer state stay float32 (mixed precision).
    remat: recompute block activations in the backward pass (memory for compute).
    model: any other `WhisperConfig` field of the student, e.g. `{"gate_pi_init": 0.5,
      "softmax_clip_gamma": -0.03}`; the architecture fields the teacher fixes
      (`TEACHER_FIELDS`, layer counts) and the named fields above are not accepted here.
    freeze_encoder: keep the teacher's encoder, untrained (distil-whisper's
      `--freeze_encoder`): it runs once per batch for teacher and student, only the decoder
      learns, and gates (if any) are in the decoder only. Needs all the teacher's encoder
      layers (`encoder_layers` equal to the teacher's).
    freeze_token_embedding: keep the teacher's token embedding (tied to the output
      projection), untrained. Its gradient is the costliest part of a decoder-only step on
      CPU (a decoder-only tiny.en step: 9.9 s with it, 3.5 s without).
    """

    encoder_layers: int = 2
    decoder_layers: int = 2
    layer_map: str = "paper"
    gate: str = "shared"
    dtype: str = "float32"
    remat: bool = False
    model: dict = dataclasses.field(default_factory=dict)
    freeze_encoder: bool = False
    freeze_token_embedding: bool = False

    def __post_init__(self):
        if self.gate not in GATE_TYPES:
            raise ConfigError(f"student.gate must be one of {GATE_TYPES}, got {self.gate!r}")
        if self.layer_map not in LAYER_MAPS:
            raise ConfigError(f"student.layer_map must be one of {LAYER_MAPS}, got {self.layer_map!r}")
        if self.encoder_layers < 1 or self.decoder_layers < 1:
            raise ConfigError("student.encoder_layers and student.decoder_layers must be positive")
        named = {f.name for f in dataclasses.fields(self)} - {"model"}
        allowed = sorted({f.name for f in dataclasses.fields(WhisperConfig)} - named - set(TEACHER_FIELDS))
        for key in self.model:
            if key in named:
                raise ConfigError(f"student.model.{key}: set it as student.{key}")
            if key not in allowed:
                raise ConfigError(f"unknown config key student.model.{key}; known: {allowed}")
        if self.freeze_encoder and self.model.get("gated_encoder", False):
            raise ConfigError("student.freeze_encoder keeps the teacher's encoder: it cannot have gates")
        try:  # the values themselves, against WhisperConfig's own rules
            WhisperConfig().replace(**self.model_overrides())
        except ValueError as e:
            raise ConfigError(f"student: {e}") from None

    def model_overrides(self) -> dict:
        """The WhisperConfig fields the student changes from its teacher (besides depth)."""
        overrides = {"gate": self.gate, "dtype": self.dtype, "remat": self.remat, **self.model}
        if self.freeze_encoder:  # the teacher's encoder, which has no gates to train
            overrides["gated_encoder"] = False
        return overrides


@dataclasses.dataclass(frozen=True)
class DataConfig:
    """Attributes:
    train: data specs of the training mixture.
    weights: mixture weights (empty: proportional to size).
    eval: data specs of the validation sets (WER each; the mean selects the best checkpoint).
    max_label_len: decoder positions per training row.
    label_bucket: each batch's decoder positions are cut to its longest row's, rounded up
      to a multiple of this (exact: the cut positions are padding), so short rows do not pay
      for `max_label_len`; 0 keeps every batch at `max_label_len`. At most
      `max_label_len / label_bucket` step shapes are compiled.
    max_audio_s: longest training clip.
    max_drop_fraction: the run fails when more of the data seen so far is unusable.
    seed: data order seed.
    max_eval_examples: cap per validation set (0: all).
    decode_workers: threads per host that decode and validate a batch's rows in parallel
      (streaming sources; see docs/streaming.md for how many a host needs).
    """

    train: tuple = ()
    weights: tuple = ()
    eval: tuple = ()
    max_label_len: int = 128
    label_bucket: int = 32
    max_audio_s: float = 30.0
    max_drop_fraction: float = 0.2
    seed: int = 0
    max_eval_examples: int = 0
    decode_workers: int = 1

    def __post_init__(self):
        if self.label_bucket < 0:
            raise ConfigError(f"data.label_bucket is {self.label_bucket}; it must be >= 0 (0: off)")
        if self.decode_workers < 1:
            raise ConfigError(f"data.decode_workers is {self.decode_workers}; it must be >= 1")
        if self.weights and len(self.weights) != len(self.train):
            raise ConfigError(f"data.weights has {len(self.weights)} entries for {len(self.train)} sources")


@dataclasses.dataclass(frozen=True)
class OptimizerConfig:
    """AdamW with linear warm-up and linear decay to 0 at the run's last update.

    Attributes:
      learning_rate: peak rate after warm-up.
      warmup_steps: linear warm-up from 0, in optimizer steps (the paper: 1000).
      b1, b2, eps: AdamW moments (0.9, 0.999, 1e-8).
      weight_decay: decoupled decay on kernels and embeddings; none on biases, norms, gates' bias.
      clip_norm: global gradient-norm clip (0 disables).
      accumulation_steps: micro-batches per optimizer step (optax.MultiSteps).
      gate_learning_rate_multiplier: the gates' parameters learn at this multiple of the rate.
    """

    learning_rate: float = 1e-4
    warmup_steps: int = 1000
    b1: float = 0.9
    b2: float = 0.999
    eps: float = 1e-8
    weight_decay: float = 0.0
    clip_norm: float = 1.0
    accumulation_steps: int = 1
    gate_learning_rate_multiplier: float = 1.0

    def __post_init__(self):
        if self.gate_learning_rate_multiplier <= 0:
            raise ConfigError(
                "optimizer.gate_learning_rate_multiplier must be positive, "
                f"got {self.gate_learning_rate_multiplier}"
            )
        if self.accumulation_steps < 1:
            raise ConfigError(
                f"optimizer.accumulation_steps must be at least 1, got {self.accumulation_steps}"
            )


@dataclasses.dataclass(frozen=True)
class LossConfig:
    """`ce_weight * CE + kl_weight * T^2 * KL(teacher || student)` at temperature T (the
    distil-whisper weights), plus `hidden_weight * MSE` of the decoders' final LayerNorm
    outputs (0: the paper's loss; the README says what it measured)."""

    temperature: float = 2.0
    ce_weight: float = 0.8
    kl_weight: float = 1.0
    hidden_weight: float = 0.0


class BatchPlan(NamedTuple):
    """Rows of one micro-step and one update, split over processes and devices."""

    global_batch: int  # rows per micro-step, all devices of all hosts
    per_process: int
    per_device: int
    accumulation_steps: int
    per_update: int  # rows per optimizer step: per_device * devices * accumulation_steps


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Attributes:
    teacher: model spec of the frozen teacher.
    teacher_dtype: the teacher's compute dtype (bfloat16 halves its cost; it gets no gradients).
    global_batch: rows per micro-step over all devices and hosts.
    total_steps: micro-steps to run; the learning rate reaches 0 at the last of the
      `optimizer_steps = total_steps / optimizer.accumulation_steps` updates.
    mesh_fsdp: devices that shard params and optimizer state; the rest is data parallel.
    eval_every_steps, checkpoint_every_steps, log_every_steps: intervals (0 disables eval).
    keep_best: checkpoints kept by lowest validation WER (plus the latest).
    eval_batch_size: rows per decoding call in validation.
    max_nan_skips: 0 aborts on the first non-finite loss; N > 0 skips up to N non-finite
      micro-steps over the run (`optax.apply_if_finite`, counted) and aborts on the next.
    encoder_cache_mb: with `student.freeze_encoder`, host memory for the teacher encoder's
      outputs of the windows seen, each encoded once and reused in later epochs
      (`train/encoder_cache.py`; single-process runs; 0: off).
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
    encoder_cache_mb: int = 0
    seed: int = 0

    def __post_init__(self):
        if self.encoder_cache_mb and not self.student.freeze_encoder:
            raise ConfigError(
                "encoder_cache_mb needs student.freeze_encoder: a trained encoder changes every step"
            )
        if not self.data.train:
            raise ConfigError("data.train is empty: name at least one training data spec")
        if self.global_batch < 1 or self.total_steps < 1:
            raise ConfigError("global_batch and total_steps must be positive")
        if self.total_steps % self.optimizer.accumulation_steps:
            raise ConfigError(
                f"total_steps={self.total_steps} micro-steps is not a whole number of updates of "
                f"optimizer.accumulation_steps={self.optimizer.accumulation_steps}"
            )

    @property
    def optimizer_steps(self) -> int:
        """Optimizer updates of the whole run (the learning-rate schedule's length)."""
        return self.total_steps // self.optimizer.accumulation_steps

    def batch_plan(self, n_devices: int, n_processes: int = 1) -> BatchPlan:
        """The batch split over `n_devices` devices of `n_processes` hosts.

        Raises:
          ConfigError: the global batch does not divide over the devices (or the processes).
        """
        if self.global_batch % n_devices or self.global_batch % n_processes:
            raise ConfigError(
                f"global_batch={self.global_batch} is not divisible by the {n_devices} devices of the mesh"
                + (f" and {n_processes} processes" if n_processes > 1 else "")
            )
        acc = self.optimizer.accumulation_steps
        per_device = self.global_batch // n_devices
        return BatchPlan(
            self.global_batch, self.global_batch // n_processes, per_device, acc, per_device * n_devices * acc
        )


@dataclasses.dataclass(frozen=True)
class QuantRunConfig:
    """Attributes:
    quantizations: preset names (`jaxwhisper.quant.config.PRESETS`), each evaluated.
    test: data specs of the test sets.
    calibration: data spec of the calibration clips (never a test set).
    calibration_batches: batches of `batch_size` clips (paper: 16).
    batch_size: rows per decoding call.
    max_examples: cap per test set (0: all).
    fallback: also evaluate every model with faster-whisper's temperature fallback (a
      transcript too repetitive or unlikely is sampled again), reported beside greedy.
    """

    quantizations: tuple = ("w8a8",)
    test: tuple = ()
    calibration: str = ""
    calibration_batches: int = 16
    batch_size: int = 8
    max_examples: int = 0
    fallback: bool = False

    def __post_init__(self):
        for q in self.quantizations:
            try:
                preset(q)  # unknown names fail here, before any work
            except ValueError as e:
                raise ConfigError(str(e)) from None
        if not self.test:
            raise ConfigError("test is empty: name at least one test data spec")
        if not self.calibration:
            raise ConfigError("calibration is empty: name the calibration data spec")
        if self.calibration in self.test:
            raise ConfigError(f"calibration set {self.calibration!r} is also a test set")


@dataclasses.dataclass(frozen=True)
class OutlierRunConfig:
    """Attributes:
    data: data spec the statistics are taken on.
    max_examples: first N utterances (0: all).
    batch_size: rows per forward.
    include_padding: count padded encoder frames and tokens.
    """

    data: str = ""
    max_examples: int = 0
    batch_size: int = 8
    include_padding: bool = False


# Placeholders that validation rejects: a pipeline config must name its data.
_UNSET = "<unset>"


@dataclasses.dataclass(frozen=True)
class PipelineConfig:
    """Attributes:
    corpus: directory of the demo corpus (`jaxwhisper demo-corpus`); built unless it holds a
      complete one with `tts_sentences` synthesized sentences. Empty: the training data specs
      must already exist.
    tts_sentences: sentences the corpus builder synthesizes (0: real speech only; needs the
      `tts` extra otherwise).
    tts_augment: give three of four synthesized sentences another voice, a room and noise
      (`jaxwhisper.data.augment`).
    gates: one student per gate setting ("none", "shared", "per_head").
    seeds: empty: one student per gate with `train.seed`; else one per gate and seed, the seed
      setting both the student's initialisation (`train.seed`) and its data order
      (`train.data.seed`), so that the report can give the spread over seeds.
    train: the distillation config of every student (its `student.gate` is replaced).
    quant: what is quantized and where it is evaluated (teacher and students alike).
    outliers: where outlier statistics are taken.
    """

    corpus: str = ""
    tts_sentences: int = 0
    tts_augment: bool = False
    gates: tuple = ("none", "shared")
    seeds: tuple = ()
    train: TrainConfig = TrainConfig(data=DataConfig(train=(_UNSET,)))
    quant: QuantRunConfig = QuantRunConfig(test=(_UNSET,), calibration=_UNSET + "-calibration")
    outliers: OutlierRunConfig = OutlierRunConfig()

    def __post_init__(self):
        if not self.gates:
            raise ConfigError("gates is empty: name at least one student (none, shared, per_head)")
        for gate in self.gates:
            if gate not in GATE_TYPES:
                raise ConfigError(f"gates: {gate!r} is not one of {GATE_TYPES}")
        if len(set(self.seeds)) != len(self.seeds):
            raise ConfigError(f"seeds: {list(self.seeds)} names a seed twice")
        if _UNSET in self.train.data.train:
            raise ConfigError("train.data.train is not set: name the training data specs")
        if _UNSET in self.quant.test:
            raise ConfigError("quant.test is not set: name the test data specs of the quantization stage")
        if not self.outliers.data:
            raise ConfigError("outliers.data is empty: name the data spec of the outlier statistics")

    def students(self) -> list[tuple[str, TrainConfig]]:
        """(run directory name, distillation config) of every student, gate by gate."""
        out = []
        for gate in self.gates:
            train = dataclasses.replace(
                self.train, student=dataclasses.replace(self.train.student, gate=gate)
            )
            name = f"student_{train.student.encoder_layers}x{train.student.decoder_layers}_gate_{gate}"
            if not self.seeds:
                out.append((name, train))
            for seed in self.seeds:
                data = dataclasses.replace(train.data, seed=seed)
                out.append((f"{name}_seed{seed}", dataclasses.replace(train, seed=seed, data=data)))
        return out


def _build(cls, values: Any, path: str):
    if not isinstance(values, Mapping):
        raise ConfigError(f"{path.rstrip('.') or 'config'} must be a mapping of keys, got {values!r}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - set(fields))
    if unknown:
        raise ConfigError(
            f"unknown config key(s) {', '.join(path + k for k in unknown)}; known: {sorted(fields)}"
        )
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for name, value in values.items():
        hint = hints[name]
        if dataclasses.is_dataclass(hint):
            kwargs[name] = _build(hint, value, f"{path}{name}.")
        elif hint in (tuple, Optional[tuple]) and value is not None:
            kwargs[name] = tuple(value) if isinstance(value, (list, tuple)) else (value,)
        elif hint is dict:
            kwargs[name] = dict(value)
        else:
            kwargs[name] = value
    try:
        return cls(**kwargs)
    except ConfigError as e:
        if path and not str(e).startswith(path) and "config key" not in str(e):
            raise ConfigError(f"{path.rstrip('.')}: {e}") from None
        raise


def load(cls, values: Mapping[str, Any]):
    """Any config dataclass above from a (ConfigDict-derived) mapping.

    Raises:
      ConfigError: an unknown key (named with its path and the known ones) or a broken rule.
    """
    return _build(cls, dict(values), "")


def train_config_from_dict(values: Mapping[str, Any]) -> TrainConfig:
    return load(TrainConfig, values)


def to_dict(cfg) -> dict:
    return dataclasses.asdict(cfg)
