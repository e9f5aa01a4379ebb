"""Joining a multi-host JAX cluster (one process per host, SPMD), for every entry point.

    initialize()  # TPU pods, SLURM, Open MPI: everything auto-detected by JAX
    JAX_COORDINATOR_ADDRESS=host0:1234 JAX_NUM_PROCESSES=2 JAX_PROCESS_ID=1 python train.py ...

Explicit settings come from the arguments or, when absent, from the environment variables
above (the GPU scripts in `gpu_scripts/` set them). On CPU, cross-process collectives use
gloo (the test of `tests/test_multihost.py` runs two processes on localhost this way).
"""

from __future__ import annotations

import os
from typing import Optional


def initialize(
    coordinator_address: Optional[str] = None,
    num_processes: Optional[int] = None,
    process_id: Optional[int] = None,
    timeout_s: int = 300,
) -> None:
    import jax

    coordinator_address = coordinator_address or os.environ.get("JAX_COORDINATOR_ADDRESS") or None
    if num_processes is None and os.environ.get("JAX_NUM_PROCESSES"):
        num_processes = int(os.environ["JAX_NUM_PROCESSES"])
    if process_id is None and os.environ.get("JAX_PROCESS_ID"):
        process_id = int(os.environ["JAX_PROCESS_ID"])
    if os.environ.get("JAX_PLATFORMS", "").split(",")[0] == "cpu":
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(
        coordinator_address, num_processes, process_id, initialization_timeout=timeout_s
    )


def allgather_json(obj) -> list:
    """`obj` (JSON-serialisable) of every process, in process order; every process calls it.

    Per-host data positions go into the checkpoint this way: orbax writes the JSON metadata
    from the primary host only.
    """
    import json

    import jax
    import numpy as np

    if jax.process_count() == 1:
        return [obj]
    from jax.experimental import multihost_utils

    data = np.frombuffer(json.dumps(obj).encode(), np.uint8)
    sizes = multihost_utils.process_allgather(np.array([data.size], np.int32))
    padded = np.zeros((int(np.max(sizes)),), np.uint8)
    padded[: data.size] = data
    gathered = np.asarray(multihost_utils.process_allgather(padded))
    sizes = np.asarray(sizes).reshape(-1)
    return [json.loads(bytes(gathered[i, : sizes[i]]).decode()) for i in range(len(sizes))]
