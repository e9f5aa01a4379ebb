"""Mesh and shardings on the 8 fake CPU devices: the (data, fsdp) mesh, FSDP on the largest
divisible axis, and batches split over every device."""

import jax
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

from jaxwhisper.train.sharding import (
    global_batch,
    make_mesh,
    param_spec,
    put_tree,
    replicated,
    tree_shardings,
)


def test_mesh_shape():
    assert len(jax.devices()) == 8
    mesh = make_mesh(2)
    assert mesh.axis_names == ("data", "fsdp") and dict(mesh.shape) == {"data": 4, "fsdp": 2}
    assert dict(make_mesh().shape) == {"data": 8, "fsdp": 1}
    assert dict(make_mesh(8).shape) == {"data": 1, "fsdp": 8}
    assert dict(make_mesh(1, jax.devices()[:1]).shape) == {"data": 1, "fsdp": 1}
    for bad in (0, 3, 16):
        with pytest.raises(ValueError, match=f"mesh_fsdp={bad} does not divide the 8 devices"):
            make_mesh(bad)


@pytest.mark.parametrize(
    "shape, fsdp, spec",
    [
        ((384, 1536), 4, P(None, "fsdp")),  # fc1 kernel: the larger axis
        ((1536, 384), 4, P("fsdp", None)),
        ((51864, 384), 8, P("fsdp", None)),  # 51864 = 8 * 6483
        ((51865, 384), 8, P(None, "fsdp")),  # a multilingual vocab is odd: the other axis
        ((384, 80, 3), 8, P("fsdp", None, None)),  # conv kernel
        ((6,), 4, P()),  # nothing divisible: replicated
        ((3, 5), 2, P()),
        ((), 4, P()),  # scalars
        ((384, 1536), 1, P()),  # no FSDP
        ((64, 64), 4, P(None, "fsdp")),  # a tie goes to the later axis
    ],
)
def test_param_spec(shape, fsdp, spec):
    assert param_spec(shape, fsdp) == spec


def test_tree_shardings_place_each_leaf():
    mesh = make_mesh(4)
    tree = {"kernel": np.ones((8, 16), np.float32), "bias": np.ones((3,), np.float32), "count": np.int32(0)}
    shardings = tree_shardings(tree, mesh)
    assert shardings["kernel"].spec == P(None, "fsdp") and shardings["bias"].spec == P()
    placed = jax.device_put(tree, shardings)
    assert {s.data.shape for s in placed["kernel"].addressable_shards} == {(8, 4)}  # 16 / fsdp 4
    assert {s.data.shape for s in placed["bias"].addressable_shards} == {(3,)}
    assert replicated(mesh).spec == P()


def test_put_tree_places_what_device_put_places():
    """Without device_put's cross-process equality check (tests/test_multihost.py runs it on
    two processes): the same values, dtypes and shards."""
    mesh = make_mesh(4)
    tree = {"kernel": np.arange(128, dtype=np.float32).reshape(8, 16), "count": np.int32(3)}
    shardings = tree_shardings(tree, mesh)
    ours, theirs = put_tree(tree, shardings), jax.device_put(tree, shardings)
    for a, b in zip(jax.tree.leaves(ours), jax.tree.leaves(theirs)):
        assert a.dtype == b.dtype and a.sharding == b.sharding
        np.testing.assert_array_equal(a, b)
        shards = lambda x: sorted((str(s.device), s.index, s.data.tobytes()) for s in x.addressable_shards)  # noqa: E731
        assert shards(a) == shards(b)


def test_global_batch_splits_rows_over_every_device():
    mesh = make_mesh(2)
    local = {"x": np.arange(16 * 3, dtype=np.float32).reshape(16, 3), "y": np.arange(16), "unused": None}
    out = global_batch(local, mesh, ["x", "y"])
    assert set(out) == {"x", "y"}
    np.testing.assert_array_equal(out["x"], local["x"])  # one process: its rows are the batch
    shards = sorted((s.index[0].start, s.data.shape) for s in out["x"].addressable_shards)
    assert shards == [(2 * i, (2, 3)) for i in range(8)]  # 16 rows, 2 per device, all 8 devices
