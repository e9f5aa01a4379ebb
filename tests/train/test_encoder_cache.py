"""The frozen encoder's outputs are computed once per window and read back afterwards."""

import numpy as np

from jaxwhisper.train.encoder_cache import EncoderCache


def test_each_window_is_encoded_once_and_reads_back_equal():
    calls = []

    def encode(audio, n):
        calls.append(len(n))
        return audio[:, :6].reshape(len(n), 2, 3) * 2.0

    cache = EncoderCache(1, encode)
    rng = np.random.default_rng(0)
    audio = {k: rng.normal(size=6).astype(np.float32) for k in "abcd"}

    def batch(ids):
        return {"ids": list(ids), "audio": np.stack([audio[i] for i in ids]), "audio_len": np.ones(len(ids))}

    first = cache(batch("ab"))
    again = cache(batch("ba"))
    np.testing.assert_array_equal(again, first[::-1])
    assert calls == [1, 1] and cache.stats()["train/encoder_cache_hits"] == 2
    mixed = cache(batch("ac"))  # only the new window is encoded
    assert calls == [1, 1, 1] and cache.stats()["train/encoder_cache_misses"] == 3
    np.testing.assert_array_equal(mixed, 2.0 * batch("ac")["audio"].reshape(2, 2, 3))


def test_a_full_cache_stops_growing_but_still_answers():
    cache = EncoderCache(1, lambda a, n: np.ones((len(n), 256, 1024), np.float32))  # 1 MiB a row
    b = {"ids": ["x", "y"], "audio": np.zeros((2, 4)), "audio_len": np.ones(2)}
    assert cache(b).shape == (2, 256, 1024)
    assert len(cache.store) == 1 and cache.bytes <= 2**20
