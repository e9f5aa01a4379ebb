"""Batches: pure (seed, step) order, step-exact resume, process slices, drop counting."""

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import soundfile as sf

from jaxwhisper.data.batches import IGNORE, BatchConfig, make_labels
from jaxwhisper.data.examples import ListSource, RawExample
from jaxwhisper.data.order import MixtureOrder
from jaxwhisper.data.pipeline import BatchLoader
from jaxwhisper.data.sources import parse_spec
from jaxwhisper.data.validation import DataError, ValidationConfig

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_order_is_a_pure_function_of_the_draw_index():
    order = MixtureOrder([5, 11], seed=3)
    whole = order.draws(0, 200)
    again = MixtureOrder([5, 11], seed=3)
    assert again.draws(120, 40) == whole[120:160]  # from any point, without the past
    assert MixtureOrder([5, 11], seed=4).draws(0, 200) != whole


def test_each_epoch_is_a_permutation_and_weights_hold():
    order = MixtureOrder([7], seed=0)
    draws = order.draws(0, 21)
    for e in range(3):
        assert sorted(i for _, i, ep in draws if ep == e) == list(range(7))
    mix = MixtureOrder([100, 100, 100], weights=[0.6, 0.3, 0.1], seed=1)
    src = mix.sources_of(np.arange(30000))
    np.testing.assert_allclose(np.bincount(src) / 30000, [0.6, 0.3, 0.1], atol=0.01)
    # Large indices (a long resumed run) use the cached block counts.
    mix.BLOCK = 1000
    assert mix.draws(5500, 10) == MixtureOrder([100, 100, 100], [0.6, 0.3, 0.1], seed=1).draws(0, 5510)[5500:]


def test_make_labels_shifts_and_masks():
    inputs, labels = make_labels([50257, 50362], [11, 12, 13], eot=50256, length=8)
    assert inputs.tolist() == [50257, 50362, 11, 12, 13, 50256, 50256, 50256]
    assert labels.tolist() == [IGNORE, 11, 12, 13, 50256, IGNORE, IGNORE, IGNORE]
    inputs, labels = make_labels([50257, 50362], None, eot=50256, length=4)
    assert (labels == IGNORE).all()


def _tok():
    # A stand-in text encoder: one token per character (the tokenizer is tested elsewhere).
    return (50257, 50362), 50256, lambda text: [ord(c) % 1000 for c in text]


def _loader(fixture_manifest, **kw):
    prefix, eot, encode = _tok()
    fixture = parse_spec(str(fixture_manifest))
    small = ListSource("small", [fixture[i] for i in range(5)])
    return BatchLoader(
        [fixture, small],
        BatchConfig(global_batch=4, max_label_len=448, seed=7),
        prefix,
        eot,
        encode,
        weights=[0.5, 0.5],
        **kw,
    )


def test_resume_yields_exactly_the_same_batches(fixture_manifest):
    straight = [b for _, b in zip(range(6), _loader(fixture_manifest).iter_from_step(0))]
    resumed = [b for _, b in zip(range(3), _loader(fixture_manifest).iter_from_step(3))]
    assert [b["step"] for b in resumed] == [3, 4, 5]
    for a, b in zip(straight[3:], resumed):
        assert a["ids"] == b["ids"]
        for key in ("audio", "audio_len", "decoder_input_ids", "labels", "valid"):
            np.testing.assert_array_equal(a[key], b[key])
    assert {i.split("/")[0] for b in straight for i in b["ids"]} == {"manifest", "small"}
    assert all(b["valid"].all() for b in straight)


