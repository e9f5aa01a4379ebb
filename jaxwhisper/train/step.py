"""The distillation step: a pure function of (state, batch) with the frozen teacher inside.

Features are computed on device from the batch's audio; the teacher runs under
stop_gradient in the same jitted function; the loss is the global-batch mean of
losses.distillation_loss.
"""

from __future__ import annotations

import contextlib
from typing import Any, Callable

import flax.linen as nn
import flax.struct
import flax.traverse_util
import jax
import jax.numpy as jnp
import optax

from jaxwhisper.config import LossConfig, OptimizerConfig
from jaxwhisper.data.features import log_mel_batch
from jaxwhisper.models.attention import Tapped
from jaxwhisper.models.config import WhisperConfig
from jaxwhisper.models.whisper import Whisper
from jaxwhisper.train.losses import distillation_loss, hidden_mse
from jaxwhisper.train.optim import learning_rate_schedule, make_optimizer

DEFAULT_LOSS = LossConfig()
GATE_STATS = "gate_stats"
HIDDEN = "final_hidden"


def _gate_recorder(decoder_mask: jax.Array):
    """An interceptor that sows, for every attention gate the student evaluates, the sum of its
    values and their count: over the label positions (`decoder_mask` [b, len]) in the decoder,
    over all frames in the encoder. Gate values include the 1/pi_init scale (1 = neutral)."""

    def interceptor(next_fun, args, kwargs, context):
        module = context.module
        if isinstance(module, Tapped) and context.method_name == "tap" and args[0] == "gate":
            x = args[1].astype(jnp.float32)  # [b, q, 1 or heads]
            if module.path and module.path[0] == "decoder":
                w = jnp.broadcast_to(decoder_mask[..., None], x.shape).astype(jnp.float32)
            else:
                w = jnp.ones_like(x)
            module.sow(GATE_STATS, "sum_count", (jnp.sum(x * w), jnp.sum(w)))
        return next_fun(*args, **kwargs)

    return nn.intercept_methods(interceptor)


def _hidden_recorder():
    """An interceptor that sows the decoder's final LayerNorm output (what the tied output
    projection reads, [b, len, embed]) into the HIDDEN collection, when that collection is
    mutable. It intercepts the LayerNorm rather than adding a tap: a tap would be a new
    activation point for quantization."""

    def interceptor(next_fun, args, kwargs, context):
        out = next_fun(*args, **kwargs)
        module = context.module
        if (
            isinstance(module, nn.LayerNorm)
            and context.method_name == "__call__"
            and tuple(module.path) == ("decoder", "layer_norm")
            and module.is_mutable_collection(HIDDEN)
        ):
            module.sow(HIDDEN, "final", out)
        return out

    return nn.intercept_methods(interceptor)


def _sown_hidden(cols) -> jax.Array:
    return jax.tree.leaves(cols[HIDDEN])[0].astype(jnp.float32)


def _gate_means(collection) -> dict[str, jax.Array]:
    """{"gate/<attention path>": mean gate value} from the sown (sum, count) pairs."""
    out = {}
    for key, values in flax.traverse_util.flatten_dict(collection).items():
        total = sum(v[0] for v in values)
        count = sum(v[1] for v in values)
        out["gate/" + "/".join(key[:-1])] = total / jnp.maximum(count, 1.0)
    return out


class TrainState(flax.struct.PyTreeNode):
    step: jax.Array
    params: Any
    opt_state: Any


def init_state(params, tx: optax.GradientTransformation) -> TrainState:
    return TrainState(step=jnp.zeros((), jnp.int32), params=params, opt_state=tx.init(params))


def frozen_predicate(freeze_encoder: bool = False, freeze_token_embedding: bool = False):
    """`path names -> bool` of the student parameters that are not trained (None: none)."""
    if not (freeze_encoder or freeze_token_embedding):
        return None

    def frozen(names: tuple[str, ...]) -> bool:
        return (freeze_encoder and names[0] == "encoder") or (
            freeze_token_embedding and names[:2] == ("decoder", "embed_tokens")
        )

    return frozen


