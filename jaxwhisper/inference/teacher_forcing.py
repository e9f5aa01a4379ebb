"""Teacher-forced batches for analysis passes (calibration, outlier statistics): the model
transcribes the clips greedily, then its own transcripts are the decoder inputs, so that the
decoder sees the tokens it sees when decoding, and every activation is computed in one forward.
"""

from __future__ import annotations

from typing import NamedTuple

import jax.numpy as jnp
import numpy as np

from jaxwhisper.data.features import N_SAMPLES, content_frames, log_mel_batch
from jaxwhisper.inference.transcribe import Transcriber
from jaxwhisper.models.weights.base import LoadedModel


class ForcedBatch(NamedTuple):
    """One teacher-forced batch (numpy arrays; b rows, len the batch's token length)."""

    mel: np.ndarray  # [b, n_mels, 3000] log-mel of the first 30 s of each clip
    tokens: np.ndarray  # [b, len] prefix + transcript + end-of-text, padded with end-of-text
    encoder_mask: np.ndarray  # [b, n_audio_ctx] 1 for encoder frames that hold audio
    decoder_mask: np.ndarray  # [b, len] 1 up to and including the first end-of-text
    texts: list  # the greedy transcripts


def forced_batches(
    model: LoadedModel, clips: list[np.ndarray], batch_size: int, padding: str = "log_mel", transcriber=None
) -> list[ForcedBatch]:
    """Batches of `batch_size` clips (the last may be smaller), every batch of one token length
    (one compilation). Pass `transcriber` (a `Transcriber` of `model` with this batch size)
    when calling repeatedly, so that its decoder is compiled once."""
    if not clips:
        raise ValueError("teacher forcing needs at least one clip")
    transcriber = transcriber or Transcriber(model, batch_size=batch_size)
    tok = transcriber.tokenizer
    texts = transcriber.transcribe_arrays(clips)
    limit = model.config.n_text_ctx
    # An empty transcript is the prefix and end-of-text, what greedy decoding produced (the
    # first step suppresses the blank, so " " is never decoded there).
    rows = [
        (list(tok.prefix) + (tok.encode(" " + t.strip()) if t.strip() else []))[: limit - 1] + [tok.eot]
        for t in texts
    ]
    length = max(len(r) for r in rows)
    n_ctx = model.config.n_audio_ctx
    out = []
    for start in range(0, len(clips), batch_size):
        chunk = clips[start : start + batch_size]
        audio = np.zeros((len(chunk), N_SAMPLES), np.float32)
        lengths = np.zeros((len(chunk),), np.int32)
        tokens = np.full((len(chunk), length), tok.eot, np.int32)
        enc_mask = np.zeros((len(chunk), n_ctx), np.float32)
        dec_mask = np.zeros((len(chunk), length), np.float32)
        for i, (clip, row) in enumerate(zip(chunk, rows[start : start + batch_size])):
            n = min(clip.shape[0], N_SAMPLES)
            audio[i, :n], lengths[i] = clip[:n], n
            tokens[i, : len(row)] = row
            dec_mask[i, : len(row)] = 1.0
            # The encoder's stride-2 convolution: frame t covers mel frames 2t and 2t + 1.
            enc_mask[i, : min(n_ctx, -(-content_frames(n) // 2))] = 1.0
        mel = log_mel_batch(
            jnp.asarray(audio), jnp.asarray(lengths), n_mels=model.config.n_mels, padding=padding
        )
        out.append(
            ForcedBatch(np.asarray(mel), tokens, enc_mask, dec_mask, texts[start : start + batch_size])
        )
    return out
