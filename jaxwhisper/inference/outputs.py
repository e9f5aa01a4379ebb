"""Where `jaxwhisper transcribe` writes its records: JSON lines, one subtitle text, or one
subtitle file per input in a folder. Imports no JAX, so outputs are checked before a model
is loaded."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional, Sequence, TextIO

from jaxwhisper.data.preflight import PreflightError, check_output_dir, check_output_file
from jaxwhisper.inference.subtitles import subtitle_text


class OutputError(PreflightError):
    """An output that cannot be written; the message names it and the cause."""


def open_output(path: str | Path) -> TextIO:
    """`path` opened for writing, its folder created.

    Raises:
      OutputError: the folder cannot be created or the file cannot be written.
    """
    try:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        return open(path, "w")
    except OSError as e:
        raise OutputError(f"{path}: cannot write output ({e.strerror})") from None


def check_transcript_output(fmt: str, output: Optional[str], inputs: Sequence[str]) -> Optional[Path]:
    """Checks where the records of `inputs` go in format `fmt` (`subtitles.output_format`).

    Several inputs written as subtitles get one file each, in the `output` folder; anything
    else goes to the `output` file (stdout when None).

    Returns:
      The folder of per-input subtitle files, or None when the records go to one stream.

    Raises:
      ValueError: subtitles of several inputs without an output folder, or an output that
        is an input or cannot be written.
    """
    if fmt != "jsonl" and len(inputs) > 1:
        if output is None or Path(output).suffix:
            raise PreflightError(
                f"{len(inputs)} inputs: give --output a directory for one .{fmt} file per input"
            )
        check_output_dir(Path(output), inputs, "--output")
        return Path(output)
    if output:
        check_output_file(output, inputs, "--output")
    return None


class TranscriptWriter:
    """Writes each transcription record as it comes, in format `fmt`.

    Args:
      fmt: "jsonl" (one JSON line per record), "srt" or "vtt".
      stream: where JSON lines, or the one input's subtitles, go.
      subtitle_dir: the folder of one `ID.FMT` file per record (`check_transcript_output`);
        a record with an error gets none.
    """

    def __init__(self, fmt: str, stream: TextIO, subtitle_dir: Optional[Path] = None):
        self.fmt, self.stream, self.subtitle_dir = fmt, stream, subtitle_dir

    def write(self, rec: dict) -> None:
        """Writes `rec` (`{"id", "audio", "text", "segments"?, "error"?}`) and flushes.

        Raises:
          OutputError: a subtitle file that cannot be written.
        """
        if self.fmt == "jsonl":
            self.stream.write(json.dumps(rec, ensure_ascii=False) + "\n")
        elif self.subtitle_dir is None:
            self.stream.write(subtitle_text(rec.get("segments") or [], self.fmt))
        elif not rec.get("error"):
            with open_output(self.subtitle_dir / f"{rec['id']}.{self.fmt}") as f:
                f.write(subtitle_text(rec["segments"], self.fmt))
        self.stream.flush()
