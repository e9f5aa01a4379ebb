"""The chunked mode's cuts: in the pauses, covering the recording, within the chunk limits."""

import numpy as np
import pytest

from jaxwhisper.inference.chunking import quiet_cuts


def energy_features(energy: np.ndarray) -> np.ndarray:
    """Log-mel [3, len + 1] whose mean over the bins is `energy` (plus the extra last frame)."""
    e = np.append(energy, energy[-1])
    return np.stack([e - 1.0, e, e + 1.0])


def test_quiet_cuts_fall_in_the_pauses_and_cover_the_recording():
    rng = np.random.default_rng(0)
    energy = rng.uniform(0.5, 1.0, 9500)
    pauses = [2600, 5300, 7950]  # 0.5 s pauses, each 20-30 s after the previous cut
    for p in pauses:
        energy[p - 25 : p + 25] = 0.0
    energy[1000:1005] = -1.0  # a short dip too early to cut at
    cuts = quiet_cuts(energy_features(energy))
    assert cuts[0] == 0 and cuts[-1] == 9500
    assert len(cuts) == len(pauses) + 2
    for cut, p in zip(cuts[1:-1], pauses):
        assert p - 25 <= cut < p + 25
    assert all(2000 <= b - a <= 3000 for a, b in zip(cuts[:-2], cuts[1:-1]))
    assert 0 < cuts[-1] - cuts[-2] <= 3000


def test_quiet_cuts_a_short_or_a_flat_recording():
    assert quiet_cuts(energy_features(np.ones(3000))) == [0, 3000]  # one window: no cut
    cuts = quiet_cuts(energy_features(np.ones(7001)))
    assert all(b - a <= 3000 for a, b in zip(cuts, cuts[1:])) and cuts[-1] == 7001
    assert quiet_cuts(np.zeros((3, 1))) == [0, 0]  # under one frame of content: one empty chunk
    with pytest.raises(ValueError, match="min_frames"):
        quiet_cuts(energy_features(np.ones(10)), min_frames=4000)
