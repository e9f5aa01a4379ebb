"""The distillation step on a small random teacher: it learns, and it is deterministic."""

import flax.traverse_util
import jax
import numpy as np
from jaxprs import dot_generals

from jaxwhisper.config import LossConfig, OptimizerConfig
from jaxwhisper.data.batches import make_labels, trim_label_positions, used_label_positions
from jaxwhisper.data.features import log_mel_batch
from jaxwhisper.models.config import WhisperConfig
from jaxwhisper.models.whisper import Whisper, init_params
from jaxwhisper.train.step import init_state, make_loss_fn, make_train_step
from jaxwhisper.train.student import make_student

TEACHER = WhisperConfig(
    n_vocab=120, d_model=64, n_heads=4, encoder_layers=4, decoder_layers=4, ffn_dim=128, n_text_ctx=16
)


def _batch():
    # 5 s windows: the step is the same code at any window (features and encoder positions
    # follow the audio's width), and a 30 s window's 1500 encoder positions made these
    # tests 1.6x slower.
    rng = np.random.default_rng(0)
    audio = (0.1 * rng.normal(size=(2, 80000))).astype(np.float32)
    rows = [make_labels([1, 2], list(rng.integers(3, 100, size=n)), 0, 16) for n in (5, 9)]
    return {
        "audio": audio,
        "audio_len": np.array([80000, 32000], np.int32),
        "decoder_input_ids": np.stack([r[0] for r in rows]),
        "labels": np.stack([r[1] for r in rows]),
    }


def _run(steps):
    t_params = init_params(TEACHER, jax.random.PRNGKey(0))
    s_cfg, s_params = make_student(TEACHER, t_params, 2, 2, gate="shared")
    opt = OptimizerConfig(learning_rate=3e-3, warmup_steps=2)
    step, tx = make_train_step(s_cfg, TEACHER, opt, total_steps=50)
    step = jax.jit(step)
    state, batch, out = init_state(s_params, tx), _batch(), []
    for _ in range(steps):
        state, m = step(state, t_params, batch)
        out.append({k: float(v) for k, v in m.items()})
    return state, out


def test_step_learns_and_reports_metrics():
    state, metrics = _run(12)
    assert metrics[-1]["train/loss"] < 0.7 * metrics[0]["train/loss"]
    assert metrics[0]["train/tokens"] == 5 + 1 + 9 + 1  # text + end-of-text of both rows
    assert metrics[0]["train/learning_rate"] == 0.0 and metrics[2]["train/learning_rate"] > 0
    assert all(np.isfinite(list(m.values())).all() for m in metrics)
    assert int(state.step) == 12
    # The student is gated: its mean gate per attention layer is a metric of every step.
    assert sum(k.startswith("gate/decoder/") for k in metrics[0]) == 4


def test_step_is_deterministic():
    a, _ = _run(3)
    b, _ = _run(3)
    for x, y in zip(jax.tree.leaves(a.params), jax.tree.leaves(b.params)):
        np.testing.assert_array_equal(x, y)


def test_non_finite_micro_step_is_skipped_and_counted():
    """With max_nan_skips, a NaN batch leaves params and optimizer state as they were."""
    t_params = init_params(TEACHER, jax.random.PRNGKey(0))
    s_cfg, s_params = make_student(TEACHER, t_params, 2, 2, gate="shared")
    opt = OptimizerConfig(learning_rate=3e-3, warmup_steps=1, accumulation_steps=2)
    step, tx = make_train_step(s_cfg, TEACHER, opt, total_steps=50, max_nan_skips=2)
    step = jax.jit(step)
    good = _batch()
    bad = dict(good, audio=np.full_like(good["audio"], np.nan))
    state = init_state(s_params, tx)
    state, m = step(state, t_params, good)
    before = state
    state, m = step(state, t_params, bad)
    assert not np.isfinite(m["train/loss"]) and int(m["train/skipped_steps"]) == 1
    for x, y in zip(
        jax.tree.leaves((before.params, before.opt_state.inner_state)),
        jax.tree.leaves((state.params, state.opt_state.inner_state)),
    ):
        np.testing.assert_array_equal(x, y)
    # The accumulation resumes where it was: the next good micro-step completes it.
    state, m = step(state, t_params, good)
    assert int(state.opt_state.inner_state.gradient_step) == 1
    assert all(np.isfinite(x).all() for x in jax.tree.leaves(state.params))
    assert int(m["train/skipped_steps"]) == 1


