"""Whisper tokenizer from a model's `tokenizer.json`: special tokens, prefix, suppression.

Uses the `tokenizers` library directly (what transformers' WhisperTokenizerFast wraps), so
the same file that ships with CTranslate2 and HF checkpoints is read without conversion.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Optional, Sequence

import tokenizers

LANGUAGES = (
    "en zh de es ru ko fr ja pt tr pl ca nl ar sv it id hi fi vi he uk el ms cs ro da hu ta no th "
    "ur hr bg lt la mi ml cy sk te fa lv bn sr az sl kn et mk br eu is hy ne mn bs kk sq sw gl mr "
    "pa si km sn yo so af oc ka be tg sd gu am yi lo uz fo ht ps tk nn mt sa lb my bo tl mg as tt "
    "haw ln ha ba jw su yue"
).split()


class WhisperTokenizer:
    """Text <-> ids plus Whisper's special tokens.

    Args:
      path: a `tokenizer.json` file or a directory holding one.
      multilingual: whether the model predicts language and task tokens (vocab >= 51865).
      language: language code for the forced prefix (multilingual only).
      task: "transcribe" or "translate" (multilingual only).
    """

    def __init__(
        self,
        path: str | Path,
        multilingual: bool,
        language: str = "en",
        task: str = "transcribe",
    ):
        path = Path(path)
        if path.is_dir():
            path = path / "tokenizer.json"
        if not path.exists():
            raise FileNotFoundError(f"{path}: no tokenizer.json for this model")
        self.path = path
        self.tokenizer = tokenizers.Tokenizer.from_file(str(path))
        self.multilingual = multilingual
        if multilingual and language not in LANGUAGES:
            raise ValueError(f"unknown language {language!r}; known: {' '.join(LANGUAGES)}")
        if task not in ("transcribe", "translate"):
            raise ValueError(f"task must be transcribe or translate, got {task!r}")
        self.language = language
        self.task = task

    def _id(self, token: str) -> Optional[int]:
        return self.tokenizer.token_to_id(token)

    def _required(self, token: str) -> int:
        i = self._id(token)
        if i is None:
            raise ValueError(f"{self.path}: tokenizer has no {token}")
        return i

    @functools.cached_property
    def eot(self) -> int:
        return self._required("<|endoftext|>")

    @functools.cached_property
    def sot(self) -> int:
        return self._required("<|startoftranscript|>")

    @functools.cached_property
    def no_timestamps(self) -> int:
        return self._required("<|notimestamps|>")

    @functools.cached_property
    def timestamp_begin(self) -> int:
        """`<|0.00|>`: the id after `<|notimestamps|>` (as CTranslate2 takes it). The
        CTranslate2 packages' tokenizer.json lacks the timestamp tokens; their
        vocabulary.txt, where present, must agree."""
        begin = self.no_timestamps + 1
        vocab = self.path.parent / "vocabulary.txt"
        if vocab.exists():
            lines = vocab.read_text(encoding="utf-8").split("\n")
            if len(lines) <= begin or lines[begin] != "<|0.00|>":
                raise ValueError(f"{vocab}: id {begin} is not <|0.00|>")
        return begin

    @functools.cached_property
    def special_ids(self) -> dict[str, Optional[int]]:
        names = ("transcribe", "translate", "startoflm", "startofprev")
        ids = {n: self._id(f"<|{n}|>") for n in names}
        ids["no_speech"] = self._id("<|nospeech|>") or self._id("<|nocaptions|>")
        return ids

    @property
    def prefix(self) -> tuple[int, ...]:
        """Forced decoder prefix: sot, (language, task,) no-timestamps."""
        if self.multilingual:
            lang = self._required(f"<|{self.language}|>")
            task = self._required(f"<|{self.task}|>")
            return (self.sot, lang, task, self.no_timestamps)
        return (self.sot, self.no_timestamps)

    def encode(self, text: str) -> list[int]:
        return self.tokenizer.encode(text, add_special_tokens=False).ids

    def decode(self, ids: Sequence[int]) -> str:
        """Text of `ids`; special and timestamp tokens (ids >= eot) are dropped."""
        return self.tokenizer.decode([int(i) for i in ids if i < self.eot], skip_special_tokens=False)

    @functools.cached_property
    def non_speech_tokens(self) -> tuple[int, ...]:
        """Symbols Whisper suppresses (speaker tags, music notes, brackets), as OpenAI does."""
        symbols = list('"#()*+/:;<=>@[\\]^_`{|}~「」『』')
        symbols += "<< >> <<< >>> -- --- -( -[ (' (\" (( )) ((( ))) [[ ]] {{ }} ♪♪ ♪♪♪".split()
        miscellaneous = set("♩♪♫♬♭♮♯")
        result = {self.encode(" -")[0], self.encode(" '")[0]}
        for symbol in symbols + list(miscellaneous):
            for tokens in (self.encode(symbol), self.encode(" " + symbol)):
                if len(tokens) == 1 or symbol in miscellaneous:
                    result.add(tokens[0])
        return tuple(sorted(result))

    @functools.cached_property
    def suppress_tokens(self) -> tuple[int, ...]:
        """Suppressed at every step: non-speech symbols and task/control tokens."""
        ids = set(self.non_speech_tokens)
        ids.update(i for i in self.special_ids.values() if i is not None)
        ids.add(self.sot)
        return tuple(sorted(ids))

    @functools.cached_property
    def suppress_at_begin(self) -> tuple[int, ...]:
        """Suppressed at the first sampled step only: a blank and end-of-text."""
        return tuple(self.encode(" ")) + (self.eot,)
