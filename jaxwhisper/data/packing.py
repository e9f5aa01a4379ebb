"""Packing: consecutive short utterances joined into one window of at most `max_audio_s`.

distil-whisper packs its training data this way (`concatenate_dataset` in its
`run_pseudo_labelling.py`): walking the dataset in order, the next utterance is appended
while the window stays within 30 s; the audio is concatenated and the texts are joined with
a space. Unpacked, a short clip wastes most of its 30 s encoder window and gives the
decoder one short sentence per window.

Windows are fixed when a source is wrapped (`sources.PackedSource`, the `pack=SECONDS` spec
option), a pure function of the base source's order and durations, so the pipeline's order
over windows stays a pure function of (seed, step). Each member is still validated on its
own when its window is loaded (`pipeline.validate_packed`). Unlike distil-whisper, speakers
are not compared: the sources carry no speaker column.
"""

from __future__ import annotations

import io
from typing import Optional, Sequence

import soundfile as sf


def audio_duration(audio) -> Optional[float]:
    """Seconds of a row's audio (a path or a hub `{"bytes", "path"}` dict) from its header,
    without decoding it; None when it cannot be read (the pipeline drops and counts it)."""
    try:
        if isinstance(audio, dict) and audio.get("bytes") is not None:
            info = sf.info(io.BytesIO(audio["bytes"]))
        else:
            info = sf.info(audio.get("path") if isinstance(audio, dict) else audio)
    except (sf.LibsndfileError, RuntimeError, TypeError, ValueError, OSError):
        return None
    return info.frames / info.samplerate


def pack_groups(durations: Sequence[Optional[float]], max_audio_s: float) -> list[range]:
    """Greedy windows of consecutive items: item i joins the current window while the
    window's total duration stays <= max_audio_s. An item of unknown duration, or longer
    than max_audio_s, is a window of its own.

    Returns:
      Index ranges that cover 0..len(durations)-1 in order.
    """
    groups: list[range] = []
    start, total = 0, 0.0
    for i, d in enumerate(durations):
        alone = d is None or d > max_audio_s
        if i > start and (alone or total + d > max_audio_s):
            groups.append(range(start, i))
            start, total = i, 0.0
        if alone:
            groups.append(range(i, i + 1))
            start, total = i + 1, 0.0
        else:
            total += d
    if start < len(durations):
        groups.append(range(start, len(durations)))
    return groups
