"""train.py, quantize.py and reproduce.py share one set-up (`jaxwhisper/entry.py`): an unknown
config key, in the file's values or on the command line, ends in one line that names it."""

import os
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
    ],
)
def test_a_bad_config_is_one_line_and_exit_status_2(script, config, override, named, tmp_path):
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    cmd = [sys.executable, script, "--config", f"configs/{config}", "--workdir", str(tmp_path), override]
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
