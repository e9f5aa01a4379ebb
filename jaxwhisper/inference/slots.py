"""The batch of slots that long-form windows join and leave one at a time: the protocol
the long-form decoder drives (`SlotEngine`) and its implementation on devices
(`DeviceSlots`, the host side of `windows.make_window_engine`)."""

from __future__ import annotations

import collections
import functools
import itertools
from typing import Any, Callable, Optional, Protocol

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


def helper_device(mesh: Mesh) -> Optional[Any]:
    """The device of a Transcriber's `mesh` that prepares windows while the slot engine
    decodes: on CPU, the second one. XLA:CPU runs one device's programs one after another
    but two devices' side by side: the encoder (compute-bound) then runs beside the decoding
    steps (bound by memory), where on one device they alternate. tiny.en bf16, 2 cores: 20
    encoder passes beside 12 decoding calls took 2.90 s against 3.54 s one after the other.
    One helper, not every other device: CPU devices share the cores, each helper compiles its
    own `prepare` (~2 s for tiny.en), and more were not measured. None on accelerators (their
    slots are on every device) or with a single CPU device."""
    if mesh.devices.flat[0].platform != "cpu" or mesh.devices.size < 2:
        return None
    return mesh.devices.flat[1]


# Windows the helper device may prepare ahead of the slots that will take them.
LOOKAHEAD = 2


class SlotEngine(Protocol):
    """A batch of decoding slots that windows join and leave one at a time
    (`transcribe.Transcriber`'s, on the model; tests script their own).

    Attributes:
      rows: slots in the batch.
    """

    rows: int

    def free(self) -> int:
        """Windows `admit` takes now: free slots, plus room for windows prepared ahead."""

    def admit(self, items: list[tuple[np.ndarray, float, int]]) -> list[int]:
        """Takes windows `(mel [n_mels, 3000] f32, temperature, seed)` (at most `free()` of
        them) into free slots, or to be prepared ahead; returns their ids (unique among the
        windows held). May dispatch asynchronously."""

    def advance(self) -> list[tuple[int, np.ndarray, float, float]]:
        """Decodes the held windows some steps; returns `(id, tokens [max_new] int32 with
        eot after the end, sum_logprob, no_speech_prob)` for each window that ended (its slot
        is free again)."""