def _flat(params) -> dict:
    return {"/".join(k): np.asarray(v) for k, v in flax.traverse_util.flatten_dict(params).items()}


def test_frozen_encoder_and_embedding_stay_as_copied_and_the_rest_learns():
    t_params = init_params(TEACHER, jax.random.PRNGKey(0))
    s_cfg, s_params = make_student(TEACHER, t_params, 4, 2, gate="shared", gated_encoder=False)
    assert not any("gate" in k for k in _flat(s_params) if k.startswith("encoder"))
    assert any("gate" in k for k in _flat(s_params) if k.startswith("decoder"))
    opt = OptimizerConfig(learning_rate=3e-3, warmup_steps=1)
    step, tx = make_train_step(
        s_cfg, TEACHER, opt, total_steps=50, freeze_encoder=True, freeze_token_embedding=True
    )
    step = jax.jit(step)
    state = init_state(s_params, tx)
    losses = []
    for _ in range(6):
        state, m = step(state, t_params, _batch())
        losses.append(float(m["train/loss"]))
    assert losses[-1] < 0.95 * losses[0]  # fewer trainable parameters: it learns slower
    before, after = _flat(s_params), _flat(state.params)
    for k in before:
        frozen = k.startswith("encoder") or k.startswith("decoder/embed_tokens")
        same = np.array_equal(before[k], after[k])
        assert same == frozen, k
    # Frozen parameters hold no optimizer state: Adam's moments exist for the rest only.
    n_state = sum(x.size for x in jax.tree.leaves(state.opt_state))
    n_trained = sum(v.size for k, v in after.items() if not k.startswith(("encoder", "decoder/embed_tokens")))
    assert n_state < 2 * n_trained + 100


def test_shared_encoder_loss_equals_the_full_forward_when_the_encoders_are_equal():
    """freeze_encoder runs the teacher's encoder once for both; with the student's encoder a
    copy of the teacher's, that is the same loss as the student's own full forward."""
    t_params = init_params(TEACHER, jax.random.PRNGKey(0))
    s_cfg, s_params = make_student(TEACHER, t_params, 4, 2)
    batch = _batch()
    full = make_loss_fn(s_cfg, TEACHER)(s_params, t_params, batch)[0]
    shared = make_loss_fn(s_cfg, TEACHER, share_encoder=True)(s_params, t_params, batch)[0]
    np.testing.assert_allclose(float(shared), float(full), rtol=1e-5)
    # ... and precomputed encoder outputs (the encoder cache) give it too.
    enc = Whisper(TEACHER).apply(
        {"params": t_params}, log_mel_batch(batch["audio"], batch["audio_len"]), method=Whisper.encode
    )
    cached = make_loss_fn(s_cfg, TEACHER, share_encoder=True)(
        s_params, t_params, {k: v for k, v in batch.items() if k != "audio"} | {"encoder_out": enc}
    )[0]
    np.testing.assert_allclose(float(cached), float(full), rtol=1e-5)


