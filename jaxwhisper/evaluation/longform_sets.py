"""Long recordings built from short real clips, and a measure of lost stretches of speech.

Read speech clips joined with short pauses make recordings whose reference is the joined
texts: what a long-form transcriber must reproduce without dropping or repeating a stretch.
"""

from __future__ import annotations

import dataclasses
from typing import Sequence

import jiwer
import numpy as np

from jaxwhisper.data.features import SAMPLE_RATE
from jaxwhisper.evaluation.wer import normalize_text


@dataclasses.dataclass
class Recording:
    """A built recording: samples [n] f32 at 16 kHz, its reference and the clips it joins."""

    id: str
    audio: np.ndarray
    text: str
    clip_ids: list[str]

    @property
    def duration_s(self) -> float:
        return self.audio.shape[0] / SAMPLE_RATE


def join_clips(
    clips: Sequence[tuple[str, np.ndarray, str]],
    target_s: Sequence[float],
    pause_s: tuple[float, float] = (0.3, 0.8),
    seed: int = 0,
) -> list[Recording]:
    """Joins `(id, samples, text)` clips in order into recordings of about `target_s` each.

    Clips are appended, each followed by a pause drawn uniformly from `pause_s`, until the
    recording reaches its target length; the next recording starts with the next clip. Clips
    left after the last target are not used.

    Returns:
      One `Recording` per target that could be filled (ids `long_000`, ...).
    """
    rng = np.random.default_rng(seed)
    out, i = [], 0
    for k, target in enumerate(target_s):
        parts, texts, ids, n = [], [], [], 0
        while i < len(clips) and n < target * SAMPLE_RATE:
            cid, audio, text = clips[i]
            pause = np.zeros(int(rng.uniform(*pause_s) * SAMPLE_RATE), np.float32)
            parts += [audio.astype(np.float32), pause]
            texts.append(text.strip())
            ids.append(cid)
            n += audio.shape[0] + pause.shape[0]
            i += 1
        if n < target * SAMPLE_RATE:
            break
        out.append(Recording(f"long_{k:03d}", np.concatenate(parts), " ".join(texts), ids))
    return out


def longest_deleted_run(reference: str, hypothesis: str) -> int:
    """Most consecutive reference words (normalized) the hypothesis leaves out."""
    ref, hyp = normalize_text(reference), normalize_text(hypothesis)
    if not ref.strip():
        return 0
    if not hyp.strip():
        return len(ref.split())
    chunks = jiwer.process_words(ref, hyp).alignments[0]
    return max((c.ref_end_idx - c.ref_start_idx for c in chunks if c.type == "delete"), default=0)
