"""Packing: consecutive short utterances joined into one window of at most `max_audio_s`.

distil-whisper packs its training data this way (`concatenate_dataset` in its
`run_pseudo_labelling.py`): walking the dataset in order, the next utterance is appended
while the window stays within 30 s; the audio is concatenated and the texts are joined with
a space. Unpacked, a short clip wastes most of its 30 s encoder window and gives the
decoder one short sentence per window.

Windows of a map-style source are fixed when it is wrapped (`sources.PackedSource`, the
`pack=SECONDS` spec option), a pure function of the base source's order and durations, so the
pipeline's order over windows stays a pure function of (seed, step). A streaming source is
packed as its rows arrive, by the same rule (`GreedyPacker`; `streams.PackingStream`).
With a `TextBudget` (the training loop gives one: the label positions of a row) a window also
closes before its text would overflow the label, so no member is cut off for its text (a
corpus whose cleaning rules rewrite texts can still have some). Each member is still
validated on its own when its window is loaded (`validation.validate_packed`). Unlike
distil-whisper, speakers are not compared: the sources carry no speaker column.
"""

from __future__ import annotations

import io
from typing import Callable, NamedTuple, Optional, Sequence

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


def row_duration(raw) -> Optional[float]:
    """Seconds of a RawExample: its `duration` when the row says so, else from the audio
    header; None for a broken row or unreadable audio (a window of its own)."""
    if raw.duration is not None:
        return raw.duration
    if raw.error or raw.audio is None:
        return None
    return audio_duration(raw.audio)


class GreedyPacker:
    """The packing rule, one item at a time (map-style sources run it over all durations
    up front, streaming ones as rows arrive): item i joins the current window while the
    window's total duration stays <= max_audio_s and, with a text budget, its text cost
    (label tokens) stays <= max_text; an item of unknown duration, longer than max_audio_s
    or costlier than max_text is a window of its own."""

    def __init__(self, max_audio_s: float, max_text: Optional[int] = None):
        self.max_audio_s, self.max_text = max_audio_s, max_text
        self.count, self.total, self.text = 0, 0.0, 0

    def add(self, d: Optional[float], cost: int = 0) -> tuple[bool, bool]:
        """Places the next item of duration `d` (s) and text cost `cost`.

        Returns:
          (close_before, alone): whether the current window ends before this item, and
          whether this item is a window on its own (ends right after it).
        """
        budget = self.max_text
        alone = d is None or d > self.max_audio_s or (budget is not None and cost > budget)
        full = self.total + (d or 0.0) > self.max_audio_s or (
            budget is not None and self.text + cost > budget
        )
        close_before = self.count > 0 and (alone or full)
        if close_before or alone:
            self.count, self.total, self.text = 0, 0.0, 0
        if not alone:
            self.count, self.total, self.text = self.count + 1, self.total + d, self.text + cost
        return close_before, alone


def pack_groups(
    durations: Sequence[Optional[float]],
    max_audio_s: float,
    costs: Optional[Sequence[int]] = None,
    max_text: Optional[int] = None,
) -> list[range]:
    """Windows of consecutive items by `GreedyPacker`'s rule.

    Args:
      durations: seconds per item (None: unknown).
      costs: text cost per item (label tokens), with `max_text` the most a window holds.

    Returns:
      Index ranges that cover 0..len(durations)-1 in order.
    """
    groups: list[range] = []
    packer, start = GreedyPacker(max_audio_s, max_text), 0
    for i, d in enumerate(durations):
        close_before, alone = packer.add(d, costs[i] if costs is not None else 0)
        if close_before:
            groups.append(range(start, i))
            start = i
        if alone:
            groups.append(range(i, i + 1))
            start = i + 1
    if start < len(durations):
        groups.append(range(start, len(durations)))
    return groups


class TextBudget(NamedTuple):
    """Label tokens a packed window may hold: `count(text)` per member, `max_tokens` per window.

    With Whisper's byte-level BPE, whose pre-tokenizer splits before every space, the tokens
    of members joined with a space are the sum of each member's `" " + text` tokens, so a
    window within the budget never has a member left out as `text_too_long`.
    """

    count: Callable[[str], int]
    max_tokens: int

    @classmethod
    def of(cls, encode: Callable[[str], list], max_tokens: int) -> "TextBudget":
        return cls(lambda text: len(encode(" " + text.strip())) if text and text.strip() else 0, max_tokens)
