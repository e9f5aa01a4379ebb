"""Pseudo-label files on resume: a torn last line is dropped, and so are failed rows (retried)."""

import json

from jaxwhisper.data.labels import labels_path, read_labels, resume_labels


def test_resume_keeps_labelled_rows_and_retries_failed_ones(tmp_path):
    path = labels_path(tmp_path, 0, 1)
    rows = [
        {"id": "a", "origin": "m.jsonl:1", "text": "x", "pseudo_text": "x", "wer": 0.0},
        {"id": "b", "origin": "m.jsonl:2", "text": "y", "error": "m.jsonl:2: no such file"},
        {"id": "c", "origin": "m.jsonl:3", "text": None, "pseudo_text": "z", "wer": None},
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows) + '{"id": "d", "ori')
    assert resume_labels(path) == {"a", "c"}
    assert [json.loads(x)["id"] for x in path.read_text().splitlines()] == ["a", "c"]
    assert set(read_labels(tmp_path)) == {"a", "c"}