def test_hidden_loss_adds_the_final_hidden_mse_of_student_and_teacher():
    """loss.hidden_weight adds w * MSE of the two decoders' final LayerNorm outputs (what the
    tied projection reads), over target tokens; the hidden states here are each model's final
    LayerNorm applied (in numpy) to the last block's output from its own forward, the MSE
    from numpy."""
    t_params = init_params(TEACHER, jax.random.PRNGKey(0))
    s_cfg, s_params = make_student(TEACHER, t_params, 4, 2)
    batch = _batch()
    mel = log_mel_batch(batch["audio"], batch["audio_len"])

    def final_hidden(cfg, params):
        tokens = batch["decoder_input_ids"]
        _, cols = Whisper(cfg).apply({"params": params}, mel, tokens, mutable=["intermediates"])
        x = np.asarray(cols["intermediates"]["decoder"][f"layers_{cfg.decoder_layers - 1}"]["block_out"][0])
        ln = params["decoder"]["layer_norm"]
        mu, var = x.mean(-1, keepdims=True), x.var(-1, keepdims=True)
        return (x - mu) / np.sqrt(var + 1e-5) * np.asarray(ln["scale"]) + np.asarray(ln["bias"])

    mask = batch["labels"] != -100
    ref = ((final_hidden(s_cfg, s_params) - final_hidden(TEACHER, t_params)) ** 2).mean(-1)[mask].mean()
    assert ref > 0.01  # a 2-layer decoder does not reproduce the 4-layer one
    for share in (False, True):
        base = make_loss_fn(s_cfg, TEACHER, share_encoder=share)(s_params, t_params, batch)[0]
        value, parts = make_loss_fn(s_cfg, TEACHER, LossConfig(hidden_weight=0.5), share_encoder=share)(
            s_params, t_params, batch
        )
        np.testing.assert_allclose(float(parts["hidden_mse"]), ref, rtol=1e-5)
        np.testing.assert_allclose(float(value), float(base) + 0.5 * ref, rtol=1e-5)


def test_gate_learning_rate_multiplier_scales_the_gates_first_update():
    """Adam's first update is lr * g / (|g| + eps) per parameter, so a multiplier m moves the
    gates m times as far and leaves every other parameter as it was. The optimizer is the one
    make_train_step returns (the step applies it to the student's gradients); the gradients
    are random, since the rule holds for any."""
    t_params = init_params(TEACHER, jax.random.PRNGKey(0))
    s_cfg, s_params = make_student(TEACHER, t_params, 2, 2, gate="shared", gate_init_std=0.01)
    rng = np.random.default_rng(0)
    grads = jax.tree.map(lambda p: rng.normal(size=p.shape).astype(np.float32), s_params)
    moved = {}
    for mult in (1.0, 10.0):
        opt = OptimizerConfig(learning_rate=1e-3, warmup_steps=0, gate_learning_rate_multiplier=mult)
        _, tx = make_train_step(s_cfg, TEACHER, opt, total_steps=50)
        updates, _ = jax.jit(tx.update)(grads, tx.init(s_params), s_params)
        moved[mult] = _flat(updates)
    assert any("gate_proj" in k for k in moved[1.0])
    for k, d1 in moved[1.0].items():
        d10 = moved[10.0][k]
        if "gate_proj" in k:
            np.testing.assert_allclose(d10, 10 * d1, rtol=1e-3, atol=1e-9)
            assert np.abs(d1).max() > 0
        else:
            np.testing.assert_allclose(d10, d1, rtol=1e-5, atol=1e-9)


def test_gated_student_reports_its_mean_gate_per_attention_layer():
    """`gate/<path>` metrics equal the mean of the gate values the model itself sows into
    `intermediates`, over label positions in the decoder and all frames in the encoder."""
    t_params = init_params(TEACHER, jax.random.PRNGKey(0))
    s_cfg, s_params = make_student(
        TEACHER, t_params, 2, 2, gate="shared", gate_pi_init=0.5, gate_init_std=0.5
    )
    batch = _batch()
    _, parts = jax.jit(make_loss_fn(s_cfg, TEACHER))(s_params, t_params, batch)
    gates = {k: float(v) for k, v in parts["gates"].items()}
    expected_paths = {f"gate/encoder/layers_{i}/self_attn" for i in (0, 1)} | {
        f"gate/decoder/layers_{i}/{a}" for i in (0, 1) for a in ("self_attn", "encoder_attn")
    }
    assert set(gates) == expected_paths

    mel = log_mel_batch(batch["audio"], batch["audio_len"], n_mels=s_cfg.n_mels)
    forward = jax.jit(lambda p, m, t: Whisper(s_cfg).apply({"params": p}, m, t, mutable=["intermediates"]))
    _, cols = forward(s_params, mel, batch["decoder_input_ids"])
    mask = np.asarray(batch["labels"]) != -100
    for key, (value,) in flax.traverse_util.flatten_dict(cols["intermediates"]).items():
        if key[-1] != "gate":
            continue
        g = np.asarray(value)[..., 0]  # [b, q]
        want = g[mask].mean() if key[0] == "decoder" else g.mean()
        np.testing.assert_allclose(gates["gate/" + "/".join(key[:-1])], want, rtol=1e-5)
    assert len({round(v, 4) for v in gates.values()}) > 1  # std 0.5: the layers differ


