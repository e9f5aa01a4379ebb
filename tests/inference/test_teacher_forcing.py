"""Teacher-forced batches: tokens are prefix + the transcript + end-of-text, padded with
end-of-text and cut to the decoder's positions; masks cover the audio and the tokens; the mel
is that of the first 30 s. The transcriber is a stand-in with canned texts (decoding has its
own tests), the tokenizer the real tiny.en one."""

import numpy as np
import pytest

from jaxwhisper.data.features import log_mel_numpy
from jaxwhisper.inference.teacher_forcing import forced_batches
from jaxwhisper.inference.tokenizer import WhisperTokenizer
from jaxwhisper.models.config import WhisperConfig
from jaxwhisper.models.weights.base import LoadedModel
from jaxwhisper.models.weights.resolve import bundled_model_files

SR = 16000


class CannedTranscriber:
    def __init__(self, tokenizer, texts):
        self.tokenizer, self.texts = tokenizer, texts

    def transcribe_arrays(self, clips):
        assert len(clips) == len(self.texts)
        return list(self.texts)


@pytest.fixture(scope="module")
def batches():
    tok = WhisperTokenizer(bundled_model_files("tiny.en")[1], multilingual=False)
    config = WhisperConfig(n_text_ctx=8)  # room for the 2-token prefix, 5 text tokens and eot
    model = LoadedModel(config, None, None, "stand-in")
    rng = np.random.default_rng(0)
    clips = [rng.normal(scale=0.1, size=n).astype(np.float32) for n in (8000, 20800, 31 * SR)]
    texts = ["  Hello world. ", "", " one two three four five six seven eight"]
    out = forced_batches(model, clips, batch_size=2, transcriber=CannedTranscriber(tok, texts))
    return tok, clips, texts, out


def test_tokens_and_decoder_mask(batches):
    tok, _, texts, out = batches
    assert [len(b.texts) for b in out] == [2, 1] and [t for b in out for t in b.texts] == texts
    prefix, eot = list(tok.prefix), tok.eot
    rows = [
        prefix + tok.encode(" Hello world.") + [eot],  # stripped, one leading space
        prefix + [eot],  # an empty transcript: what decoding produced (a blank is never first)
        (prefix + tok.encode(" one two three four five six seven eight"))[:7] + [eot],  # cut to 8
    ]
    assert len(rows[2]) == 8
    length = max(len(r) for r in rows)
    tokens = np.concatenate([b.tokens for b in out])
    dec_mask = np.concatenate([b.decoder_mask for b in out])
    assert {b.tokens.shape[1] for b in out} == {length}  # one token length for every batch
    for i, r in enumerate(rows):
        np.testing.assert_array_equal(tokens[i], r + [eot] * (length - len(r)))
        np.testing.assert_array_equal(dec_mask[i], [1.0] * len(r) + [0.0] * (length - len(r)))
    assert tokens.dtype == np.int32


def test_encoder_mask_and_mel(batches):
    _, clips, _, out = batches
    enc = np.concatenate([b.encoder_mask for b in out])
    assert enc.shape == (3, 1500)
    # 100 mel frames per second, two per encoder frame (rounded up); 30 s at most.
    for row, n_samples in zip(enc, (8000, 20800, 30 * SR)):
        frames = -(-(n_samples // 160) // 2)
        np.testing.assert_array_equal(row, [1.0] * frames + [0.0] * (1500 - frames))
    mel = np.concatenate([b.mel for b in out])
    assert mel.shape == (3, 80, 3000)
    for got, clip in zip(mel, clips):
        np.testing.assert_allclose(got, log_mel_numpy(clip[: 30 * SR]), atol=2e-3)


def test_no_clips_is_an_error():
    with pytest.raises(ValueError, match="at least one clip"):
        forced_batches(None, [], 2)