def test_bad_inputs_are_counted_by_reason(tmp_path):
    sr = 16000
    sf.write(tmp_path / "ok.wav", 0.1 * np.ones(sr, np.float32), sr)
    sf.write(tmp_path / "silent.wav", np.zeros(sr, np.float32), sr)
    sf.write(tmp_path / "long.wav", 0.1 * np.ones(31 * sr, np.float32), sr)
    sf.write(tmp_path / "empty.wav", np.zeros(0, np.float32), sr)
    sf.write(tmp_path / "nan.wav", np.array([0.1, np.nan] * 100, np.float32), sr, subtype="FLOAT")
    (tmp_path / "corrupt.wav").write_bytes(b"RIFF\x00\x00\x00\x00WAVEjunk")
    rows = [
        {"audio": "ok.wav", "text": "fine"},
        {"audio": "silent.wav", "text": "x"},
        {"audio": "long.wav", "text": "x"},
        {"audio": "empty.wav", "text": "x"},
        {"audio": "nan.wav", "text": "x"},
        {"audio": "corrupt.wav", "text": "x"},
        {"audio": "missing.wav", "text": "x"},
        {"audio": "ok.wav", "text": ""},
        {"audio": "ok.wav", "text": "y" * 500},
    ]
    manifest = tmp_path / "m.jsonl"
    manifest.write_text("".join(json.dumps(r) + "\n" for r in rows) + '{"no_audio": 1}\n')
    prefix, eot, encode = _tok()
    src = parse_spec(str(manifest))
    loader = BatchLoader([src], BatchConfig(global_batch=10, max_label_len=64), prefix, eot, encode)
    batch = loader.load_step(0)  # one epoch: every row once
    summary = loader.drops.summary()
    assert summary["seen"] == 10 and summary["dropped"] == 9
    assert summary["by_reason"] == {
        "silent": 1,
        "too_long": 1,
        "empty": 1,
        "non_finite": 1,
        "unreadable": 2,
        "empty_text": 1,
        "text_too_long": 1,
        "bad_row": 1,
    }
    assert batch["valid"].sum() == 1
    dropped = batch["valid"] == 0
    assert (batch["labels"][dropped] == IGNORE).all() and (batch["audio"][dropped] == 0).all()
    with pytest.raises(DataError, match="9 of 10 examples dropped"):
        loader.drops.check(0.5)
    loader.drops.check(0.95)


def test_validation_limits_are_configurable(tmp_path):
    sf.write(tmp_path / "a.wav", 0.1 * np.ones(32000, np.float32), 16000)
    src = ListSource("s", [RawExample("a", str(tmp_path / "a.wav"), "hi", "a")])
    prefix, eot, encode = _tok()
    loader = BatchLoader(
        [src],
        BatchConfig(global_batch=1, max_label_len=8),
        prefix,
        eot,
        encode,
        validation=ValidationConfig(max_audio_s=1.0),
    )
    loader.load_step(0)
    assert loader.drops.summary()["by_reason"] == {"too_long": 1}


def test_rows_are_as_wide_as_the_window_and_longer_clips_are_dropped(tmp_path):
    sf.write(tmp_path / "a.wav", 0.1 * np.ones(32000, np.float32), 16000)
    sf.write(tmp_path / "b.wav", 0.1 * np.ones(48000, np.float32), 16000)
    src = ListSource("s", [RawExample(n, str(tmp_path / f"{n}.wav"), "hi", n) for n in "ab"])
    prefix, eot, encode = _tok()
    loader = BatchLoader([src], BatchConfig(2, 8, window=40000), prefix, eot, encode)
    batch = loader.load_step(0)
    assert batch["audio"].shape == (2, 40000)
    assert loader.drops.summary()["by_reason"] == {"too_long": 1}
    assert sorted(batch["audio_len"].tolist()) == [0, 32000]


def test_two_processes_read_each_example_once_per_epoch(tmp_path, fixture_manifest):
    """Two real JAX processes (jax.distributed on localhost) each load their slices."""
    script = textwrap.dedent(f"""
        import json, sys
        import jax
        jax.distributed.initialize("localhost:{{port}}", 2, int(sys.argv[1]))
        from jaxwhisper.data.batches import BatchConfig
        from jaxwhisper.data.pipeline import BatchLoader
        from jaxwhisper.data.sources import parse_spec
        src = parse_spec({str(fixture_manifest)!r})
        loader = BatchLoader([src], BatchConfig(global_batch=8, seed=5), (1, 2), 0, lambda t: [3],
                             process_index=jax.process_index(), process_count=jax.process_count())
        ids = []
        for step in range(8):  # 64 draws: one full epoch of 59 and 5 more
            ids += [(i, e) for i, (_, _, e) in zip(loader.load_step(step)["ids"], loader.rows_of_step(step))]
        print(json.dumps(ids))
    """)
    port = 23456 + os.getpid() % 1000
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "PYTHONPATH": REPO}
    env.pop("XLA_FLAGS", None)
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", script.replace("{port}", str(port)), str(i)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=env,
            text=True,
        )
        for i in range(2)
    ]
    outs = [p.communicate(timeout=300) for p in procs]
    assert all(p.returncode == 0 for p in procs), [o[1][-2000:] for o in outs]
    ids = [json.loads(o[0].strip().splitlines()[-1]) for o in outs]
    epoch0 = [i for part in ids for i, e in part if e == 0]
    # Each process read its own 32 rows; together, every example of epoch 0 exactly once.
    assert [len(part) for part in ids] == [32, 32]
    assert len(epoch0) == 59 and len(set(epoch0)) == 59