def make_loss_fn(
    student: WhisperConfig,
    teacher: WhisperConfig,
    loss: LossConfig = DEFAULT_LOSS,
    padding: str = "log_mel",
    share_encoder: bool = False,
) -> Callable:
    """`loss_fn(params, teacher_params, batch) -> (loss, parts)`, the teacher frozen inside.

    share_encoder: the student's encoder is the teacher's (`freeze_encoder`): it runs once,
      with the teacher's params, and both decoders read its output. The batch may then carry
      that output precomputed as `encoder_out` [b, frames, embed] instead of its audio.
    """
    s_model, t_model = Whisper(student), Whisper(teacher)
    gated = student.gate != "none"
    hidden = loss.hidden_weight > 0

    def decode(model, params, enc, tokens, mutable=()):
        variables = {"params": params}
        cross = model.apply(variables, enc, method=Whisper.cross_kv)
        out, cols = model.apply(variables, tokens, cross, method=Whisper.decode, mutable=list(mutable))
        return out[0], cols

    def loss_fn(params, teacher_params, batch):
        tokens, labels = batch["decoder_input_ids"], batch["labels"]
        n_mels = student.n_mels
        # A gated student also reports its mean gate per attention layer (free: the gates are
        # computed anyway), so that a run shows whether and where its gates moved.
        mutable = ([GATE_STATS] if gated else []) + ([HIDDEN] if hidden else [])
        t_mutable = [HIDDEN] if hidden else []
        with contextlib.ExitStack() as taps:
            if gated:
                taps.enter_context(_gate_recorder(labels != -100))
            if hidden:
                taps.enter_context(_hidden_recorder())
            if share_encoder:
                if "encoder_out" in batch:
                    enc = batch["encoder_out"]
                else:
                    mel = log_mel_batch(batch["audio"], batch["audio_len"], n_mels=n_mels, padding=padding)
                    enc = t_model.apply({"params": teacher_params}, mel, method=Whisper.encode)
                enc = jax.lax.stop_gradient(enc)
                t_logits, t_cols = decode(t_model, teacher_params, enc, tokens, t_mutable)
                s_logits, cols = decode(s_model, params, enc.astype(student.dtype), tokens, mutable)
            else:
                mel = log_mel_batch(batch["audio"], batch["audio_len"], n_mels=n_mels, padding=padding)
                t_logits, t_cols = t_model.apply({"params": teacher_params}, mel, tokens, mutable=t_mutable)
                s_logits, cols = s_model.apply({"params": params}, mel, tokens, mutable=mutable)
        t_logits = jax.lax.stop_gradient(t_logits)
        value, parts = distillation_loss(
            s_logits, t_logits, labels, loss.temperature, loss.ce_weight, loss.kl_weight
        )
        if hidden:
            mse = hidden_mse(_sown_hidden(cols), jax.lax.stop_gradient(_sown_hidden(t_cols)), labels)
            value = value + loss.hidden_weight * mse
            parts = {**parts, "hidden_mse": mse}
        parts = {**parts, "gates": _gate_means(cols.get(GATE_STATS, {})) if gated else {}}
        return value, parts

    return loss_fn


def make_train_step(
    student: WhisperConfig,
    teacher: WhisperConfig,
    opt: OptimizerConfig,
    total_steps: int,
    loss: LossConfig = DEFAULT_LOSS,
    padding: str = "log_mel",
    max_nan_skips: int = 0,
    freeze_encoder: bool = False,
    freeze_token_embedding: bool = False,
) -> tuple[Callable, optax.GradientTransformation]:
    """Returns (`train_step(state, teacher_params, batch) -> (state, metrics)`, optimizer).

    freeze_encoder, freeze_token_embedding: those student parameters are not trained; they
    enter the loss through stop_gradient, so their (costly) gradients are never computed.
    With freeze_encoder the teacher's encoder output is shared (`make_loss_fn`).

    total_steps: optimizer updates of the run (`TrainConfig.optimizer_steps`): the learning
    rate reaches 0 there.

    batch: `audio` [b, 480000], `audio_len` [b], `decoder_input_ids` and `labels` [b, len].

    max_nan_skips > 0 wraps the optimizer in `optax.apply_if_finite`: a micro-step whose
    gradients are not finite leaves params and optimizer state (accumulator included)
    untouched, and `train/skipped_steps` counts such steps over the run. The caller bounds the
    total (after `max_nan_skips` consecutive skips apply_if_finite itself would let one through).
    """
    frozen = frozen_predicate(freeze_encoder, freeze_token_embedding)
    tx = make_optimizer(opt, total_steps, frozen)
    if max_nan_skips > 0:
        # Outside MultiSteps so that one bad micro-batch does not poison a whole accumulation.
        tx = optax.apply_if_finite(tx, max_consecutive_errors=max_nan_skips)
    schedule = learning_rate_schedule(opt, total_steps)
    loss_fn = make_loss_fn(student, teacher, loss, padding, share_encoder=freeze_encoder)

    def stop_frozen(params):
        if frozen is None:
            return params
        return jax.tree_util.tree_map_with_path(
            lambda path, p: jax.lax.stop_gradient(p) if frozen(tuple(k.key for k in path)) else p, params
        )

    def train_step(state: TrainState, teacher_params, batch):
        (value, parts), grads = jax.value_and_grad(
            lambda p: loss_fn(stop_frozen(p), teacher_params, batch), has_aux=True
        )(state.params)
        updates, opt_state = tx.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        # The rate this update used: skipped micro-steps do not advance the schedule.
        applied = state.step - (state.opt_state.total_notfinite if max_nan_skips > 0 else 0)
        opt_step = applied // max(1, opt.accumulation_steps)
        metrics = {
            "train/loss": value,
            "train/ce": parts["ce"],
            "train/kl": parts["kl"],
            "train/tokens": parts["tokens"],
            "train/grad_norm": optax.tree.norm(grads),
            "train/param_norm": optax.tree.norm(params),
            "train/learning_rate": schedule(opt_step),
        }
        if "hidden_mse" in parts:
            metrics["train/hidden_mse"] = parts["hidden_mse"]
        metrics.update(parts["gates"])
        if max_nan_skips > 0:
            metrics["train/skipped_steps"] = opt_state.total_notfinite
        return TrainState(step=state.step + 1, params=params, opt_state=opt_state), metrics

    return train_step, tx
