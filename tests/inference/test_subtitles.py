"""SRT and WebVTT writers on exact expected text."""

import pytest

from jaxwhisper.inference.subtitles import format_time, output_format, srt_text, vtt_text

SEGMENTS = [
    {"start": 0.0, "end": 2.5, "text": " Hello there."},
    {"start": 2.5, "end": 3.0, "text": "  "},
    {"start": 61.02, "end": 3725.4567, "text": "Second cue."},
]


def test_format_time_rounds_to_milliseconds_and_carries_hours():
    assert format_time(0.0, ",") == "00:00:00,000"
    assert format_time(3725.4567, ".") == "01:02:05.457"
    assert format_time(59.9996, ",") == "00:01:00,000"


def test_srt_text():
    assert srt_text(SEGMENTS) == (
        "1\n00:00:00,000 --> 00:00:02,500\nHello there.\n\n2\n00:01:01,020 --> 01:02:05,457\nSecond cue.\n"
    )


def test_vtt_text():
    assert vtt_text(SEGMENTS) == (
        "WEBVTT\n\n"
        "00:00:00.000 --> 00:00:02.500\nHello there.\n\n"
        "00:01:01.020 --> 01:02:05.457\nSecond cue.\n"
    )


def test_format_from_flag_or_suffix():
    assert output_format(None, "out/a.SRT") == "srt"
    assert output_format(None, "a.vtt") == "vtt"
    assert output_format(None, "a.jsonl") == "jsonl"
    assert output_format(None, None) == "jsonl"
    assert output_format("vtt", "a.jsonl") == "vtt"
    with pytest.raises(ValueError):
        output_format("txt", None)
