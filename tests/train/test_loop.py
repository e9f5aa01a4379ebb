"""The training loop: step-exact resume, 1 vs 8 devices, and a kill -9 during a checkpoint write."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import jax
import numpy as np
import pytest
from random_teachers import SMALL, save_random_teacher, write_training_clips

from jaxwhisper.config import train_config_from_dict
from jaxwhisper.data.batches import BatchConfig
from jaxwhisper.data.features import HOP
from jaxwhisper.data.pipeline import BatchLoader
from jaxwhisper.data.sources import parse_spec
from jaxwhisper.inference.tokenizer import WhisperTokenizer
from jaxwhisper.models.weights.resolve import bundled_model_files
from jaxwhisper.models.whisper import init_params
from jaxwhisper.train import loop, sharding
from jaxwhisper.train.step import make_loss_fn
from jaxwhisper.train.student import make_student

pytestmark = pytest.mark.slow  # whole training runs on real clips: 20-60 s each

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def teacher_dir(tmp_path_factory):
    """A small random teacher with the real tiny.en tokenizer, as a jaxwhisper checkpoint."""
    return save_random_teacher(tmp_path_factory.mktemp("teacher"))


@pytest.fixture(scope="module")
def manifest(tmp_path_factory, fixture_manifest):
    return write_training_clips(fixture_manifest, tmp_path_factory.mktemp("data") / "train.jsonl")


def _config(teacher_dir, manifest, **kw):
    c = {
        "teacher": str(teacher_dir),
        "student": {"encoder_layers": 1, "decoder_layers": 1, "gate": "shared"},
        "data": {"train": [str(manifest)], "max_label_len": 48, "seed": 3},
        "optimizer": {"learning_rate": 1e-3, "warmup_steps": 2},
        "global_batch": 8,
        "total_steps": 6,
        "eval_every_steps": 0,
        "checkpoint_every_steps": 3,
        "log_every_steps": 1,
    }
    c.update(kw)
    return train_config_from_dict(c)


def _tensorboard_scalars(logdir: Path, tag: str) -> list:
    """Values of `tag` in the TFRecord event files under logdir (read without TensorFlow)."""
    import struct

    from tensorboardX.proto import event_pb2

    values = []
    for path in sorted(Path(logdir).glob("events.out.tfevents.*")):
        data = path.read_bytes()
        pos = 0
        while pos < len(data):
            (n,) = struct.unpack("<Q", data[pos : pos + 8])
            event = event_pb2.Event.FromString(data[pos + 12 : pos + 12 + n])
            pos += 12 + n + 4  # length, its crc, the record, its crc
            values += [v.simple_value for v in event.summary.value if v.tag == tag]
    return values


def _final_params(workdir):
    import orbax.checkpoint as ocp

    with ocp.CheckpointManager(Path(workdir).absolute() / "checkpoints") as m:
        step = m.latest_step()
        return step, m.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore()))["state"][
            "params"
        ]


def test_six_steps_equal_three_restart_three(teacher_dir, manifest, tmp_path):
    from jaxwhisper.train.loop import train_and_evaluate

    cfg = _config(teacher_dir, manifest)
    train_and_evaluate(cfg, tmp_path / "straight")
    train_and_evaluate(cfg, tmp_path / "cut", stop_after=3)
    assert _final_params(tmp_path / "cut")[0] == 3
    assert not (tmp_path / "cut" / "export").exists()  # exported only when finished
    train_and_evaluate(cfg, tmp_path / "cut")
    (s1, a), (s2, b) = _final_params(tmp_path / "straight"), _final_params(tmp_path / "cut")
    assert s1 == s2 == 6
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        np.testing.assert_array_equal(x, y)
    losses = lambda d: [json.loads(x)["train/loss"] for x in (d / "metrics.jsonl").read_text().splitlines()]  # noqa: E731
    assert losses(tmp_path / "straight") == losses(tmp_path / "cut")
    # The finished student, exported as a model every command loads: the final params.
    from jaxwhisper.models.weights.resolve import resolve_model

    exported = resolve_model(str(tmp_path / "cut" / "export"))
    assert exported.config.encoder_layers == 1 and exported.config.gate == "shared"
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(exported.params)):
        np.testing.assert_array_equal(x, y)
    # TensorBoard events beside metrics.jsonl, with the same scalars.
    tb = _tensorboard_scalars(tmp_path / "straight" / "tensorboard", "train/loss")
    assert tb == pytest.approx(losses(tmp_path / "straight"), rel=1e-6)


def test_validation_curve_and_best_checkpoints(teacher_dir, manifest, tmp_path):
    """Validation runs at step 0 (baseline) and every 3 steps; checkpoints carry the WER."""
    from jaxwhisper.train.loop import train_and_evaluate

    cfg = _config(
        teacher_dir,
        manifest,
        eval_every_steps=3,
        data={"train": [str(manifest)], "eval": [str(manifest)], "max_label_len": 48, "max_eval_examples": 2},
    )
    last = train_and_evaluate(cfg, tmp_path)
    rows = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    evals = [r for r in rows if "eval/wer" in r]
    assert [r["step"] for r in evals] == [0, 3, 6]
    for r in evals:  # one validation set: the mean that selects checkpoints is its WER
        per_set = [k for k in r if k.startswith("eval/wer/")]
        assert len(per_set) == 1 and r[per_set[0]] == r["eval/wer"] and np.isfinite(r["eval/wer"])
    assert last["eval/wer"] == evals[-1]["eval/wer"]
    # Each checkpoint carries the WER logged at its step (retention itself: test_checkpointing.py).
    import orbax.checkpoint as ocp

    with ocp.CheckpointManager((tmp_path / "checkpoints").absolute()) as m:
        stored = {s: m.metrics(s)["eval/wer"] for s in m.all_steps()}
    assert stored == {r["step"]: r["eval/wer"] for r in evals if r["step"] in (3, 6)}


@pytest.fixture
def nan_at_step_2(monkeypatch):
    """The second training batch gets NaN audio (the data layer rejects NaN files, so a
    non-finite loss in real runs comes from divergence; this reproduces its effect)."""
    calls = {"n": 0}
    real = sharding.global_batch

    def poisoned(local, mesh, keys):
        calls["n"] += 1
        if calls["n"] == 2:
            local = dict(local, audio=np.full_like(local["audio"], np.nan))
        return real(local, mesh, keys)

    monkeypatch.setattr(sharding, "global_batch", poisoned)


def test_non_finite_loss_aborts_with_a_dump(teacher_dir, manifest, tmp_path, nan_at_step_2):
    from jaxwhisper.train.loop import train_and_evaluate

    with pytest.raises(FloatingPointError, match="nan_debug.json"):
        train_and_evaluate(_config(teacher_dir, manifest, log_every_steps=3), tmp_path)
    dump = json.loads((tmp_path / "nan_debug.json").read_text())
    assert dump["step"] == 3 and len(dump["recent_batch_ids"]) == 3  # steps 1-3: the culprit is among them
    assert not np.isfinite(dump["metrics"]["train/loss"])
    assert (tmp_path / "metrics.jsonl").read_text().count("\n") == 1  # flushed before the abort
    assert not (tmp_path / "checkpoints" / "3").exists()  # a NaN state is never saved


def test_non_finite_step_skipped_within_the_bound(teacher_dir, manifest, tmp_path, nan_at_step_2):
    from jaxwhisper.train.loop import train_and_evaluate

    last = train_and_evaluate(_config(teacher_dir, manifest, max_nan_skips=1, total_steps=4), tmp_path)
    rows = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["train/skipped_steps"] for r in rows] == [0, 1, 1, 1]
    assert not np.isfinite(rows[1]["train/loss"]) and np.isfinite(last["train/loss"])
    step, params = _final_params(tmp_path)
    assert step == 4 and all(np.isfinite(x).all() for x in jax.tree.leaves(params))


def test_one_device_and_eight_agree(teacher_dir, manifest):
    """Loss and gradients on a 1x1 mesh and on data=2 x fsdp=4 (8 fake CPU devices)."""
    assert jax.device_count() == 8
    teacher = init_params(SMALL, jax.random.PRNGKey(0))
    s_cfg, s_params = make_student(SMALL, teacher, 1, 1, gate="shared")
    _, tok_dir = bundled_model_files("tiny.en")
    tok = WhisperTokenizer(tok_dir, False)
    shapes = BatchConfig(8, 48, 0, SMALL.n_frames * HOP)
    loader = BatchLoader([parse_spec(str(manifest))], shapes, tok.prefix, tok.eot, tok.encode)
    batch = {k: loader.load_step(0)[k] for k in ("audio", "audio_len", "decoder_input_ids", "labels")}
    loss_fn = jax.value_and_grad(make_loss_fn(s_cfg, SMALL), has_aux=True)
    results = []
    for mesh in (sharding.make_mesh(1, jax.devices()[:1]), sharding.make_mesh(4)):
        p_sh = sharding.tree_shardings(s_params, mesh)
        t_sh = sharding.tree_shardings(teacher, mesh)
        f = jax.jit(loss_fn, in_shardings=(p_sh, t_sh, sharding.batch_sharding(mesh)))
        (loss, _), grads = f(
            jax.device_put(s_params, p_sh),
            jax.device_put(teacher, t_sh),
            sharding.global_batch(batch, mesh, batch),
        )
        results.append((float(loss), jax.device_get(grads)))
    assert sharding.make_mesh(4).shape == {"data": 2, "fsdp": 4}
    np.testing.assert_allclose(results[0][0], results[1][0], rtol=1e-5)
    for g1, g8 in zip(jax.tree.leaves(results[0][1]), jax.tree.leaves(results[1][1])):
        np.testing.assert_allclose(g1, g8, atol=1e-5, rtol=1e-4)


KILL_SCRIPT = """
import sys
from jaxwhisper.config import train_config_from_dict
from jaxwhisper.train.loop import train_and_evaluate
cfg = train_config_from_dict({cfg})
train_and_evaluate(cfg, sys.argv[1])
"""


def test_kill_during_checkpoint_write_keeps_the_previous_one(teacher_dir, manifest, tmp_path):
    cfg = {
        "teacher": str(teacher_dir),
        "student": {"encoder_layers": 1, "decoder_layers": 1},
        "data": {"train": [str(manifest)], "max_label_len": 48},
        "optimizer": {"warmup_steps": 1},
        "global_batch": 8,
        "total_steps": 400,
        "eval_every_steps": 0,
        "checkpoint_every_steps": 1,
        "log_every_steps": 1,
    }
    env = {**os.environ, "PYTHONPATH": str(REPO), "JAX_PLATFORMS": "cpu"}
    env.pop("XLA_FLAGS", None)
    work = tmp_path / "run"
    proc = subprocess.Popen(
        [sys.executable, "-c", KILL_SCRIPT.format(cfg=repr(cfg)), str(work)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    ckpts = work / "checkpoints"
    deadline = time.time() + 240
    killed_mid_write = False
    while time.time() < deadline and proc.poll() is None:
        finished = [p for p in ckpts.glob("*") if p.name.isdigit()] if ckpts.exists() else []
        in_flight = [p for p in ckpts.glob("*tmp*")] if ckpts.exists() else []
        if len(finished) >= 2 and in_flight:
            proc.send_signal(signal.SIGKILL)
            killed_mid_write = True
            break
        time.sleep(0.005)
    proc.wait(timeout=60)
    assert killed_mid_write, proc.stderr.read()[-3000:].decode()
    import orbax.checkpoint as ocp

    with ocp.CheckpointManager(ckpts.absolute()) as m:
        latest = m.latest_step()
        restored = m.restore(latest, args=ocp.args.Composite(state=ocp.args.StandardRestore()))
    assert int(restored["state"]["step"]) == latest
    from jaxwhisper.train.loop import train_and_evaluate

    resumed = train_config_from_dict({**cfg, "total_steps": latest + 2, "optimizer": {"warmup_steps": 1}})
    train_and_evaluate(resumed, work)
    with ocp.CheckpointManager(ckpts.absolute()) as m:
        assert m.latest_step() == latest + 2


def test_frozen_encoder_with_cache_and_packing(manifest, tmp_path):
    """A student that keeps the teacher's encoder, trained on clips and packed windows: the
    cached run computes the same losses as the uncached one, the exported encoder is the
    teacher's, its gates are in the decoder only, and packed members are counted."""
    from jaxwhisper.models.weights.resolve import resolve_model
    from jaxwhisper.train.loop import train_and_evaluate

    # A 10 s window, for packed windows of 2-3 clips.
    teacher_dir = save_random_teacher(tmp_path / "teacher", SMALL.replace(n_audio_ctx=500))
    kw = dict(
        student={"encoder_layers": 2, "decoder_layers": 1, "gate": "shared", "freeze_encoder": True},
        data={"train": [str(manifest), f"{manifest}?pack=10"], "max_label_len": 64, "seed": 3},
        total_steps=4,
    )
    train_and_evaluate(_config(teacher_dir, manifest, **kw), tmp_path / "plain")
    train_and_evaluate(_config(teacher_dir, manifest, encoder_cache_mb=64, **kw), tmp_path / "cached")
    rows = lambda d: [json.loads(x) for x in (d / "metrics.jsonl").read_text().splitlines()]  # noqa: E731
    plain, cached = rows(tmp_path / "plain"), rows(tmp_path / "cached")
    np.testing.assert_allclose([r["train/loss"] for r in cached], [r["train/loss"] for r in plain], rtol=1e-5)
    assert cached[-1]["train/encoder_cache_hits"] > 0  # 8 clips + their windows, 4 steps of 8
    student, teacher = resolve_model(str(tmp_path / "cached" / "export")), resolve_model(str(teacher_dir))
    assert not student.config.gated_encoder
    for x, y in zip(jax.tree.leaves(student.params["encoder"]), jax.tree.leaves(teacher.params["encoder"])):
        np.testing.assert_array_equal(x, y)
    assert any("gate" in str(k) for k in jax.tree_util.tree_flatten_with_path(student.params["decoder"])[0])
    drops = json.loads((tmp_path / "cached" / "data_drops.json").read_text())
    assert drops["seen"] > 4 * 8  # members of packed windows count one by one


def test_two_validation_sets_of_one_name_are_refused_before_loading(tmp_path, manifest, monkeypatch):
    """`eval/wer/NAME` would hold only the second set's WER."""
    other = tmp_path / "other" / manifest.name
    other.parent.mkdir()
    other.write_text(manifest.read_text())  # its audio paths are absolute

    def no_teacher(*a, **k):
        raise AssertionError("the teacher was loaded before the validation sets were checked")

    monkeypatch.setattr(loop, "resolve_model", no_teacher)
    cfg = _config("unused", manifest, data={"train": [str(manifest)], "eval": [str(manifest), str(other)]})
    with pytest.raises(ValueError, match="are both named 'train'"):
        loop.train_and_evaluate(cfg, tmp_path / "run")
