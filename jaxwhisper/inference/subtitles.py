"""SubRip (.srt) and WebVTT (.vtt) text of transcription segments.

Segments are `{"start", "end", "text"}` dicts in seconds (`Transcriber.segments`). Times are
rounded to the millisecond and always carry hours (`00:01:02,345` in SRT, `00:01:02.345` in
WebVTT); cues are numbered from 1 in SRT; segments without text are left out.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable

FORMATS = ("jsonl", "srt", "vtt")


def format_time(seconds: float, decimal: str) -> str:
    """`HH:MM:SS<decimal>mmm` of a non-negative time in seconds."""
    ms = round(max(seconds, 0.0) * 1000)
    h, ms = divmod(ms, 3_600_000)
    m, ms = divmod(ms, 60_000)
    s, ms = divmod(ms, 1000)
    return f"{h:02d}:{m:02d}:{s:02d}{decimal}{ms:03d}"


def _cues(segments: Iterable[dict]) -> list[dict]:
    return [s for s in segments if s["text"].strip()]


def srt_text(segments: Iterable[dict]) -> str:
    """SubRip text: numbered cues separated by blank lines."""
    blocks = [
        f"{i}\n{format_time(s['start'], ',')} --> {format_time(s['end'], ',')}\n{s['text'].strip()}\n"
        for i, s in enumerate(_cues(segments), start=1)
    ]
    return "\n".join(blocks)


def vtt_text(segments: Iterable[dict]) -> str:
    """WebVTT text: the `WEBVTT` header, then cues separated by blank lines."""
    blocks = [
        f"{format_time(s['start'], '.')} --> {format_time(s['end'], '.')}\n{s['text'].strip()}\n"
        for s in _cues(segments)
    ]
    return "\n".join(["WEBVTT\n"] + blocks)


def subtitle_text(segments: Iterable[dict], fmt: str) -> str:
    """`srt_text` or `vtt_text` by format name."""
    if fmt == "srt":
        return srt_text(segments)
    if fmt == "vtt":
        return vtt_text(segments)
    raise ValueError(f"subtitle format must be srt or vtt, got {fmt!r}")


def output_format(fmt: str | None, output: str | None) -> str:
    """The format asked for, else the one the output's suffix names, else JSONL."""
    if fmt:
        if fmt not in FORMATS:
            raise ValueError(f"format must be one of {FORMATS}, got {fmt!r}")
        return fmt
    suffix = Path(output).suffix.lstrip(".").lower() if output else ""
    return suffix if suffix in ("srt", "vtt") else "jsonl"
