"""Device mesh and shardings: data parallel x FSDP, one rules table.

The mesh has axes ("data", "fsdp"). Logical axes map to mesh axes through `RULES`:

| logical axis | mesh axes | used for |
|---|---|---|
| batch | ("data", "fsdp") | the leading axis of every batch array: all devices split the rows |
| params | "fsdp" | one axis of each parameter and optimizer-state leaf: the largest one divisible by the fsdp size (replicated when none is) |

The same code runs on 1 CPU (a 1x1 mesh), 8 fake CPU devices, a GPU, or a TPU pod slice
(all hosts' devices in one global mesh; each host feeds its rows with
`jax.make_array_from_process_local_data`).
"""

from __future__ import annotations

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from jaxwhisper.spmd import BATCH_AXES

RULES = {"batch": BATCH_AXES, "params": "fsdp"}


def make_mesh(fsdp: int = 1, devices=None) -> Mesh:
    """Devices (default: all, every host) as (data, fsdp) with data = count // fsdp."""
    devices = list(jax.devices() if devices is None else devices)
    n = len(devices)
    if fsdp < 1 or n % fsdp:
        raise ValueError(f"mesh_fsdp={fsdp} does not divide the {n} devices")
    return Mesh(np.asarray(devices).reshape(n // fsdp, fsdp), ("data", "fsdp"))


def batch_sharding(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, P(RULES["batch"]))


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, P())


def param_spec(shape: tuple, fsdp: int) -> P:
    """FSDP on the largest axis divisible by the fsdp size, else replicated."""
    if fsdp == 1 or not shape:
        return P()
    candidates = [(size, i) for i, size in enumerate(shape) if size % fsdp == 0]
    if not candidates:
        return P()
    _, axis = max(candidates)
    spec = [None] * len(shape)
    spec[axis] = RULES["params"]
    return P(*spec)


def tree_shardings(tree, mesh: Mesh):
    """NamedShardings for every leaf of a params / optimizer-state tree (arrays or shapes)."""
    fsdp = mesh.shape["fsdp"]
    return jax.tree.map(lambda x: NamedSharding(mesh, param_spec(tuple(np.shape(x)), fsdp)), tree)


def global_batch(local: dict, mesh: Mesh, keys) -> dict:
    """Global jax.Arrays from this process's rows (its slice of the global batch)."""
    sharding = batch_sharding(mesh)
    return {k: jax.make_array_from_process_local_data(sharding, np.asarray(local[k])) for k in keys}


def put_tree(tree, shardings):
    """Host values that are the same on every process (a loaded teacher),
    placed on (possibly global) shardings: each process writes only its own devices' shards.

    `jax.device_put` of a host value onto a sharding that spans processes first gathers the
    whole value from every process to check that they agree, leaf by leaf: a teacher's full
    weights through the network on every host at start-up.
    """

    def put(x, sharding):
        value = np.asarray(x)
        return jax.make_array_from_callback(value.shape, sharding, lambda index: value[index])

    return jax.tree.map(put, tree, shardings)
