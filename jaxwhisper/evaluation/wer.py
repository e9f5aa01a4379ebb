"""Word error rate with Whisper's English text normalizer."""

from __future__ import annotations

import dataclasses
import functools
import re
from typing import Sequence

import jiwer


@functools.lru_cache(maxsize=1)
def _english_normalizer():
    from whisper_normalizer.english import EnglishTextNormalizer

    return EnglishTextNormalizer()


def normalize_text(text: str) -> str:
    """OpenAI's English normalizer, after spelling out telephone keys.

    IVR prompts (the shipped Asterisk recordings) write the keys as "*" and "#", which the
    normalizer would delete; their spoken words are "star" and "pound".
    """
    text = re.sub(r"\*", " star ", text)
    text = re.sub(r"#", " pound ", text)
    return _english_normalizer()(text)


@dataclasses.dataclass
class WerResult:
    """Corpus-level WER counts (percent in `wer`)."""

    wer: float
    substitutions: int
    deletions: int
    insertions: int
    words: int
    utterances: int
    skipped_empty_refs: int

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def word_error_rate(references: Sequence[str], hypotheses: Sequence[str]) -> WerResult:
    """Corpus WER over normalized texts; utterances whose reference normalizes to "" are skipped
    (and counted), since WER is undefined for them."""
    if len(references) != len(hypotheses):
        raise ValueError(f"{len(references)} references but {len(hypotheses)} hypotheses")
    refs, hyps, skipped = [], [], 0
    for r, h in zip(references, hypotheses):
        r, h = normalize_text(r), normalize_text(h or "")
        if not r.strip():
            skipped += 1
            continue
        refs.append(r)
        hyps.append(h)
    if not refs:
        return WerResult(float("nan"), 0, 0, 0, 0, 0, skipped)
    out = jiwer.process_words(refs, hyps)
    words = out.substitutions + out.deletions + out.hits
    errors = out.substitutions + out.deletions + out.insertions
    return WerResult(
        wer=100.0 * errors / words,
        substitutions=out.substitutions,
        deletions=out.deletions,
        insertions=out.insertions,
        words=words,
        utterances=len(refs),
        skipped_empty_refs=skipped,
    )
