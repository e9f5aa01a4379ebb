"""Which examples a training batch can use, and the count of those it cannot.

A row that cannot be used (bad manifest row, cleaning rule, unreadable, empty, non-finite,
silent, too long, empty or too-long text) keeps its place in the batch as padding (zero
audio, labels all -100, `valid` 0) so shapes never change (`batches.assemble_batch`), and is
counted by reason in `DropCounter`; `DropCounter.check` fails a run whose drop fraction is
too high.
"""

from __future__ import annotations

import collections
import dataclasses
import logging
from typing import Optional

import numpy as np

from jaxwhisper.data.audio import AudioError, decode_audio
from jaxwhisper.data.examples import PackedExample, RawExample
from jaxwhisper.data.features import N_SAMPLES, SAMPLE_RATE

log = logging.getLogger(__name__)

DROP_REASONS = (
    "bad_row",
    "text_rule",
    "unreadable",
    "empty",
    "non_finite",
    "silent",
    "too_long",
    "empty_text",
    "text_too_long",
    "no_pseudo_label",
    "wer_filter",
)


class DataError(RuntimeError):
    """Too much of the data was unusable; the message gives the counts."""


class DropCounter:
    """Counts examples seen and dropped, per source and reason."""

    def __init__(self):
        self.seen: collections.Counter = collections.Counter()
        self.dropped: collections.Counter = collections.Counter()  # (source, reason) -> n

    def add(self, source: str, reason: Optional[str]):
        self.seen[source] += 1
        if reason:
            self.dropped[(source, reason)] += 1

    @property
    def total_seen(self) -> int:
        return sum(self.seen.values())

    @property
    def total_dropped(self) -> int:
        return sum(self.dropped.values())

    def summary(self) -> dict:
        by_reason = collections.Counter()
        for (_, reason), n in self.dropped.items():
            by_reason[reason] += n
        return {
            "seen": self.total_seen,
            "dropped": self.total_dropped,
            "by_reason": dict(by_reason),
            "by_source": {f"{s}/{r}": n for (s, r), n in sorted(self.dropped.items())},
        }

    def check(self, max_drop_fraction: float):
        if self.total_seen and self.total_dropped / self.total_seen > max_drop_fraction:
            raise DataError(
                f"{self.total_dropped} of {self.total_seen} examples dropped "
                f"(more than {max_drop_fraction:.0%}): {self.summary()['by_source']}"
            )


_AUDIO_REASONS = {
    "no such file": "unreadable",
    "unreadable audio": "unreadable",
    "empty audio": "empty",
    "non-finite samples": "non_finite",
}


@dataclasses.dataclass(frozen=True)
class ValidationConfig:
    """Limits of usable examples.

    Attributes:
      max_audio_s: longest clip kept (one 30 s window by default).
      silence_peak: a clip whose peak |sample| is below this is `silent`.
      max_label_tokens: longest transcript in tokens (text + end-of-text), from the decoder's
        448 positions minus the forced prefix.
      require_text: drop examples without a transcript (training on references).
    """

    max_audio_s: float = N_SAMPLES / SAMPLE_RATE
    silence_peak: float = 1e-4
    max_label_tokens: int = 444
    require_text: bool = True


def validate_example(
    raw: RawExample, cfg: ValidationConfig, encode=None
) -> tuple[Optional[np.ndarray], Optional[list[int]], Optional[str]]:
    """Decodes and checks one example.

    Returns:
      (audio, text token ids, None) when usable, else (None, None, reason).
    """
    if raw.error:
        log.warning("%s: %s", raw.origin, raw.error)
        return None, None, "bad_row"
    if raw.drop:
        return None, None, raw.drop
    tokens = None
    if cfg.require_text:
        text = (raw.text or "").strip()
        if not text:
            return None, None, "empty_text"
        if encode is not None:
            tokens = encode(" " + text)
            if len(tokens) + 1 > cfg.max_label_tokens:
                return None, None, "text_too_long"
    try:
        audio = decode_audio(raw.audio, raw.origin)
    except AudioError as e:
        log.warning("%s", e)
        return None, None, _AUDIO_REASONS.get(e.reason, "unreadable")
    if audio.shape[0] > cfg.max_audio_s * SAMPLE_RATE:
        return None, None, "too_long"
    if np.abs(audio).max() < cfg.silence_peak:
        return None, None, "silent"
    return audio, tokens, None


def validate_packed(
    packed: PackedExample, cfg: ValidationConfig, encode=None
) -> tuple[Optional[np.ndarray], Optional[list[int]], list[Optional[str]]]:
    """Decodes and checks each member of a packed window, then joins the usable ones.

    A member that fails validation is left out (its reason is returned); if the joined
    text is longer than `cfg.max_label_tokens`, members are left out from the end
    (`text_too_long`) until it fits. Audio is concatenated; texts are joined with a space.

    Returns:
      (audio, token ids, reasons) with one reason (None: used) per member; audio and ids
      are None when no member is usable.
    """
    reasons: list[Optional[str]] = []
    kept: list[tuple[int, np.ndarray, str]] = []
    for j, raw in enumerate(packed.members):
        audio, _, reason = validate_example(raw, cfg, encode)
        reasons.append(reason)
        if reason is None:
            kept.append((j, audio, (raw.text or "").strip()))
    tokens = None
    while kept:
        text = " ".join(t for _, _, t in kept)
        if not cfg.require_text or encode is None:
            break
        tokens = encode(" " + text)
        if len(tokens) + 1 <= cfg.max_label_tokens:
            break
        reasons[kept.pop()[0]] = "text_too_long"
        tokens = None
    # Durations from the rows may be wrong: the window itself must fit too.
    while kept and sum(a.shape[0] for _, a, _ in kept) > cfg.max_audio_s * SAMPLE_RATE:
        reasons[kept.pop()[0]] = "too_long"
        if cfg.require_text and encode is not None:
            tokens = encode(" " + " ".join(t for _, _, t in kept)) if kept else None
    if not kept:
        return None, None, reasons
    return np.concatenate([a for _, a, _ in kept]), tokens, reasons


def validate_item(
    raw: RawExample | PackedExample, cfg: ValidationConfig, encode=None
) -> tuple[Optional[np.ndarray], Optional[list[int]], list[Optional[str]]]:
    """`validate_example` or, for a packed window, `validate_packed`.

    Returns:
      (audio, token ids, reasons): one reason (None: used) per example, so a packed window's
      members are counted one by one.
    """
    if isinstance(raw, PackedExample):
        return validate_packed(raw, cfg, encode)
    audio, tokens, reason = validate_example(raw, cfg, encode)
    return audio, tokens, [reason]
