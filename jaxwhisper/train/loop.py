"""`train_and_evaluate(config, workdir)`: distil a student from a frozen teacher.

Resumes automatically from the latest finalised checkpoint in `workdir/checkpoints`: the
state, the step and the data position (map-style sources: the order is a pure function of
(seed, step), so a resumed run sees the batches an uninterrupted one would; streaming ones:
each host's stream position is saved with the step, `data/streaming.py` says what it keeps).
SIGTERM finishes the current step, saves and exits cleanly. Process 0 writes `metrics.jsonl` and TensorBoard
events. A non-finite loss flushes the metrics, writes `nan_debug.json` and aborts, unless
`max_nan_skips` allows skipping it.
"""

from __future__ import annotations

import json
import logging
import math
import signal
import sys
import time
from pathlib import Path
from typing import Optional

import jax
import numpy as np

from jaxwhisper import distributed
from jaxwhisper.config import ConfigError, TrainConfig, to_dict
from jaxwhisper.data.batches import BatchConfig, trim_label_positions, used_label_positions
from jaxwhisper.data.features import HOP, log_mel_batch
from jaxwhisper.data.packing import TextBudget
from jaxwhisper.data.preflight import check_unique_names
from jaxwhisper.data.sources import parse_spec
from jaxwhisper.data.streaming import StreamLoader, make_loader
from jaxwhisper.data.validation import ValidationConfig
from jaxwhisper.inference.tokenizer import WhisperTokenizer
from jaxwhisper.models.weights.base import LoadedModel
from jaxwhisper.models.weights.native import save_checkpoint
from jaxwhisper.models.weights.resolve import resolve_model
from jaxwhisper.models.whisper import Whisper
from jaxwhisper.train import checkpointing, sharding
from jaxwhisper.train.encoder_cache import EncoderCache
from jaxwhisper.train.step import init_state, make_train_step
from jaxwhisper.train.student import make_student
from jaxwhisper.train.validation import Validator

log = logging.getLogger(__name__)
BATCH_KEYS = ("audio", "audio_len", "decoder_input_ids", "labels")


class MetricWriter:
    """metrics.jsonl (+ TensorBoard events when tensorboardX is installed), process 0 only."""

    def __init__(self, workdir: Path):
        self.active = jax.process_index() == 0
        self.file = open(workdir / "metrics.jsonl", "a") if self.active else None
        self.tb = None
        if self.active:
            try:
                from tensorboardX import SummaryWriter

                self.tb = SummaryWriter(str(workdir / "tensorboard"))
            except ImportError:
                log.info("tensorboardX not installed: metrics go to metrics.jsonl only")

    def write(self, step: int, metrics: dict):
        if not self.active:
            return
        row = {"step": step, **{k: float(v) for k, v in metrics.items()}}
        self.file.write(json.dumps(row) + "\n")
        self.file.flush()
        if self.tb is not None:
            for k, v in metrics.items():
                self.tb.add_scalar(k, float(v), step)

    def close(self):
        if self.file:
            self.file.close()
        if self.tb is not None:
            self.tb.close()


def _check_finite(metrics: dict, step: int, max_skips: int, ids: list, workdir: Path, writer) -> None:
    """Aborts (after flushing metrics and writing `nan_debug.json`) on a non-finite loss, or,
    with skipping on, once more than `max_skips` micro-steps have been skipped."""
    skipped = int(metrics.get("train/skipped_steps", 0))
    finite = math.isfinite(metrics["train/loss"])
    if (finite or max_skips) and skipped <= max_skips:
        if skipped:
            log.warning("step %d: %d non-finite micro-steps skipped (max %d)", step, skipped, max_skips)
        return
    writer.write(step, metrics)
    (workdir / "nan_debug.json").write_text(
        json.dumps({"step": step, "recent_batch_ids": ids, "metrics": metrics}, indent=2) + "\n"
    )
    what = f"{skipped} non-finite micro-steps (max_nan_skips={max_skips})" if max_skips else "non-finite loss"
    raise FloatingPointError(
        f"{what} at step {step}; the batch ids since the last check and the metrics are in "
        f"{workdir}/nan_debug.json"
    )


def _host_params(params):
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        # Global (sharded across hosts) arrays are gathered whole only with tiled=True;
        # found by tests/test_multihost.py (validation and export on several hosts).
        return multihost_utils.process_allgather(params, tiled=True)
    return jax.device_get(params)


EXPORT = "export"


