"""Calibration on audio: the float model transcribes the calibration clips, then its own
transcripts are teacher-forced batch by batch while every activation point's min/max is
recorded (`fakequant.calibrate`), so that the decoder sees the tokens it sees when decoding.
Ranges are saved as JSON and reused.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import jax.numpy as jnp
import numpy as np

from jaxwhisper.data.features import N_SAMPLES, log_mel_batch
from jaxwhisper.models.weights import LoadedModel
from jaxwhisper.quant.config import QuantConfig
from jaxwhisper.quant.fakequant import Ranges, calibrate

log = logging.getLogger(__name__)


def calibration_batches(
    model: LoadedModel, clips: list[np.ndarray], batch_size: int, n_batches: int, padding: str = "log_mel"
) -> list[tuple[np.ndarray, np.ndarray]]:
    """(mel [b, n_mels, 3000], tokens [b, len]) batches: the first 30 s of each clip and the
    float model's greedy transcript after the forced prefix, padded with end-of-text."""
    from jaxwhisper.transcribe import Transcriber

    want = batch_size * n_batches
    if len(clips) < want:
        log.warning(
            "calibration: %d clips for %d batches of %d; using what there is",
            len(clips),
            n_batches,
            batch_size,
        )
    clips = clips[:want]
    if not clips:
        raise ValueError("calibration needs at least one clip")
    transcriber = Transcriber(model, batch_size=batch_size)
    tok = transcriber.tokenizer
    texts = transcriber.transcribe_arrays(clips)
    limit = model.config.n_text_ctx
    rows = [(list(tok.prefix) + tok.encode(" " + t.strip()))[: limit - 1] + [tok.eot] for t in texts]
    length = max(len(r) for r in rows)  # one length for all batches: one compilation
    out = []
    for start in range(0, len(clips), batch_size):
        chunk = clips[start : start + batch_size]
        audio = np.zeros((len(chunk), N_SAMPLES), np.float32)
        lengths = np.zeros((len(chunk),), np.int32)
        tokens = np.full((len(chunk), length), tok.eot, np.int32)
        for i, (clip, row) in enumerate(zip(chunk, rows[start : start + batch_size])):
            n = min(clip.shape[0], N_SAMPLES)
            audio[i, :n], lengths[i] = clip[:n], n
            tokens[i, : len(row)] = row
        mel = log_mel_batch(
            jnp.asarray(audio), jnp.asarray(lengths), n_mels=model.config.n_mels, padding=padding
        )
        out.append((np.asarray(mel), tokens))
    return out


def calibrate_on_audio(
    model: LoadedModel, clips: list[np.ndarray], qcfg: QuantConfig, batch_size: int
) -> Ranges:
    batches = calibration_batches(model, clips, batch_size, qcfg.calibration_batches)
    return calibrate(model.config, model.params, batches, qcfg)


def save_ranges(ranges: Ranges, path: Path, meta: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({**meta, "ranges": {k: list(v) for k, v in ranges.items()}}, indent=1) + "\n")


def load_ranges(path: Path) -> Ranges:
    try:
        data = json.loads(Path(path).read_text())
        return {k: (float(lo), float(hi)) for k, (lo, hi) in data["ranges"].items()}
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise ValueError(f"{path}: not a ranges file written by jaxwhisper calibration ({e})") from None