def test_bf16_step_learns_with_f32_accumulating_dots():
    """A bf16 student and teacher (the `student.dtype` / `teacher_dtype` settings): the step
    still learns, and every dot with two bf16 operands sums in float32."""
    t_params = init_params(TEACHER, jax.random.PRNGKey(0))
    s_cfg, s_params = make_student(TEACHER, t_params, 2, 2, gate="shared")
    s_cfg, t_cfg = s_cfg.replace(dtype="bfloat16"), TEACHER.replace(dtype="bfloat16")
    step, tx = make_train_step(
        s_cfg, t_cfg, OptimizerConfig(learning_rate=3e-3, warmup_steps=2), total_steps=50
    )
    state, batch = init_state(s_params, tx), _batch()

    bf16 = jax.numpy.bfloat16
    jaxpr = jax.make_jaxpr(step)(state, t_params, batch).jaxpr
    both_bf16 = [e for e in dot_generals(jaxpr) if all(v.aval.dtype == bf16 for v in e.invars)]
    # Forward dots of teacher and student: at least the 6 Dense and 2 einsums of each of the
    # teacher's 4 encoder blocks.
    assert len(both_bf16) >= 4 * 8
    assert all(e.params["preferred_element_type"] == jax.numpy.float32 for e in both_bf16)

    step = jax.jit(step)
    losses = []
    for _ in range(12):
        state, m = step(state, t_params, batch)
        losses.append(float(m["train/loss"]))
    assert np.isfinite(losses).all() and losses[-1] < 0.7 * losses[0]
    assert all(x.dtype == np.float32 for x in jax.tree.leaves(state.params))


def test_cutting_padded_label_positions_leaves_loss_and_gradients_unchanged():
    """`data.label_bucket`: the loop cuts a batch's decoder positions to its longest row's
    (rounded up); the cut positions are padding, so the step must not see a difference."""
    t_params = init_params(TEACHER, jax.random.PRNGKey(0))
    s_cfg, s_params = make_student(TEACHER, t_params, 2, 2, gate="shared")
    loss_fn = jax.jit(jax.value_and_grad(make_loss_fn(s_cfg, TEACHER), has_aux=True))
    batch = _batch()
    used = used_label_positions(batch["labels"])
    assert used == 2 + 9 + 1 - 1  # prefix, text and end-of-text of the longer row, less one shift
    cut = trim_label_positions(batch, used, 4)
    assert cut["labels"].shape == (2, 12) and cut["decoder_input_ids"].shape == (2, 12)
    (full, full_parts), full_grads = loss_fn(s_params, t_params, batch)
    (short, short_parts), short_grads = loss_fn(s_params, t_params, cut)
    # Same sums over the same labelled positions; only the matmul shapes differ.
    np.testing.assert_allclose(float(short), float(full), rtol=1e-6)
    assert float(short_parts["tokens"]) == float(full_parts["tokens"])
    for key, value in full_parts["gates"].items():
        np.testing.assert_allclose(float(short_parts["gates"][key]), float(value), rtol=1e-6)
    for a, b in zip(jax.tree.leaves(full_grads), jax.tree.leaves(short_grads)):
        np.testing.assert_allclose(b, a, rtol=1e-4, atol=1e-7)
    # A bucket the batch already fills, or rounding past the padded length, cuts nothing.
    assert trim_label_positions(batch, used, 16) is batch
    assert trim_label_positions(batch, 15, 8) is batch
