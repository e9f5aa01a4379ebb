"""The paper's corpora: hub location, columns and transcript cleaning, in one table.

| name | hub id | config | text column | id column | cleaning |
|---|---|---|---|---|---|
| librispeech | openslr/librispeech_asr | clean / other | text | id | none (upper case, no punctuation) |
| common_voice | mozilla-foundation/common_voice_16_1 | en | sentence | path | strip wrapping quotes; end with punctuation |
| peoples_speech | MLCommons/peoples_speech | clean | text | id | none (lower case, no punctuation) |
| voxpopuli | facebook/voxpopuli | en | raw_text (normalized_text if raw is empty) | audio_id | none |
| tedlium | LIUM/tedlium | release3 | text | id | drop `ignore_time_segment_in_scoring`; remove `<unk>`; `word 's` -> `word's` |
| fleurs | google/fleurs | en_us | raw_transcription | id | none |
| gigaspeech | speechcolab/gigaspeech | xs ... xl, dev, test | text | segment_id | punctuation tags to marks; drop `<SIL>`/`<MUSIC>`/`<NOISE>`/`<OTHER>` segments; lower case |

A cleaning function returns the cleaned text, or None for an utterance to drop (counted
as `dropped/text_rule` by the pipeline).
"""

from __future__ import annotations

import dataclasses
import re
from typing import Callable, Mapping, Optional

Cleaner = Callable[[Mapping], Optional[str]]


@dataclasses.dataclass(frozen=True)
class Corpus:
    repo: str
    config: Optional[str]
    text: str
    id: str
    clean: Cleaner
    audio: str = "audio"


def _plain(col: str) -> Cleaner:
    return lambda row: row.get(col)


def _common_voice(row: Mapping) -> Optional[str]:
    text = (row.get("sentence") or "").strip()
    if len(text) >= 2 and text[0] == text[-1] == '"':
        text = text[1:-1].strip()
    if text and text[-1] not in ".?!":
        text += "."
    return text


def _voxpopuli(row: Mapping) -> Optional[str]:
    return (row.get("raw_text") or "").strip() or row.get("normalized_text")


def _tedlium(row: Mapping) -> Optional[str]:
    text = row.get("text") or ""
    if "ignore_time_segment_in_scoring" in text:
        return None
    text = text.replace("<unk>", " ")
    text = re.sub(r"(\w) '(\w)", r"\1'\2", text)
    return re.sub(r"\s+", " ", text).strip()


_GIGA_PUNCT = {"<COMMA>": ",", "<PERIOD>": ".", "<QUESTIONMARK>": "?", "<EXCLAMATIONPOINT>": "!"}
_GIGA_GARBAGE = ("<SIL>", "<MUSIC>", "<NOISE>", "<OTHER>")


def _gigaspeech(row: Mapping) -> Optional[str]:
    text = row.get("text") or ""
    if any(tag in text for tag in _GIGA_GARBAGE):
        return None
    for tag, mark in _GIGA_PUNCT.items():
        text = text.replace(" " + tag, mark).replace(tag, mark)
    return re.sub(r"\s+", " ", text).strip().lower()


CORPORA: dict[str, Corpus] = {
    "librispeech": Corpus("openslr/librispeech_asr", "clean", "text", "id", _plain("text")),
    "common_voice": Corpus("mozilla-foundation/common_voice_16_1", "en", "sentence", "path", _common_voice),
    "peoples_speech": Corpus("MLCommons/peoples_speech", "clean", "text", "id", _plain("text")),
    "voxpopuli": Corpus("facebook/voxpopuli", "en", "raw_text", "audio_id", _voxpopuli),
    "tedlium": Corpus("LIUM/tedlium", "release3", "text", "id", _tedlium),
    "fleurs": Corpus("google/fleurs", "en_us", "raw_transcription", "id", _plain("raw_transcription")),
    "gigaspeech": Corpus("speechcolab/gigaspeech", "xs", "text", "segment_id", _gigaspeech),
}
