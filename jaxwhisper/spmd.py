"""Row-wise computations that stay split across devices under SPMD partitioning.

Jitted over a batch sharded across devices, XLA's SPMD partitioner cannot split some
row-independent operations along the batch: the FFT of the log-mel features
(openxla/xla#24) and a loop over the rows such as `jax.lax.map` (the encoder's tiled
attention). It all-gathers the whole batch to every device, computes every row there and
keeps its own slice, so 8 devices do 8x the work: a 2-layer encoder's training step took
5.0 s on 8 CPU devices against 1.4 s on one.

`by_rows(fn)` runs such a function on each device's own rows (`jax.shard_map` over the mesh
axes that split the batch) whenever the caller set a mesh with `jax.set_mesh` and those axes
are not already manual (inside `shard_map` the rows are already the device's own). Without a
mesh it is `fn` itself, so single-device code and the per-device decoders are unchanged.
"""

from __future__ import annotations

import functools
import os
from typing import Callable

import jax
from jax.sharding import PartitionSpec as P

# The mesh axes that split the rows of a batch (train/sharding.py's "batch" rule).
BATCH_AXES = ("data", "fsdp")


def _row_axes() -> tuple[str, ...]:
    mesh = jax.sharding.get_abstract_mesh()
    if mesh.empty:
        return ()
    manual = set(mesh.manual_axes)
    return tuple(a for a in BATCH_AXES if a in mesh.axis_names and a not in manual and mesh.shape[a] > 1)


def by_rows(fn: Callable) -> Callable:
    """`fn(*arrays) -> array or tuple of arrays`, every array with the batch as its leading
    axis and row i of the outputs depending only on row i of the inputs; run per device under
    a mesh set with `jax.set_mesh` (see the module docstring)."""

    @functools.wraps(fn)
    def wrapped(*args):
        axes = _row_axes()
        if not axes:
            return fn(*args)
        spec = P(axes)
        return jax.shard_map(fn, in_specs=spec, out_specs=spec, check_vma=False)(*args)

    return wrapped


def _cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


# Fewest rows a CPU device decodes per step when `use_cpu_cores` splits the cores: each
# device pays a step's fixed reads (the layers' weights, the vocabulary projection) alone.
MIN_ROWS_PER_CPU_DEVICE = 4


def use_cpu_cores(batch_size: int) -> int:
    """Asks JAX for one CPU device per core (at most `batch_size // MIN_ROWS_PER_CPU_DEVICE`),
    so that decoding runs a stream of rows on every core. Call before JAX starts its
    backends; returns the CPU device count that JAX will have (unchanged: -1).

    A decoding step is many small operations (one token per row) that XLA:CPU runs mostly
    on one thread: with one device the other cores idle through most of it. Two devices on
    2 cores, each decoding half the batch: tiny.en bf16, 363 short clips 49.3 -> 42.4 s,
    long-form (763 s of recordings, `chunked`) 11.2 -> 9.8 s, transcripts identical (a row's
    arithmetic does not depend on the device). Measured on 2 cores only. Each device holds
    its own copy of the weights, which is why the count is left alone where it was chosen
    (`XLA_FLAGS=--xla_force_host_platform_device_count`, `jax_num_cpu_devices`) or JAX
    already started.
    """
    from jax._src import xla_bridge  # no public test for "backends started" in jax 0.10

    n = max(1, min(_cores(), batch_size // MIN_ROWS_PER_CPU_DEVICE))
    chosen = "xla_force_host_platform_device_count" in os.environ.get("XLA_FLAGS", "")
    if n == 1 or chosen or jax.config.jax_num_cpu_devices != -1 or xla_bridge.backends_are_initialized():
        return -1
    jax.config.update("jax_num_cpu_devices", n)
    return n


def host_row_devices() -> list:
    """This host's devices to split rows of inference over: all of them, except that CPU
    devices are taken at most one per core the process may run on.

    Several CPU devices are the host-platform devices forced by XLA_FLAGS
    (`--xla_force_host_platform_device_count`); they share the cores, and more of them than
    cores only adds contention: 8 tiny.en clips (batch 8, one row per device) took 11.5 s on
    8 such devices of a 2-core machine against 3.1 s on 2 and 3.9 s on 1.
    """
    devices = jax.local_devices()
    if devices[0].platform != "cpu":
        return devices
    return devices[: _cores()]
