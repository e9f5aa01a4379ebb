"""Row-wise parts of the model stay on each device's rows under a mesh (jaxwhisper/spmd.py).

Without `by_rows`, XLA all-gathers a batch-sharded FFT and a `lax.map` over the rows to every
device and computes the whole batch there (openxla/xla#24): the compiled program then holds
an all-gather of the batch. These tests pin that it does not, and that the values are those
of the unsharded computation.
"""

import re

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from jaxwhisper.data.features import log_mel_batch, log_mel_numpy
from jaxwhisper.models.attention import blocked_attention
from jaxwhisper.spmd import by_rows, host_row_devices
from jaxwhisper.train import sharding


def _gathers(compiled_text: str) -> list[str]:
    return re.findall(r"= (\S+) all-gather\(", compiled_text)


def _rows(mesh, x):
    return jax.device_put(x, NamedSharding(mesh, P(sharding.RULES["batch"])))


def test_log_mel_runs_per_device_and_matches_numpy():
    mesh = sharding.make_mesh(2)  # data 4 x fsdp 2: the rows split over both axes
    rng = np.random.default_rng(0)
    lengths = np.array([16000, 480000, 32000, 8000, 160000, 48000, 400, 240000], np.int32)
    audio = np.zeros((8, 480000), np.float32)
    for i, n in enumerate(lengths):
        audio[i, :n] = 0.1 * rng.standard_normal(n)
    a, n = _rows(mesh, audio), _rows(mesh, lengths)
    with jax.set_mesh(mesh):
        compiled = jax.jit(lambda a, n: log_mel_batch(a, n)).lower(a, n).compile()
        out = np.asarray(compiled(a, n))
    assert _gathers(compiled.as_text()) == []
    without = jax.jit(lambda a, n: log_mel_batch(a, n)).lower(a, n).compile()
    assert _gathers(without.as_text()), "the partitioner now splits FFTs itself: by_rows may go"
    for i in range(8):
        np.testing.assert_allclose(out[i], log_mel_numpy(audio[i, : lengths[i]]), atol=2e-5)


def test_blocked_attention_runs_per_device_and_equals_dense_attention():
    mesh = sharding.make_mesh(1)
    q, k, v = (np.random.default_rng(s).standard_normal((8, 2, 60, 16)).astype(np.float32) for s in range(3))
    probs = lambda s: jax.nn.softmax(s, axis=-1)  # noqa: E731
    args = [_rows(mesh, x) for x in (q, k, v)]
    with jax.set_mesh(mesh):
        compiled = jax.jit(lambda q, k, v: blocked_attention(q, k, v, probs, 20)).lower(*args).compile()
        out = np.asarray(compiled(*args))
    assert _gathers(compiled.as_text()) == []
    q, k, v = (x.astype(np.float64) for x in (q, k, v))
    scores = np.einsum("bhqd,bhkd->bhqk", q, k)
    p = np.exp(scores - scores.max(-1, keepdims=True))
    dense = np.einsum("bhqk,bhkd->bhqd", p / p.sum(-1, keepdims=True), v)
    # float32 sums of 16-term scores (|s| up to ~15) and 60-term outputs: ~1e-6 from float64.
    np.testing.assert_allclose(out, dense, rtol=1e-5, atol=1e-5)


def test_without_a_mesh_or_inside_shard_map_by_rows_is_the_function_itself():
    calls = []

    def f(x):
        calls.append(jax.sharding.get_abstract_mesh().manual_axes)
        return x * 2

    x = jnp.arange(8.0)
    np.testing.assert_array_equal(by_rows(f)(x), x * 2)
    mesh = sharding.make_mesh(1)
    inner = jax.shard_map(by_rows(f), mesh=mesh, in_specs=P("data"), out_specs=P("data"))
    with jax.set_mesh(mesh):
        np.testing.assert_array_equal(jax.jit(inner)(_rows(mesh, x)), x * 2)
    # Traced once outside any mesh, once inside shard_map (manual axes): never wrapped twice.
    assert calls[0] == () and set(calls[1]) >= {"data"}


def test_inference_takes_at_most_one_cpu_device_per_core(monkeypatch):
    """conftest's 8 CPU devices share this machine's cores: rows go to at most one per core."""
    import os

    assert jax.local_device_count() == 8
    for cores, expected in ((1, 1), (2, 2), (3, 3), (16, 8)):
        monkeypatch.setattr(os, "sched_getaffinity", lambda pid, n=cores: set(range(n)), raising=False)
        assert host_row_devices() == jax.local_devices()[:expected]


_FRESH_PROCESS = """
import os
from jaxwhisper import spmd
spmd._cores = lambda: 3
out = [spmd.use_cpu_cores(4)]  # 4 rows: one device
os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=2"
out.append(spmd.use_cpu_cores(16))  # chosen by the user: left alone
del os.environ["XLA_FLAGS"]
out.append(spmd.use_cpu_cores(16))  # 3 cores, 16 rows: 3 devices
import jax
out.append(len(jax.devices()))
out.append(spmd.use_cpu_cores(16))  # JAX has started: nothing changes
print(out)
"""


def test_use_cpu_cores_asks_for_one_device_per_core_before_jax_starts():
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    proc = subprocess.run(
        [sys.executable, "-c", _FRESH_PROCESS], env=env, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().splitlines()[-1] == "[-1, -1, 3, 3, -1]"


def test_decoding_commands_split_the_cores_first(monkeypatch, capsys):
    from jaxwhisper import cli

    calls = []
    monkeypatch.setattr(cli.spmd, "use_cpu_cores", lambda batch: calls.append(batch))
    cli.main(["transcribe", "--batch-size", "8", "/nonexistent.wav"])
    cli.main(["report", "--runs", "/nonexistent", "--output", "/nonexistent/report.md"])
    assert calls == [8]  # transcribe only: report decodes nothing
    capsys.readouterr()
