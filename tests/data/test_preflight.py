"""Checks before a run, on real files: an output that is an input, a folder, or cannot be
written is refused; repeated ids are named with their rows; a spec's local files are found."""

import json
import shutil

import pytest

from jaxwhisper.data.examples import DataSpecError
from jaxwhisper.data.preflight import (
    PreflightError,
    check_output_dir,
    check_output_file,
    check_unique_ids,
    spec_files,
)
from jaxwhisper.data.sources import parse_spec


@pytest.fixture
def manifest(tmp_path, fixture_manifest):
    clip = "mfa__falsetto.flac"
    shutil.copy(fixture_manifest.parent / "audio" / clip, tmp_path / clip)
    path = tmp_path / "m.jsonl"
    path.write_text(json.dumps({"id": "a", "audio": clip, "text": "this is all very high pitched"}) + "\n")
    return path


def test_an_input_manifest_is_refused_as_output(manifest, tmp_path, monkeypatch):
    before = manifest.read_bytes()
    with pytest.raises(PreflightError, match="is also an input"):
        check_output_file(manifest, spec_files(str(manifest)))
    monkeypatch.chdir(tmp_path)  # the same file by another name
    with pytest.raises(PreflightError, match="is also an input"):
        check_output_file("./m.jsonl", [manifest])
    with pytest.raises(PreflightError, match="is also an input"):
        check_output_file(manifest, spec_files(f"jsonl:{manifest}?name=x"))
    assert manifest.read_bytes() == before
    assert check_output_file(tmp_path / "new" / "out.jsonl", [manifest]) == tmp_path / "new" / "out.jsonl"
    assert not (tmp_path / "new").exists()  # checks create nothing


def test_unwritable_outputs_are_refused(manifest, tmp_path, read_only_dir):
    with pytest.raises(PreflightError, match=r"is a file, not a folder"):
        check_output_file(manifest / "res.json")  # a folder that is a file
    with pytest.raises(PreflightError, match="is a folder"):
        check_output_file(tmp_path)
    with pytest.raises(PreflightError, match="not writable"):
        check_output_file(read_only_dir / "res.json")
    with pytest.raises(PreflightError, match="not writable"):
        check_output_dir(read_only_dir / "labels")
    with pytest.raises(PreflightError, match="is a file; give a folder"):
        check_output_dir(manifest)
    with pytest.raises(PreflightError, match="is a file, not a folder"):
        check_output_dir(manifest / "labels")


def test_duplicate_ids_name_the_id_and_rows(manifest, tmp_path):
    rows = manifest.read_text() * 2 + json.dumps({"id": "b", "audio": "x.flac"}) + "\n"
    (tmp_path / "dup.jsonl").write_text(rows)
    with pytest.raises(DataSpecError) as e:
        check_unique_ids(parse_spec(str(tmp_path / "dup.jsonl")))
    msg = str(e.value)
    assert "duplicate id 'a'" in msg and "dup.jsonl:1" in msg and "dup.jsonl:2" in msg
    check_unique_ids(parse_spec(str(manifest)))  # unique: no error
