"""Two real processes on localhost read a streaming source (jaxwhisper/data/streaming.py):
disjoint shards, every row of a pass exactly once over both, and a SIGKILL then resume from
the last saved positions that repeats nothing and, without a shuffle buffer, loses nothing."""

import json
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
N_ROWS = 59


def _port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def _launch(spec, out, mode):
    port = _port()
    return [
        subprocess.Popen(
            [
                sys.executable,
                str(REPO / "tests" / "streaming_worker.py"),
                str(i),
                "2",
                str(port),
                spec,
                str(out),
                mode,
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            cwd=REPO,
        )
        for i in range(2)
    ]


def _wait_for_step(procs, path, step):
    deadline = time.time() + 300
    while time.time() < deadline:
        if path.exists() and json.loads(path.read_text())["step"] == step:
            return json.loads(path.read_text())
        if any(p.poll() is not None for p in procs):
            pytest.fail("a host ended early:\n" + "\n".join(p.communicate()[0][-2000:] for p in procs))
        time.sleep(0.2)
    pytest.fail(f"no position saved at step {step}")


def _read(path):
    return [json.loads(x) for x in path.read_text().splitlines()] if path.exists() else []


def _first_pass(rows):
    """Ids of the rows of pass 0, from batches whose logged position says where pass 1
    starts (its `n` rows at the end of the first batch of pass 1)."""
    ids = []
    for r in rows:
        if r["epoch"] > 0:
            return ids + r["ids"][: len(r["ids"]) - r["n"]]
        ids += r["ids"]
    return ids


@pytest.mark.parametrize("buffer", [0, 5])
def test_two_hosts_read_disjoint_shards_and_resume_after_a_kill(hub_standins, tmp_path, buffer):
    files = f"{hub_standins}/librispeech/train.clean.100/*.parquet"
    spec = f"librispeech@train.clean.100?data_files={files}&streaming=1&shuffle_buffer={buffer}"
    procs = _launch(spec, tmp_path, "run")
    try:
        saved = _wait_for_step(procs, tmp_path / "position.json", 6)
        for p in procs:
            p.send_signal(signal.SIGKILL)
            p.wait()
        procs = _launch(spec, tmp_path, "resume")
        outs = [p.communicate(timeout=600)[0] for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    assert all(p.returncode == 0 for p in procs), "\n".join(o[-2000:] for o in outs)

    passes = []
    for host in range(2):
        before = [r for r in _read(tmp_path / f"run-{host}.jsonl") if r["step"] < saved["step"]]
        after = _read(tmp_path / f"resume-{host}.jsonl")
        assert after[0]["step"] == saved["step"]
        read = [i for r in before for i in r["ids"]] + _first_pass(after)
        assert len(read) == len(set(read)), f"host {host} read a row twice in one pass"
        lost = (30, 29)[host] - len(read)  # shards 0, 2 (15 + 15 rows) and 1, 3 (15 + 14)
        assert 0 <= lost <= max(0, buffer - 1)
        passes.append(set(read))
    assert not passes[0] & passes[1]  # disjoint shards
    if buffer == 0:  # every row of the pass exactly once over both hosts
        assert len(passes[0] | passes[1]) == N_ROWS
