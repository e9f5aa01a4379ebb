"""Checkpoint retention and round trip: the latest checkpoint plus the `keep_best` ones with
the lowest validation WER survive; the state and meta come back as saved."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxwhisper.train import checkpointing


def _state(step: int) -> dict:
    return {
        "params": {"w": jnp.full((2, 3), float(step)), "b": jnp.arange(3.0) + step},
        "step": jnp.int32(step),
    }


def _kept(directory) -> list[int]:
    return sorted(int(p.name) for p in directory.iterdir() if p.name.isdigit())


def test_keeps_the_latest_and_the_two_lowest_wers(tmp_path):
    wers = {1: 40.0, 2: 20.0, 3: 50.0, 4: 30.0, 5: 60.0}
    with checkpointing.make_manager(tmp_path, keep_best=2, async_save=False) as m:
        for step, wer in wers.items():
            checkpointing.save(m, step, _state(step), {"step": step}, {checkpointing.WER_KEY: wer})
        m.wait_until_finished()
        # Best two by lowest WER: 2 (20) and 4 (30); 5 is the latest, though the worst.
        assert _kept(tmp_path) == [2, 4, 5]
        # A checkpoint without a WER is kept only while it is the latest.
        checkpointing.save(m, 6, _state(6), {"step": 6}, None)
        checkpointing.save(m, 7, _state(7), {"step": 7}, {checkpointing.WER_KEY: 25.0})
        m.wait_until_finished()
        assert _kept(tmp_path) == [2, 7]  # 7 is both the latest and second best; 4 and 6 go


@pytest.mark.parametrize("keep_best", [1, 3])
def test_keep_best_is_the_count(tmp_path, keep_best):
    wers = [70.0, 10.0, 30.0, 20.0, 90.0]
    with checkpointing.make_manager(tmp_path, keep_best=keep_best, async_save=False) as m:
        for step, wer in enumerate(wers, start=1):
            checkpointing.save(m, step, _state(step), {}, {checkpointing.WER_KEY: wer})
        m.wait_until_finished()
    best = sorted(range(1, 6), key=lambda s: wers[s - 1])[:keep_best]
    assert _kept(tmp_path) == sorted(set(best) | {5})


def test_restore_returns_what_was_saved(tmp_path):
    with checkpointing.make_manager(tmp_path, async_save=True) as m:
        checkpointing.save(
            m, 3, _state(3), {"data": {"epoch": 1, "position": 17}}, {checkpointing.WER_KEY: 12.5}
        )
        m.wait_until_finished()
        abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), _state(0))
        state, meta = checkpointing.restore(m, 3, abstract)
    assert meta == {"data": {"epoch": 1, "position": 17}}
    for got, want in zip(jax.tree.leaves(state), jax.tree.leaves(_state(3))):
        assert got.dtype == want.dtype
        np.testing.assert_array_equal(got, want)


def test_retention_survives_a_restart(tmp_path):
    """A resumed run opens a new manager on the same directory: the WERs of the checkpoints
    already there must come from disk, or the best ones are deleted at the next save."""
    with checkpointing.make_manager(tmp_path, keep_best=2, async_save=False) as m:
        for step, wer in {1: 40.0, 2: 20.0, 3: 30.0}.items():
            checkpointing.save(m, step, _state(step), {}, {checkpointing.WER_KEY: wer})
        m.wait_until_finished()
    assert _kept(tmp_path) == [2, 3]
    with checkpointing.make_manager(tmp_path, keep_best=2, async_save=False) as m:
        assert m.metrics(2) == {checkpointing.WER_KEY: 20.0}
        checkpointing.save(m, 4, _state(4), {}, {checkpointing.WER_KEY: 90.0})
        m.wait_until_finished()
    assert _kept(tmp_path) == [2, 3, 4]  # the best two from before the restart, and the latest
