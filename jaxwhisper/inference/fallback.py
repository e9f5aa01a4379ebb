"""faster-whisper's temperature fallback (`generate_with_fallback`; OpenAI's
`decode_with_fallback`): when a decoding must be redone, and which one is kept.

A decoding whose text is too repetitive (compression ratio above the threshold) or too
unlikely (average log-prob below it), and that is not silence, is redone at the next
temperature; when every temperature fails, the attempt with the highest average log-prob
among those under the compression threshold (else among all) is kept. The decoding itself
is `longform.LongformDecoder`'s.
"""

from __future__ import annotations

import dataclasses
import zlib
from typing import Optional, Protocol

# faster-whisper's and OpenAI's default `temperature` list
FALLBACK_TEMPERATURES = (0.0, 0.2, 0.4, 0.6, 0.8, 1.0)


class Thresholds(Protocol):
    """The checks' settings (`longform.LongformOptions` has them); None turns one off."""

    no_speech_threshold: Optional[float]
    log_prob_threshold: Optional[float]
    compression_ratio_threshold: Optional[float]


@dataclasses.dataclass
class Decoded:
    """One decoding of a window: its ids (no end-of-text) and what the fallback reads."""

    ids: list[int]
    sum_logprob: float
    no_speech_prob: float
    compression_ratio: float

    @property
    def avg_logprob(self) -> float:
        # OpenAI's and faster-whisper's: the end-of-text's log-prob counts as a token
        return self.sum_logprob / (len(self.ids) + 1)


def needs_fallback(d: Decoded, o: Thresholds) -> bool:
    """faster-whisper's rule: too repetitive or too unlikely, unless it is silence."""
    ratio_limit = o.compression_ratio_threshold
    repetitive = ratio_limit is not None and d.compression_ratio > ratio_limit
    unlikely = o.log_prob_threshold is not None and d.avg_logprob < o.log_prob_threshold
    silence = o.no_speech_threshold is not None and d.no_speech_prob > o.no_speech_threshold and unlikely
    return (repetitive or unlikely) and not silence


def fallback_choice(tried: list[Decoded], options: Thresholds) -> Decoded:
    """The attempt kept when every temperature failed: the highest average log-prob among
    those under the compression threshold, else among all (faster-whisper's choice)."""
    t = options.compression_ratio_threshold
    below = [d for d in tried if t is not None and d.compression_ratio <= t]
    return max(below or tried, key=lambda d: d.avg_logprob)


def compression_ratio(text: str) -> float:
    """Bytes over zlib-compressed bytes of `text` (OpenAI's repetition measure)."""
    data = text.encode("utf-8")
    return len(data) / len(zlib.compress(data)) if data else 0.0
