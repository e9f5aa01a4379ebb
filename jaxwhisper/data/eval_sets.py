"""Evaluation sets: the rows of a data spec with a reference, decoded once, held in memory.

One `EvalSet` serves every consumer of whole sets: evaluation and validation (each process
its share, `streams.host_rows`: rows i % P == p of a map-style source, a streaming one's
own shards), calibration and the outlier analysis (the first N clips, on every process).
Unusable rows are counted by reason and logged, never silently lost.
"""

from __future__ import annotations

import dataclasses
import logging
from collections import Counter
from dataclasses import dataclass, field
from typing import Optional

from jaxwhisper.data.audio import AudioError, decode_audio
from jaxwhisper.data.examples import Source
from jaxwhisper.data.sources import parse_spec
from jaxwhisper.data.streams import host_rows

log = logging.getLogger(__name__)

SKIP_REASONS = ("bad_row", "text_rule", "no_reference", "bad_audio")


@dataclass
class EvalSet:
    """This process's share of one evaluation set, decoded to 16 kHz mono.

    Attributes:
      name, spec: the set's name (from its source) and its data spec.
      ids, references: per utterance, in source order.
      clips: float32 [samples] each, 16 kHz mono.
      skipped: rows left out, by reason (bad_row, text_rule, no_reference, bad_audio).
    """

    name: str
    spec: str
    ids: list = field(default_factory=list)
    references: list = field(default_factory=list)
    clips: list = field(default_factory=list)
    skipped: Counter = field(default_factory=Counter)

    @property
    def audio_s(self) -> float:
        return float(sum(c.shape[0] for c in self.clips)) / 16000


def load_eval_set(
    spec: str,
    max_examples: int = 0,
    process_index: int = 0,
    process_count: int = 1,
    source: Optional[Source] = None,
) -> EvalSet:
    """Reads the utterances `i` of `spec` with `i % process_count == process_index`.

    Args:
      max_examples: the first N utterances of the set (0: all), before sharding.
      source: `parse_spec(spec)` when the caller has it already (checked before a run).
    """
    src = source if source is not None else parse_spec(spec)
    out = EvalSet(name=src.name, spec=spec)
    for _, row in host_rows(src, process_index, process_count, max_examples):
        if not row.error and row.text is not None and not isinstance(row.text, str):
            # Manifests turn these into bad rows when read; hub columns may hold anything.
            row = dataclasses.replace(row, error=f"text is {type(row.text).__name__}, not a string")
        if row.error or row.drop:
            out.skipped["bad_row" if row.error else "text_rule"] += 1
            log.warning("%s: skipped (%s)", row.origin, row.error or row.drop)
            continue
        if not row.text:
            out.skipped["no_reference"] += 1
            log.warning("%s: skipped (no reference transcript)", row.origin)
            continue
        try:
            clip = decode_audio(row.audio, row.origin)
        except AudioError as e:
            out.skipped["bad_audio"] += 1
            log.warning("skipped: %s", e)
            continue
        out.ids.append(row.id)
        out.references.append(row.text)
        out.clips.append(clip)
    return out
