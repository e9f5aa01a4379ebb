"""Pseudo-labelling with the real tiny.en teacher: output, resume after a kill, failed rows
retried on resume, WER filter."""

import json
import shutil

import pytest

from jaxwhisper.cli import main
from jaxwhisper.data.batches import BatchConfig
from jaxwhisper.data.labels import labels_path, read_labels
from jaxwhisper.data.pipeline import BatchLoader
from jaxwhisper.data.sources import parse_spec
from jaxwhisper.inference.pseudo_label import pseudo_label
from jaxwhisper.inference.transcribe import Transcriber

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def manifest(tmp_path_factory, fixture_manifest):
    d = tmp_path_factory.mktemp("pl")
    rows = [json.loads(x) for x in fixture_manifest.read_text().splitlines()]
    keep = [r for r in rows if r["source"] in ("arctic", "pocketsphinx")][:6]
    for r in keep:
        shutil.copy(fixture_manifest.parent / r["audio"], d / (r["id"] + ".flac"))
        r["audio"] = r["id"] + ".flac"
    keep.append({"id": "broken", "audio": "missing.flac", "text": "x"})
    (d / "m.jsonl").write_text("".join(json.dumps(r) + "\n" for r in keep))
    return d / "m.jsonl"


@pytest.fixture(scope="module")
def transcriber(tiny_en):
    return Transcriber(tiny_en, batch_size=4)  # compiled once for the module


def test_labels_resume_after_a_kill(transcriber, manifest, tmp_path):
    t = transcriber
    src = parse_spec(str(manifest))
    stats = pseudo_label(t, src, tmp_path)
    assert (stats["labelled"], stats["errors"]) == (6, 1)
    path = labels_path(tmp_path, 0, 1)
    lines = path.read_text().splitlines()
    rows = [json.loads(x) for x in lines]
    good = [r for r in rows if "pseudo_text" in r]
    assert all(r["wer"] is not None and r["pseudo_text"] for r in good)
    assert stats["wer"] is not None and stats["wer"] < 30
    # A kill: the file keeps 3 rows and half of a fourth. Of those 3, the labelled ones are
    # kept; a failed one (the broken row comes back first) is tried again.
    path.write_text("\n".join(lines[:3]) + "\n" + lines[3][:10])
    kept = sum("pseudo_text" in json.loads(x) for x in lines[:3])
    again = pseudo_label(t, src, tmp_path)
    assert again["skipped_existing"] == kept and again["labelled"] + again["errors"] == 7 - kept
    assert again["errors"] == 1  # the broken row, again
    ids = [json.loads(x)["id"] for x in path.read_text().splitlines()]
    assert sorted(ids) == sorted(r["id"] for r in rows)  # each once, none lost
    assert {k: v["pseudo_text"] for k, v in read_labels(tmp_path).items() if "pseudo_text" in v} == {
        r["id"]: r["pseudo_text"] for r in good
    }


def test_failed_rows_are_retried_on_resume(transcriber, manifest, tmp_path):
    """A row whose audio was missing is labelled once the file is there; the others are
    not decoded again, and the labels file keeps one row per id."""
    d = tmp_path / "data"
    d.mkdir()
    first = json.loads(manifest.read_text().splitlines()[0])
    shutil.copy(manifest.parent / first["audio"], d / "a.flac")
    rows = [{**first, "audio": "a.flac"}, {"id": "late", "audio": "late.flac", "text": first["text"]}]
    (d / "m.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    src = parse_spec(str(d / "m.jsonl"))
    out = tmp_path / "labels"
    assert pseudo_label(transcriber, src, out)["errors"] == 1
    shutil.copy(d / "a.flac", d / "late.flac")  # the missing file turns up
    again = pseudo_label(transcriber, src, out)
    assert (again["skipped_existing"], again["labelled"], again["errors"]) == (1, 1, 0)
    lines = [json.loads(x) for x in labels_path(out, 0, 1).read_text().splitlines()]
    assert sorted(r["id"] for r in lines) == sorted([first["id"], "late"])
    assert all("error" not in r for r in lines)
    labels = read_labels(out)
    assert labels["late"]["pseudo_text"] == labels[first["id"]]["pseudo_text"]  # the same audio


def test_training_reads_pseudo_labels_and_filters_by_wer(transcriber, manifest, tmp_path):
    t = transcriber
    pseudo_label(t, parse_spec(str(manifest)), tmp_path)
    labels = read_labels(tmp_path)
    wers = sorted(r["wer"] for r in labels.values() if r.get("wer") is not None)
    threshold = wers[len(wers) // 2]  # a threshold that keeps about half
    src = parse_spec(f"{manifest}?pseudo_labels={tmp_path}&max_wer={threshold}")
    kept = [src[i] for i in range(len(src)) if not src[i].drop and not src[i].error]
    assert kept and all(r.text == labels[r.id]["pseudo_text"] for r in kept)
    assert len(kept) == sum(w <= threshold for w in wers)
    loader = BatchLoader(
        [src], BatchConfig(global_batch=7, max_label_len=64), (1, 2), 0, lambda s: [5] * len(s)
    )
    loader.load_step(0)
    by_reason = loader.drops.summary()["by_reason"]
    assert by_reason.get("wer_filter", 0) == sum(w > threshold for w in wers)
    assert by_reason["no_pseudo_label"] == 1  # the broken row has an error record, no label


def test_cli(manifest, tmp_path, capsys):
    assert (
        main(
            [
                "pseudo-label",
                "--model",
                "tiny.en",
                "--data",
                str(manifest),
                "--output",
                str(tmp_path),
                "--batch-size",
                "4",
            ]
        )
        == 1
    )  # one broken row
    err = capsys.readouterr().err
    assert "6 labelled, 0 already there, 1 errors" in err
    assert main(["pseudo-label", "--data", "nope:x", "--output", str(tmp_path)]) == 2
