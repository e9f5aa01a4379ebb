"""The batch of slots that long-form windows join and leave one at a time: the protocol
the long-form decoder drives (`SlotEngine`) and its implementation on devices
(`DeviceSlots`, the host side of `windows.make_window_engine`)."""

from __future__ import annotations

import functools
from typing import Any, Callable, Protocol

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from jaxwhisper.data.features import N_FRAMES


def slot_mesh(mesh: Mesh) -> Mesh:
    """The devices of a Transcriber's `mesh` that run its slot engine: all of them on
    accelerators, the first one on CPU. CPU devices share the same cores, and a window joins
    the batch alone: on several CPU devices its encoder ran on one while the others waited,
    where one device runs it on every core. Bench set (chunked, bf16, 2 cores): 8.9 s on one
    device against 9.25 s on two."""
    if mesh.devices.flat[0].platform != "cpu":
        return mesh
    return Mesh(mesh.devices.flat[:1], mesh.axis_names)


class SlotEngine(Protocol):
    """A batch of decoding slots that windows join and leave one at a time
    (`transcribe.Transcriber`'s, on the model; tests script their own).

    Attributes:
      rows: slots in the batch.
    """

    rows: int

    def free(self) -> int:
        """Slots not holding a window."""

    def admit(self, items: list[tuple[np.ndarray, float, int]]) -> list[int]:
        """Puts windows `(mel [n_mels, 3000] f32, temperature, seed)` in free slots (at most
        `free()` of them); returns their slots. May dispatch asynchronously."""

    def advance(self) -> list[tuple[int, np.ndarray, float, float]]:
        """Decodes the held windows some steps; returns `(slot, tokens [max_new] int32 with
        eot after the end, sum_logprob, no_speech_prob)` for each window that ended (its slot
        is free again)."""


class DeviceSlots:
    """The long-form `SlotEngine` of a Transcriber: `rows` slots split evenly over its
    devices, each device decoding its own slots (`WindowEngine` under `shard_map`).

    One `advance` decodes until a window ends on any device, so its slot is refilled at
    once; a round trip to the host per window (reading which ended, then admitting the
    next) costs well under a millisecond against ~15 ms per tiny.en decoding step.
    Admitting windows takes one window per device per call, so devices encode their new
    windows in parallel.
    """

    def __init__(self, compiled: tuple[Callable, Callable, Callable], transcriber: Any):
        t = transcriber
        self.rows = t.batch_size
        self.devices = t._slot_mesh.devices.size
        self.per_device = self.rows // self.devices
        self.n_mels = t.model.config.n_mels
        self._t = t
        self._init, self._admit, self._advance = compiled
        self.state = None  # the device arrays, made on first use
        self._view = None  # the transcriber's weights on the slot mesh
        self.active = np.zeros((self.rows,), bool)

    @staticmethod
    def compile(engine, transcriber: Any) -> tuple[Callable, Callable, Callable]:
        """The jitted (init, admit, advance) of `engine` on the transcriber's devices; shared by
        every DeviceSlots of one kind (each holds its own state)."""
        t = transcriber
        init = jax.jit(functools.partial(engine.init, t.batch_size), out_shardings=t._slot_rows)
        admit = t._per_device(
            lambda w, state, *rows: engine.admit(w[0], state, *rows, w[1]),
            row_args=5,
            donate=(1,),
            mesh=t._slot_mesh,
        )
        advance = t._per_device(
            lambda w, state, active: engine.advance(w[0], state, active, engine.max_new, w[1], True, "data"),
            row_args=2,
            donate=(1,),
            mesh=t._slot_mesh,
        )
        return init, admit, advance

    def _weights(self) -> tuple:
        """The transcriber's replicated (params, intercept state) on the slot mesh: the first
        device's copy when that mesh is one of several devices (no new copy)."""
        t = self._t
        if t._slot_mesh is t.mesh:
            return t._weights()
        if self._view is None:
            one = NamedSharding(t._slot_mesh, P())

            def view(x):
                return jax.make_array_from_single_device_arrays(x.shape, one, [x.addressable_shards[0].data])

            self._view = jax.tree.map(view, t._weights())
        return self._view

    def free(self) -> int:
        return int(np.sum(~self.active))

    def admit(self, items: list[tuple[np.ndarray, float, int]]) -> list[int]:
        if self.state is None:
            self.state = self._init()
        # Each window goes to the device with the most free slots.
        queues: list[list] = [[] for _ in range(self.devices)]
        slots = []
        for item in items:
            free = [
                np.flatnonzero(~self.active[d * self.per_device : (d + 1) * self.per_device])
                for d in range(self.devices)
            ]
            d = max(range(self.devices), key=lambda d: len(free[d]))
            if not len(free[d]):
                raise ValueError(f"admit: {len(items)} windows for {self.free()} free slots")
            local = int(free[d][0])
            self.active[d * self.per_device + local] = True
            slots.append(d * self.per_device + local)
            queues[d].append((local, item))
        put = functools.partial(jax.device_put, device=self._t._slot_rows)
        for call in range(max(len(q) for q in queues)):
            mel = np.zeros((self.devices, self.n_mels, N_FRAMES), np.float32)
            local = np.full((self.devices,), -1, np.int32)
            temperature = np.zeros((self.devices,), np.float32)
            seed = np.zeros((self.devices,), np.int32)
            for d, q in enumerate(queues):
                if call < len(q):
                    local[d], (mel[d], temperature[d], seed[d]) = q[call]
            self.state = self._admit(self._weights(), self.state, *map(put, (mel, local, temperature, seed)))
        return slots

    def advance(self) -> list[tuple[int, np.ndarray, float, float]]:
        if not self.active.any():
            return []
        active = jax.device_put(self.active, self._t._slot_rows)
        self.state = self._advance(self._weights(), self.state, active)
        ended = np.flatnonzero(self.active & np.asarray(self.state["done"]))
        if not ended.size:
            return []
        tokens = np.asarray(self.state["tokens"])
        sum_lp, no_speech = np.asarray(self.state["sum_logprob"]), np.asarray(self.state["no_speech_prob"])
        self.active[ended] = False
        return [(int(i), tokens[i], float(sum_lp[i]), float(no_speech[i])) for i in ended]