class DeviceSlots:
    """The long-form `SlotEngine` of a Transcriber: `rows` slots split evenly over its slot
    devices (`slot_mesh`), each device decoding its own slots (`WindowEngine` under
    `shard_map`).

    One `advance` decodes until a window ends on any device, so its slot is refilled at
    once; a round trip to the host per window (reading which ended, then admitting the
    next) costs well under a millisecond against ~15 ms per tiny.en decoding step.

    Where the transcriber has a helper device (`helper_device`: CPU), windows are prepared
    (`WindowEngine.prepare`: encoder, cross-attention keys/values, prefix) on it, up to
    `LOOKAHEAD` ahead of a free slot, while the slot device decodes; a prepared window goes
    into the next free slot (`WindowEngine.insert`). Windows taken while slots are free are
    prepared on the slot device and the helper in turn. Otherwise
    (accelerators) a call of `admit` puts one window per device in its slots, so devices
    encode their new windows in parallel.
    """

    def __init__(self, compiled: tuple[Callable, ...], transcriber: Any):
        t = transcriber
        self.rows = t.batch_size
        self.devices = t._slot_mesh.devices.size
        self.per_device = self.rows // self.devices
        self.n_mels = t.model.config.n_mels
        self._t = t
        self._init, self._admit, self._advance, self._prepare, self._insert = compiled
        self.state = None  # the device arrays, made on first use
        self._view = None  # the transcriber's weights on the slot mesh
        self.active = np.zeros((self.rows,), bool)
        self.helper = helper_device(t.mesh) if self.devices == 1 else None
        self._pending: collections.deque = collections.deque()  # (id, prepared row)
        self._held: dict[int, int] = {}  # slot -> id of its window
        self._ids = itertools.count()
        self._on_device: dict = {}  # device -> the transcriber's weights there

    @staticmethod
    def compile(engine, transcriber: Any) -> tuple[Callable, ...]:
        """The jitted (init, admit, advance, prepare, insert) of `engine` on the
        transcriber's devices; shared by every DeviceSlots of one kind (each holds its own
        state). `prepare` runs where its inputs are (one device)."""
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
        prepare = jax.jit(
            lambda w, mel, temperature, seed: engine.prepare(w[0], mel, temperature, seed, w[1])
        )
        insert = jax.jit(engine.insert, donate_argnums=(0,))
        return init, admit, advance, prepare, insert

    def _weights(self) -> tuple:
        """The transcriber's replicated (params, intercept state) on the slot mesh: the slot
        device's copy when that mesh is one of several devices (no new copy)."""
        t = self._t
        if t._slot_mesh is t.mesh:
            return t._weights()
        if self._view is None:
            one = NamedSharding(t._slot_mesh, P())
            own = self._weights_on(t._slot_mesh.devices.flat[0])

            def view(x, local):
                return jax.make_array_from_single_device_arrays(x.shape, one, [local])

            self._view = jax.tree.map(view, t._weights(), own)
        return self._view

    def _weights_on(self, device) -> tuple:
        """The transcriber's (params, intercept state): its copy on `device` (no new copy)."""
        if device not in self._on_device:

            def local(x):
                return next(s.data for s in x.addressable_shards if s.device == device)

            self._on_device[device] = jax.tree.map(local, self._t._weights())
        return self._on_device[device]

    def free(self) -> int:
        if self.helper is None:
            return int(np.sum(~self.active))
        return self.rows + LOOKAHEAD - int(self.active.sum()) - len(self._pending)

    def admit(self, items: list[tuple[np.ndarray, float, int]]) -> list[int]:
        if self.state is None:
            self.state = self._init()
        if len(items) > self.free():
            raise ValueError(f"admit: {len(items)} windows for {self.free()} free slots")
        if self.helper is None:
            return self._admit_on_slot_devices(items)
        ids = []
        slot_device = self._t._slot_mesh.devices.flat[0]
        on_slot_device = on_helper = 0
        for item in items:
            # Slots free now: the slot device takes the first two, then it and the helper
            # take turns (a run of a few windows never compiles `prepare` a second time,
            # ~2 s for tiny.en); windows ahead of the slots: the helper, while the slot
            # device decodes.
            open_slots = int(np.sum(~self.active)) - len(self._pending)
            if open_slots > 0 and (on_slot_device < 2 or on_slot_device <= on_helper):
                device, on_slot_device = slot_device, on_slot_device + 1
            else:
                device, on_helper = self.helper, on_helper + 1
            ids.append(next(self._ids))
            self._pending.append((ids[-1], self._prepare_on(device, item)))
        self._place()
        return ids

    def _prepare_on(self, device, item: tuple[np.ndarray, float, int]):
        mel, temperature, seed = item
        args = jax.device_put((np.asarray(mel, np.float32), np.float32(temperature), np.int32(seed)), device)
        return self._prepare(self._weights_on(device), *args)

    def _place(self) -> None:
        """Prepared windows into free slots, oldest first (the slot device waits for a
        window still being prepared: an empty slot would wait for a whole `advance`)."""
        slot_device = self._t._slot_mesh.devices.flat[0]
        for slot in np.flatnonzero(~self.active):
            if not self._pending:
                return
            window, row = self._pending.popleft()
            row, at = jax.device_put((row, np.int32(slot)), slot_device)
            self.state = self._insert(self.state, row, at)
            self.active[slot] = True
            self._held[int(slot)] = window

    def _admit_on_slot_devices(self, items: list[tuple[np.ndarray, float, int]]) -> list[int]:
        # Each window goes to the device with the most free slots.
        queues: list[list] = [[] for _ in range(self.devices)]
        slots = []
        for item in items:
            free = [
                np.flatnonzero(~self.active[d * self.per_device : (d + 1) * self.per_device])
                for d in range(self.devices)
            ]
            d = max(range(self.devices), key=lambda d: len(free[d]))
            local = int(free[d][0])
            self.active[d * self.per_device + local] = True
            slots.append(d * self.per_device + local)
            self._held[slots[-1]] = slots[-1]
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
        self._place()
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
        return [(self._held.pop(int(i)), tokens[i], float(sum_lp[i]), float(no_speech[i])) for i in ended]
