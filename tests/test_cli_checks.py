"""Bad arguments are refused before a model is loaded (the model loader is replaced by one
that fails the test), on real files: an output that is an input manifest, an unwritable or
folder output, a missing calibration set or ranges file, repeated ids. Then what needs a
model: a set with no scored utterance reports `wer: null` and exits 1; a ValueError while
running is one line."""

import json
import shutil

import pytest

from jaxwhisper import cli, commands

W8A8 = ["--quantize", "w8a8"]


@pytest.fixture
def d(tmp_path, fixture_manifest):
    for clip in ("mfa__falsetto", "mfa__whisper"):
        shutil.copy(fixture_manifest.parent / "audio" / f"{clip}.flac", tmp_path / f"{clip}.flac")
    rows = [
        {"id": "a", "audio": "mfa__falsetto.flac", "text": "this is all very high pitched"},
        {"id": "b", "audio": "mfa__whisper.flac", "text": "this is all very whispered"},
    ]
    (tmp_path / "m.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    rows[1]["id"] = "a"
    (tmp_path / "dup.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (tmp_path / "afile").write_text("x\n")
    (tmp_path / "other").mkdir()  # another set whose file has the same name
    shutil.copy(tmp_path / "m.jsonl", tmp_path / "other" / "m.jsonl")
    for clip in ("mfa__falsetto", "mfa__whisper"):
        shutil.copy(tmp_path / f"{clip}.flac", tmp_path / "other" / f"{clip}.flac")
    return tmp_path


@pytest.fixture
def no_model(monkeypatch):
    def load(spec, **kw):
        raise AssertionError("a model was loaded before the arguments were checked")

    monkeypatch.setattr(commands, "load_model", load)


def _err(capsys) -> str:
    lines = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
    assert len(lines) == 1, lines
    return lines[0]


@pytest.mark.parametrize(
    "command",
    [
        ["transcribe", "--output", "{m}", "{m}"],
        ["evaluate", "--data", "{m}", "--output", "{m}"],
        ["pseudo-label", "--data", "{m}", "--output", "{m}"],
        [
            "evaluate",
            "--data",
            "{m}",
            "--quantize",
            "w8a8",
            "--calibration",
            "{d}/c.jsonl",
            "--ranges",
            "{m}",
            "--output",
            "{m}",
        ],
    ],  # fmt: skip
    ids=["transcribe", "evaluate", "pseudo-label", "evaluate-ranges"],
)
def test_an_input_manifest_as_output_is_refused(d, no_model, capsys, command):
    m = d / "m.jsonl"
    before = m.read_bytes()
    assert cli.main([a.format(m=m, d=d) for a in command]) == 2
    assert "is also an input" in _err(capsys) and m.read_bytes() == before


@pytest.mark.parametrize(
    "extra, named",
    [
        (["--output", "{d}/afile/res.json"], "afile is a file, not a folder"),
        (["--output", "{d}"], "--output is a folder"),
        (
            ["--output", "{d}/r.json", "--quantize", "w8a8", "--calibration", "{d}/none.jsonl"],
            "none.jsonl: no such",
        ),
        (
            ["--output", "{d}/r.json", "--quantize", "w8a8", "--ranges", "{d}/none.json"],
            "none.json: no such file",
        ),
        (["--output", "{d}/r.json", "--data", "{d}/dup.jsonl"], "duplicate id 'a' in rows"),
        (["--output", "{d}/r.json", "--data", "{d}/other/m.jsonl"], "are both named 'm'"),
    ],
    ids=["parent-is-a-file", "a-folder", "no-calibration", "no-ranges", "duplicate-ids", "same-names"],
)
def test_evaluate_checks_outputs_and_inputs_before_loading(d, no_model, capsys, extra, named):
    args = ["evaluate", "--data", str(d / "m.jsonl"), *(a.format(d=d) for a in extra)]
    assert cli.main(args) == 2
    assert named in _err(capsys)


def test_a_read_only_output_is_refused_before_loading(d, no_model, capsys, read_only_dir):
    out = read_only_dir / "r.json"
    assert cli.main(["evaluate", "--data", str(d / "m.jsonl"), "--output", str(out)]) == 2
    assert f"{out}: --output is not writable" in _err(capsys)
    assert (
        cli.main(["pseudo-label", "--data", str(d / "m.jsonl"), "--output", str(read_only_dir / "pl")]) == 2
    )
    assert "--output is not writable" in _err(capsys)


def test_pseudo_label_refuses_repeated_ids_before_loading(d, no_model, capsys):
    assert cli.main(["pseudo-label", "--data", str(d / "dup.jsonl"), "--output", str(d / "pl")]) == 2
    err = _err(capsys)
    assert "duplicate id 'a' in rows" in err and "dup.jsonl:1" in err and "dup.jsonl:2" in err
    assert not (d / "pl").exists()


@pytest.mark.parametrize("command", ["transcribe {m}", "pseudo-label --data {m} --output {d}/pl"])
def test_an_unknown_dtype_is_one_line_before_loading(d, no_model, capsys, command):
    args = command.format(m=d / "m.jsonl", d=d).split() + ["--dtype", "float8"]
    assert cli.main(args) == 2
    assert "--dtype 'float8': unknown compute dtype; choose float32 or bfloat16" in _err(capsys)


@pytest.mark.slow
def test_no_scored_utterance_is_wer_null_and_exit_1(d, tiny_en, monkeypatch, capsys):
    monkeypatch.setattr(commands, "load_model", lambda spec, **kw: tiny_en)
    (d / "notext.jsonl").write_text(json.dumps({"id": "a", "audio": "mfa__falsetto.flac"}) + "\n")
    out = d / "r.json"
    assert cli.main(["evaluate", "--data", str(d / "notext.jsonl"), "--output", str(out)]) == 1
    res = json.loads(out.read_text())["datasets"]["notext"]
    assert res["wer"] is None and res["utterances"] == 0 and res["skipped"]["no_reference"] == 1
    captured = capsys.readouterr()
    assert "| n/a |" in captured.out and "notext: no scored utterance" in captured.err


@pytest.mark.slow
def test_a_value_error_while_running_is_one_line_or_its_traceback(d, tiny_en, monkeypatch, capsys):
    """A ValueError no check foresaw (here the Transcriber's, after the model loaded) ends
    the command in one line, exit 1; JAXWHISPER_TRACEBACK=1 re-raises it."""
    monkeypatch.setattr(commands, "load_model", lambda spec, **kw: tiny_en)
    monkeypatch.delenv("JAXWHISPER_TRACEBACK", raising=False)
    args = ["transcribe", "--batch-size", "0", str(d / "mfa__falsetto.flac")]
    assert cli.main(args) == 1
    assert _err(capsys) == "jaxwhisper transcribe: error: batch size must be at least 1, got 0"
    monkeypatch.setenv("JAXWHISPER_TRACEBACK", "1")
    with pytest.raises(ValueError, match="batch size must be at least 1"):
        cli.main(args)


@pytest.mark.slow
def test_quantize_with_no_scored_utterance_writes_null_and_fails(d, tiny_en):
    from jaxwhisper.config import QuantRunConfig
    from jaxwhisper.quant.experiment import run_quantization

    (d / "notext.jsonl").write_text(json.dumps({"id": "a", "audio": "mfa__falsetto.flac"}) + "\n")
    cfg = QuantRunConfig(
        quantizations=(), test=(str(d / "notext.jsonl"),), calibration=str(d / "m.jsonl"), fallback=True
    )
    with pytest.raises(ValueError, match="notext: no scored utterance"):
        run_quantization(cfg, tiny_en, d / "q")
    results = json.loads((d / "q" / "results.json").read_text())
    assert list(results) == ["float", "float+fallback"]  # with `fallback`, each model twice
    assert [r["decoding"] for r in results.values()] == ["greedy", "temperature fallback"]
    assert all(r["datasets"]["notext"]["wer"] is None for r in results.values())
