"""train.py, quantize.py and reproduce.py share one set-up (`jaxwhisper/entry.py`): an unknown
config key, in the file's values or on the command line, ends in one line that names it; bad
input on any entry point (those and every `jaxwhisper` command) ends in one line too."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize(
    "script, config, override, named",
    [
        ("train.py", "distill_tiny_en_2x2.py", "--config.student.gatez=none", "gatez"),
        ("quantize.py", "quant_int8.py", "--config.quantizations=w9a9", "w9a9"),
        ("reproduce.py", "paper_cpu.py", "--config.train.student.layer_map=x", "student.layer_map"),
        # get_config's ValueError and a missing file: absl printed them with a traceback
        ("quantize.py", "quant_int8.py:foo", None, "unknown config argument 'foo'"),
        ("train.py", "nowhere.py", None, "No such file or directory: 'configs/nowhere.py'"),
    ],
)
def test_a_bad_config_is_one_line_and_exit_status_2(script, config, override, named, tmp_path):
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    cmd = [sys.executable, script, "--config", f"configs/{config}", "--workdir", str(tmp_path)]
    cmd += [override] if override else []
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert proc.returncode == 2, proc.stderr
    assert len(lines) == 1 and named in lines[0] and "Traceback" not in proc.stderr, proc.stderr


def test_bad_input_during_a_run_is_one_line_and_exit_status_1(tmp_path):
    """Input that fails once the run has started (here a training manifest that does not
    exist) ends in one line naming it, not a traceback."""
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    missing = tmp_path / "nowhere.jsonl"
    cmd = [
        sys.executable,
        "train.py",
        "--config",
        "configs/distill_tiny_en_2x2.py",
        "--workdir",
        str(tmp_path / "run"),
        f"--config.data.train=('{missing}',)",
    ]
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1, proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr
    last = [ln for ln in proc.stderr.splitlines() if ln.strip()][-1]
    assert last.startswith("train.py: error:") and str(missing) in last, proc.stderr


# Bad input on every entry point: each command runs as a user would run it, in its own
# process, all of them at once (they mostly wait on imports). Each input fails before a
# model is loaded (a ValueError raised later, and JAXWHISPER_TRACEBACK=1, are tested in
# process by tests/test_cli_checks.py).
def _cases(d: Path) -> dict[str, tuple[list[str], int, str]]:
    """name -> (command, exit status, text the one line must hold)."""
    cli = [sys.executable, "-m", "jaxwhisper.cli"]
    afile, m = str(d / "afile"), str(d / "m.jsonl")
    is_file = f"{afile}: --output is a file"
    train = [sys.executable, "train.py", "--config", "configs/distill_tiny_en_2x2.py"]
    quant = [sys.executable, "quantize.py", "--config", "configs/quant_int8.py", "--workdir", str(d / "q")]
    quant += [f"--config.test=('{m}',)", f"--config.calibration={d / 'nocalib.jsonl'}"]
    return {
        "train.py": ([*train, "--workdir", afile], 1, f"{afile}: --workdir is a file"),
        "quantize.py": (quant, 1, "nocalib.jsonl: no such manifest"),
        "reproduce.py": (
            [sys.executable, "reproduce.py", "--config", "configs/paper_cpu.py", "--workdir", afile],
            1,
            f"{afile}: --workdir is a file",
        ),
        "transcribe": ([*cli, "transcribe", "--output", m, m], 2, "is also an input"),
        "pseudo-label": ([*cli, "pseudo-label", "--data", m, "--output", afile], 2, is_file),
        "demo-corpus": ([*cli, "demo-corpus", "--output", afile], 2, is_file),
        "evaluate": ([*cli, "evaluate", "--data", m, "--output", str(d)], 2, "--output is a folder"),
        "outliers": ([*cli, "outliers", "--data", m, "--output", afile], 2, is_file),
        "report": (
            [*cli, "report", "--runs", str(d), "--output", f"{afile}/r.md"],
            2,
            "is a file, not a folder",
        ),
        "convert": ([*cli, "convert", "tiny.en", afile], 2, f"{afile}: destination is a file"),
    }


@pytest.fixture(scope="module")
def bad_input_runs(tmp_path_factory):
    d = tmp_path_factory.mktemp("bad")
    shutil.copy(REPO / "data" / "fixture" / "audio" / "mfa__falsetto.flac", d / "a.flac")
    (d / "m.jsonl").write_text(json.dumps({"id": "a", "audio": "a.flac", "text": "high pitched"}) + "\n")
    (d / "afile").write_text("not a folder\n")
    cases = _cases(d)
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    env.pop("JAXWHISPER_TRACEBACK", None)
    procs = {
        name: subprocess.Popen(
            cmd, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
        )
        for name, (cmd, _, _) in cases.items()
    }
    out = {}
    for name, p in procs.items():
        err = p.communicate(timeout=600)[1]
        out[name] = (p.returncode, err)
    return cases, out, d


@pytest.mark.parametrize("name", list(_cases(Path("/d"))))
def test_bad_input_is_one_line_in_every_entry_point(bad_input_runs, name):
    cases, out, d = bad_input_runs
    _, status, text = cases[name]
    rc, err = out[name]
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert rc == status and "Traceback" not in err, err
    prog = name if name.endswith(".py") else f"jaxwhisper {name}"
    assert len(lines) == 1 and lines[0].startswith(f"{prog}: error: ") and text in lines[0], err
    if name == "quantize.py":
        assert not (d / "q" / "float").exists()  # refused before the float model's evaluation


def test_the_compilation_cache_goes_to_the_users_cache_folder_unless_chosen(monkeypatch, tmp_path):
    import jax

    from jaxwhisper.entry import use_compilation_cache

    assert use_compilation_cache() is None  # conftest chose one through the environment
    before = jax.config.jax_compilation_cache_dir
    monkeypatch.delenv("JAX_COMPILATION_CACHE_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    try:
        assert use_compilation_cache() == tmp_path / "jaxwhisper" / "jax"
        assert jax.config.jax_compilation_cache_dir == str(tmp_path / "jaxwhisper" / "jax")
        (tmp_path / "file").write_text("")
        monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "file"))  # not a folder
        assert use_compilation_cache() is None
    finally:
        jax.config.update("jax_compilation_cache_dir", before)