def train_and_evaluate(
    cfg: TrainConfig,
    workdir: Path,
    stop_after: Optional[int] = None,
    shared_encoder_cache: Optional[EncoderCache] = None,
) -> dict:
    """Runs (or resumes) the distillation described by `cfg` in `workdir`.

    Args:
      stop_after: stop after this many steps of this call (tests: a run cut in two).
      shared_encoder_cache: with `encoder_cache_mb`, a cache kept across runs of the same
        teacher and data (the pipeline's students), instead of one for this run.

    Returns:
      The last metrics written. A run that reaches `total_steps` also writes the final
      student to `workdir/export` (a jaxwhisper checkpoint with the teacher's tokenizer).
    """
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "config.json").write_text(json.dumps(to_dict(cfg), indent=2) + "\n")
    mesh = sharding.make_mesh(cfg.mesh_fsdp)
    cfg.batch_plan(mesh.size, jax.process_count())  # fails early when the batch does not divide
    eval_sources = [parse_spec(s) for s in cfg.data.eval]
    check_unique_names(cfg.data.eval, eval_sources)  # eval/wer/NAME metrics are keyed by name

    teacher = resolve_model(cfg.teacher)
    tok = WhisperTokenizer(teacher.tokenizer_dir, teacher.config.is_multilingual)
    if cfg.student.freeze_encoder and cfg.student.encoder_layers != teacher.config.encoder_layers:
        raise ConfigError(
            f"student.freeze_encoder keeps the teacher's {teacher.config.encoder_layers} encoder layers; "
            f"student.encoder_layers is {cfg.student.encoder_layers}"
        )
    s_cfg, s_params = make_student(
        teacher.config,
        teacher.params,
        cfg.student.encoder_layers,
        cfg.student.decoder_layers,
        layer_map=cfg.student.layer_map,
        rng=jax.random.PRNGKey(cfg.seed),
        **cfg.student.model_overrides(),
    )
    step_fn, tx = make_train_step(
        s_cfg,
        teacher.config.replace(dtype=cfg.teacher_dtype),
        cfg.optimizer,
        cfg.optimizer_steps,
        cfg.loss,
        max_nan_skips=cfg.max_nan_skips,
        freeze_encoder=cfg.student.freeze_encoder,
        freeze_token_embedding=cfg.student.freeze_token_embedding,
    )

    state_shapes = jax.eval_shape(lambda p: init_state(p, tx), s_params)
    state_sh = sharding.tree_shardings(state_shapes, mesh)
    teacher_sh = sharding.tree_shardings(teacher.params, mesh)
    teacher_params = sharding.put_tree(teacher.params, teacher_sh)
    jitted_step = jax.jit(
        step_fn,
        in_shardings=(state_sh, teacher_sh, sharding.batch_sharding(mesh)),
        out_shardings=(state_sh, sharding.replicated(mesh)),
        donate_argnums=0,
    )

    def train_step(*args):
        # With the mesh in context the features and the tiled attention run on each
        # device's own rows instead of the whole batch on every device (jaxwhisper/spmd.py).
        with jax.set_mesh(mesh):
            return jitted_step(*args)

    encoder_cache = None
    batch_keys = BATCH_KEYS
    if cfg.encoder_cache_mb and jax.process_count() == 1:
        t_model, n_mels = Whisper(teacher.config.replace(dtype=cfg.teacher_dtype)), teacher.config.n_mels
        # One row at a time, on one device: only windows not cached yet are encoded.
        encode = jax.jit(
            lambda p, audio, n: t_model.apply(
                {"params": p}, log_mel_batch(audio, n, n_mels=n_mels), method=Whisper.encode
            )
        )
        host_teacher = jax.device_put(teacher.params, jax.local_devices()[0])
        encoder_cache = (shared_encoder_cache or EncoderCache(cfg.encoder_cache_mb)).bind(
            lambda audio, n: encode(host_teacher, audio, n), f"{cfg.teacher}@{cfg.teacher_dtype}"
        )
        batch_keys = ("encoder_out", "audio_len", "decoder_input_ids", "labels")
    elif cfg.encoder_cache_mb:
        log.info("encoder_cache_mb is ignored in a multi-process run: the encoder runs in every step")

    manager = checkpointing.make_manager(workdir / "checkpoints", cfg.keep_best)
    start = manager.latest_step()
    if start is not None:
        abstract = jax.tree.map(
            lambda s, sh: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=sh), state_shapes, state_sh
        )
        state, meta = checkpointing.restore(manager, start, abstract)
        log.info("resumed from step %d (data step %d)", start, meta["data_step"])
        start = int(meta["data_step"])
    else:
        state = jax.jit(lambda p: init_state(p, tx), out_shardings=state_sh)(s_params)
        start = 0

    # Packed windows close before their text would overflow a row's label positions.
    budget = TextBudget.of(tok.encode, cfg.data.max_label_len - len(tok.prefix))
    sources = [parse_spec(s, budget) for s in cfg.data.train]
    loader = make_loader(
        sources,
        # Rows as wide as the teacher's window (30 s for Whisper; the student inherits it).
        BatchConfig(cfg.global_batch, cfg.data.max_label_len, cfg.data.seed, teacher.config.n_frames * HOP),
        tok.prefix,
        tok.eot,
        tok.encode,
        weights=cfg.data.weights or None,
        validation=ValidationConfig(max_audio_s=cfg.data.max_audio_s),
        process_index=jax.process_index(),
        process_count=jax.process_count(),
        decode_workers=cfg.data.decode_workers,
    )
    streaming = isinstance(loader, StreamLoader)
    data_state = None
    if streaming and start:
        saved = meta.get("data_state") or [None] * jax.process_count()
        if len(saved) != jax.process_count() or saved[jax.process_index()] is None:
            raise ValueError(
                f"{workdir}/checkpoints: step {start} holds no streaming data position for "
                f"{jax.process_count()} host(s); resume with the config and host count that wrote it"
            )
        data_state = saved[jax.process_index()]
    position = {"state": data_state}  # of the last batch trained on

    stop = {"signal": False}
    previous = signal.signal(signal.SIGTERM, lambda *_: stop.update(signal=True))
    writer = MetricWriter(workdir)
    last: dict = {}
    end = cfg.total_steps if stop_after is None else min(cfg.total_steps, start + stop_after)

    def save(step: int, metrics: Optional[dict] = None):
        meta = {"step": step, "data_step": step, "seed": cfg.seed, "config": to_dict(cfg)}
        if streaming:  # every host's position; orbax writes the metadata from host 0
            meta["data_state"] = distributed.allgather_json(position["state"])
        checkpointing.save(manager, step, state, meta, metrics)

    try:
        from tqdm import tqdm

        bar = tqdm(
            total=end,
            initial=start,
            unit="step",
            desc="distill",
            file=sys.stderr,
            disable=jax.process_index() != 0,
            dynamic_ncols=True,
        )
        t0, audio_s, tokens = time.perf_counter(), 0.0, 0.0
        batches = loader.iter_from_step(start, data_state) if streaming else loader.iter_from_step(start)
        validate = None
        if cfg.data.eval and cfg.eval_every_steps:
            # No remat at inference: nothing to recompute without a backward pass.
            student = LoadedModel(
                s_cfg.replace(remat=False), _host_params(state.params), teacher.tokenizer_dir, "student"
            )
            validate = Validator(
                student, cfg.data.eval, cfg.eval_batch_size, cfg.data.max_eval_examples, eval_sources
            )
            if start == 0:  # where the copied student starts: the baseline of the curve
                last = validate(student.params)
                writer.write(0, last)
        recent_ids: list = []  # batch ids since the last finiteness check, for the debug dump
        for step in range(start, end):
            local = next(batches)
            position["state"] = local.get("data_state")
            if cfg.data.label_bucket:
                # Every host must cut to the same length: the global batch has one shape.
                used = max(distributed.allgather_json(used_label_positions(local["labels"])))
                local = trim_label_positions(local, used, cfg.data.label_bucket)
            recent_ids.append(local["ids"])
            if encoder_cache is not None:
                local["encoder_out"] = encoder_cache(local)
            state, metrics = train_step(state, teacher_params, sharding.global_batch(local, mesh, batch_keys))
            audio_s += float(np.sum(local["audio_len"])) / 16000
            done = step + 1
            evaluating = validate is not None and (
                done % cfg.eval_every_steps == 0 or done == cfg.total_steps
            )
            saving = evaluating or done % cfg.checkpoint_every_steps == 0 or done == end or stop["signal"]
            # Metrics are fetched (a host sync) when logged and before anything is saved, so a
            # non-finite state is never checkpointed.
            if done % cfg.log_every_steps == 0 or saving:
                metrics = {k: float(v) for k, v in metrics.items()}
                _check_finite(metrics, done, cfg.max_nan_skips, recent_ids, workdir, writer)
                recent_ids = []
                tokens += metrics["train/tokens"]
                elapsed = time.perf_counter() - t0
                metrics["train/audio_s_per_s"] = audio_s / elapsed
                metrics["train/tokens_per_s"] = tokens / elapsed
                if encoder_cache is not None:
                    metrics.update(encoder_cache.stats())
                writer.write(done, metrics)
                bar.set_postfix(loss=f"{metrics['train/loss']:.3f}")
                last = metrics
                loader.drops.check(cfg.data.max_drop_fraction)
            bar.update()
            eval_metrics = None
            if evaluating:
                eval_metrics = validate(_host_params(state.params))
                writer.write(done, eval_metrics)
                last = {**last, **eval_metrics}
            if saving:
                save(
                    done,
                    {checkpointing.WER_KEY: eval_metrics[checkpointing.WER_KEY]} if eval_metrics else None,
                )
            if stop["signal"]:
                log.warning("SIGTERM: saved step %d, exiting", done)
                break
        bar.close()
    finally:
        manager.wait_until_finished()
        manager.close()
        writer.close()
        signal.signal(signal.SIGTERM, previous)
    (workdir / "data_drops.json").write_text(json.dumps(loader.drops.summary(), indent=2) + "\n")
    if end == cfg.total_steps and not stop["signal"]:
        # The finished student as a loadable model (`--model WORKDIR/export` everywhere).
        params = _host_params(state.params)
        if jax.process_index() == 0:
            final = LoadedModel(s_cfg.replace(remat=False), params, teacher.tokenizer_dir, f"{workdir}@{end}")
            save_checkpoint(final, workdir / EXPORT)
        if jax.process_count() > 1:
            # Every host returns only once the export exists (a later stage reads it).
            from jax.experimental import multihost_utils

            multihost_utils.sync_global_devices("jaxwhisper export written")
    return last


__all__ = ["train_and_evaluate", "Validator"]
