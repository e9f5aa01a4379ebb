"""Batched transcription of audio files and manifests.

Inputs are read in order; each one either becomes a transcript or an error record naming
the input and the cause, never silently dropped. Valid clips are batched to a fixed batch
size (the last batch is padded), so the jitted features + decoder compile once. Recordings
over 30 s (and every input when timestamps are asked for) are transcribed long-form
(`longform.py`), their windows batched across files.
"""

from __future__ import annotations

import collections
import concurrent.futures
import dataclasses
import functools
import logging
import math
from typing import Any, Callable, Iterable, Iterator, Optional

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from jaxwhisper.data.audio import AudioError, load_audio
from jaxwhisper.data.features import HOP, N_FRAMES, N_SAMPLES, SAMPLE_RATE, log_mel_batch, log_mel_recording
from jaxwhisper.inference.decoding import (
    DecodeOptions,
    SegmentOptions,
    make_greedy_decoder,
    make_window_engine,
    strip_tokens,
)
from jaxwhisper.inference.inputs import Utterance, read_ahead
from jaxwhisper.inference.longform import LongformDecoder, LongformOptions, LongformResult
from jaxwhisper.inference.timestamp_rules import TIME_PRECISION_S, TimestampIds
from jaxwhisper.inference.tokenizer import WhisperTokenizer
from jaxwhisper.models.precision import inference_config, inference_variables
from jaxwhisper.models.weights.base import LoadedModel
from jaxwhisper.spmd import host_row_devices

log = logging.getLogger(__name__)


class DeviceSlots:
    """The long-form `SlotEngine` of a Transcriber: `rows` slots split evenly over its
    devices, each device decoding its own slots (`WindowEngine` under `shard_map`).

    One `advance` decodes until a window ends on any device, so its slot is refilled at
    once; a round trip to the host per window (reading which ended, then admitting the
    next) costs well under a millisecond against ~15 ms per tiny.en decoding step.
    Admitting windows takes one window per device per call, so devices encode their new
    windows in parallel.
    """

    def __init__(self, compiled: tuple[Callable, Callable, Callable], transcriber: "Transcriber"):
        t = transcriber
        self.rows = t.batch_size
        self.devices = t.mesh.devices.size
        self.per_device = self.rows // self.devices
        self.n_mels = t.model.config.n_mels
        self._t = t
        self._init, self._admit, self._advance = compiled
        self.state = None  # the device arrays, made on first use
        self.active = np.zeros((self.rows,), bool)

    @staticmethod
    def compile(engine, transcriber: "Transcriber") -> tuple[Callable, Callable, Callable]:
        """The jitted (init, admit, advance) of `engine` on the transcriber's devices; shared by
        every DeviceSlots of one kind (each holds its own state)."""
        t = transcriber
        init = jax.jit(functools.partial(engine.init, t.batch_size), out_shardings=t._rows)
        admit = t._per_device(
            lambda w, state, *rows: engine.admit(w[0], state, *rows, w[1]), row_args=5, donate=(1,)
        )
        advance = t._per_device(
            lambda w, state, active: engine.advance(w[0], state, active, engine.max_new, w[1], True, "data"),
            row_args=2,
            donate=(1,),
        )
        return init, admit, advance

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
        put = functools.partial(jax.device_put, device=self._t._rows)
        for call in range(max(len(q) for q in queues)):
            mel = np.zeros((self.devices, self.n_mels, N_FRAMES), np.float32)
            local = np.full((self.devices,), -1, np.int32)
            temperature = np.zeros((self.devices,), np.float32)
            seed = np.zeros((self.devices,), np.int32)
            for d, q in enumerate(queues):
                if call < len(q):
                    local[d], (mel[d], temperature[d], seed[d]) = q[call]
            self.state = self._admit(
                self._t._weights(), self.state, *map(put, (mel, local, temperature, seed))
            )
        return slots

    def advance(self) -> list[tuple[int, np.ndarray, float, float]]:
        if not self.active.any():
            return []
        active = jax.device_put(self.active, self._t._rows)
        self.state = self._advance(self._t._weights(), self.state, active)
        ended = np.flatnonzero(self.active & np.asarray(self.state["done"]))
        if not ended.size:
            return []
        tokens = np.asarray(self.state["tokens"])
        sum_lp, no_speech = np.asarray(self.state["sum_logprob"]), np.asarray(self.state["no_speech_prob"])
        self.active[ended] = False
        return [(int(i), tokens[i], float(sum_lp[i]), float(no_speech[i])) for i in ended]


class Transcriber:
    """Greedy batched transcription with one compiled function per batch size.

    Args:
      model: a loaded model (see `resolve_model`).
      batch_size: clips per device call; the last batch is padded to it.
      padding: log-mel padding convention ("log_mel" matches faster-whisper).
      language, task: prefix of multilingual models.
      sort_window: rows gathered before batching by length (default 4 batches); 1 keeps
        the input order.
      intercept: `(state) -> context manager` entered while tracing the decoder
        (quantization: `jaxwhisper.quant.ptq.QuantizedModel.intercept`).
      intercept_state: the pytree of arrays `intercept` reads (INT8 kernels), placed on the
        devices once and passed to the compiled decoder as an argument.
      devices: local devices to shard rows over (default: `spmd.host_row_devices()`, all
        of this host's but at most one CPU device per core).
      long_form: algorithm for recordings over 30 s ("sequential", "windows" or "chunked",
        see `jaxwhisper.inference.longform`).
      timestamps: decode every input as long-form (short ones are one window) and give
        segments with start/end times.
      no_speech_threshold, log_prob_threshold, compression_ratio_threshold: faster-whisper's
        checks of a window (None turns one off) and defaults.
      max_initial_timestamp_s: latest first timestamp of a window.
      temperatures: more than one turns on the temperature fallback (`fallback.py`;
        `fallback.FALLBACK_TEMPERATURES` is faster-whisper's default): every input is then
        decoded window by window, short clips as one window without timestamps (at most
        224 new tokens, as CTranslate2), and a window that fails the checks is sampled
        again at the next temperature. The default, greedy decoding, decodes short clips in
        batches by length with the whole 448-token budget.
      best_of, seed: samples per window at a temperature above 0, and their seed.
    """

    def __init__(
        self,
        model: LoadedModel,
        batch_size: int = 16,
        padding: str = "log_mel",
        language: str = "en",
        task: str = "transcribe",
        sort_window: Optional[int] = None,
        intercept: Optional[Callable] = None,
        intercept_state: Any = None,
        devices: Optional[list] = None,
        long_form: str = "sequential",
        timestamps: bool = False,
        no_speech_threshold: Optional[float] = 0.6,
        log_prob_threshold: Optional[float] = -1.0,
        compression_ratio_threshold: Optional[float] = 2.4,
        max_initial_timestamp_s: float = 1.0,
        temperatures: tuple[float, ...] = (0.0,),
        best_of: int = 5,
        seed: int = 0,
    ):
        if batch_size < 1:
            raise ValueError(f"batch size must be at least 1, got {batch_size}")
        if model.tokenizer_dir is None:
            raise ValueError(f"{model.source}: no tokenizer.json found beside the weights")
        # The model's window: 30 s for every Whisper model. Long-form decoding (timestamps,
        # seeking, 30 s strides) is defined for that window only.
        self.window = model.config.n_frames * HOP
        if timestamps and self.window != N_SAMPLES:
            raise ValueError(
                f"{model.source}: timestamps need a 30 s model window; this model's is "
                f"{self.window / SAMPLE_RATE:g} s"
            )
        self.model = model
        self.batch_size = batch_size
        self.sort_window = sort_window or 4 * batch_size
        self.tokenizer = WhisperTokenizer(
            model.tokenizer_dir, model.config.is_multilingual, language=language, task=task
        )
        tok = self.tokenizer
        # Rows are sharded over this host's devices (the most that divide the batch size);
        # params are replicated. Each host decodes its own inputs: no cross-host traffic.
        devices = list(devices or host_row_devices())
        n_dev = math.gcd(batch_size, len(devices))
        self.config = inference_config(model.config, devices[0].platform)
        options = DecodeOptions(tok.prefix, tok.eot, tok.suppress_tokens, tok.suppress_at_begin)
        decoder = make_greedy_decoder(self.config, options, intercept)
        n_mels = model.config.n_mels

        self.mesh = Mesh(np.asarray(devices[:n_dev]), ("data",))
        rows, replicated = NamedSharding(self.mesh, P("data")), NamedSharding(self.mesh, P())
        self._replicated, self._rows = replicated, rows

        def run(weights, audio, lengths):  # rows of length 0 pad the batch: not decoded
            mel = log_mel_batch(audio, lengths, n_mels=n_mels, padding=padding)
            return decoder(weights[0], mel, weights[1], valid=lengths > 0)

        self._run = self._per_device(run)
        self.set_params(model.params)
        self._state = jax.device_put(intercept_state, replicated)
        self.longform = LongformOptions(
            long_form,
            no_speech_threshold,
            log_prob_threshold,
            compression_ratio_threshold,
            tuple(temperatures),
            best_of,
            seed,
        )
        self.fallback = len(self.longform.temperatures) > 1 or self.longform.temperatures[0] > 0
        self.timestamps = timestamps
        self._intercept = intercept
        self._max_initial_index = round(max_initial_timestamp_s / TIME_PRECISION_S)
        self._mel_runs: dict[bool, tuple] = {}

    def segment_options(self, timestamps: bool) -> SegmentOptions:
        """How the long-form decoder decodes a window, with or without timestamps."""
        tok, c = self.tokenizer, self.config
        ids = None
        prefix = tok.prefix
        if timestamps:
            ids = TimestampIds(
                tok.timestamp_begin, c.n_vocab - 1, tok.eot, tok.no_timestamps, self._max_initial_index
            )
            prefix = prefix[:-1]  # no <|notimestamps|>
        no_speech = tok.special_ids["no_speech"]
        if no_speech is None:
            raise ValueError(f"{tok.path}: tokenizer has no <|nospeech|> or <|nocaptions|>")
        return SegmentOptions(prefix, tok.eot, no_speech, tok.suppress_tokens, tok.suppress_at_begin, ids)

    def _window_engine(self, timestamps: bool) -> DeviceSlots:
        """A long-form slot engine with its own slots (one compilation per `timestamps`
        value, on first use)."""
        if timestamps not in self._mel_runs:
            engine = make_window_engine(self.config, self.segment_options(timestamps), self._intercept)
            self._mel_runs[timestamps] = DeviceSlots.compile(engine, self)
        return DeviceSlots(self._mel_runs[timestamps], self)

    def _longform_decoder(self, mode: str) -> LongformDecoder:
        tok = self.tokenizer
        return LongformDecoder(
            self._window_engine(timestamps=mode != "windows"),
            self.model.config.n_mels,
            tok.eot,
            tok.timestamp_begin,
            tok.decode,
            dataclasses.replace(self.longform, mode=mode),
        )

    def _per_device(self, fn: Callable, row_args: int = 2, donate: tuple[int, ...] = ()) -> Callable:
        """`fn((params, intercept state), *row arrays)` jitted so that each device runs it on
        its own rows.

        The decoder maps the encoder over rows and loops until every row has ended. Jitted
        over a batch sharded across devices (SPMD partitioning of the whole program), the
        row map over the sharded axis and the loop's stop test over all rows partition
        badly: 16 tiny.en clips took 84 s on 8 CPU devices, against 12.6 s with shard_map
        and the same tokens. Each device now runs the loop on its own rows and stops when
        they are done.
        """
        in_specs = (P(),) + (P("data"),) * row_args
        return jax.jit(
            jax.shard_map(fn, mesh=self.mesh, in_specs=in_specs, out_specs=P("data"), check_vma=False),
            donate_argnums=donate,
        )

    def _weights(self) -> tuple:
        """The replicated first argument of the compiled decoders: (params, intercept state)."""
        return self.params, self._state

    def set_params(self, params) -> None:
        """Swaps in other weights of the same architecture (no recompilation)."""
        # The decoders take variables with the low-precision operands stored cast.
        self.params = jax.device_put(inference_variables(params, self.config), self._replicated)

    def _batch_arrays(self, clips: list[np.ndarray]) -> tuple[jax.Array, jax.Array]:
        audio = np.zeros((self.batch_size, self.window), np.float32)
        lengths = np.zeros((self.batch_size,), np.int32)
        for i, c in enumerate(clips):
            audio[i, : c.shape[0]] = c
            lengths[i] = c.shape[0]
        # Placed explicitly: in a multi-process run jit refuses numpy inputs with a sharding
        # (this host's devices only; found by tests/test_multihost.py).
        return jax.device_put(audio, self._rows), jax.device_put(lengths, self._rows)

    def decode_stream(self, items: Iterable) -> Iterator[tuple[int, object]]:
        """Decodes `(key, audio | Exception)` items; yields `(key, token ids | Exception)`.

        Long-form recordings give the text ids of all their segments; see `decode_results`.
        """
        for key, result in self.decode_results(items):
            yield key, result.tokens(self.tokenizer.eot) if isinstance(result, LongformResult) else result

    def decode_results(self, items: Iterable) -> Iterator[tuple[int, object]]:
        """Decodes `(key, audio | Exception)` items; yields `(key, ids | LongformResult | Exception)`.

        Clips of at most 30 s (without `timestamps`) are decoded as one window without
        timestamps: rows are gathered `sort_window` at a time and batched by length (with
        the temperature fallback, by a "windows" long-form decoder, in input order).
        Longer recordings (every input with `timestamps`) go to the long-form decoder
        (`longform.py`), whose batches hold windows of many files. Results come back in
        completion order; batches are dispatched asynchronously, so the next clips are read
        while the device works. A model whose window is shorter than 30 s (`self.window`)
        decodes clips that fit it and gives an error for the others.
        """
        rows: list[tuple[int, np.ndarray]] = []  # (key, samples)
        in_flight = None

        def finish(flight):
            tokens, batch_rows = flight
            return [
                (key, ids)
                for (key, _), ids in zip(batch_rows, strip_tokens(np.asarray(tokens), self.tokenizer.eot))
            ]

        def dispatch():
            nonlocal rows, in_flight
            flight = (self._run(self._weights(), *self._batch_arrays([c for _, c in rows])), rows)
            rows = []
            ready = finish(in_flight) if in_flight is not None else []
            in_flight = flight
            return ready

        def flush_pool():
            # Longest first, so that rows of a batch finish decoding at about the same step:
            # the while loop runs until its slowest row is done.
            pool.sort(key=lambda r: -r[1].shape[0])
            while len(pool) >= self.batch_size or (pool and final):
                rows.extend(pool[: self.batch_size])
                del pool[: self.batch_size]
                yield from dispatch()

        pool: list[tuple[int, np.ndarray]] = []
        final = False
        longform = self._longform_decoder(self.longform.mode)
        # with the fallback, short clips are windows that may be retried
        short = self._longform_decoder("windows") if self.fallback and not self.timestamps else None
        for key, audio, features in self._features_ahead(items):
            if isinstance(audio, Exception):
                yield key, audio
                continue
            if audio.shape[0] > self.window and self.window != N_SAMPLES:
                yield (
                    key,
                    ValueError(
                        f"{audio.shape[0] / SAMPLE_RATE:.1f} s is longer than this model's "
                        f"{self.window / SAMPLE_RATE:g} s window (long-form decoding needs a 30 s one)"
                    ),
                )
                continue
            if features is not None:
                longform.add_features(key, features.result())
                yield from longform.pump()
                continue
            if short is not None:
                short.add(key, audio)
                yield from short.pump()
                continue
            pool.append((key, audio))
            if len(pool) >= self.sort_window:
                yield from flush_pool()
        final = True
        yield from flush_pool()
        if in_flight is not None:
            yield from finish(in_flight)
        yield from longform.pump(final=True)
        if short is not None:
            yield from short.pump(final=True)

    def _features_ahead(self, items: Iterable, ahead: int = 2) -> Iterator[tuple]:
        """`(key, audio, features)`: for each input going to the long-form decoder, its
        log-mel (`log_mel_recording`, ~0.17 s per minute of audio) computed in a worker
        thread `ahead` inputs before it is needed, so that it overlaps decoding instead of
        stalling it; None for the others."""

        def long(audio) -> bool:
            if isinstance(audio, Exception) or (audio.shape[0] > self.window and self.window != N_SAMPLES):
                return False
            return self.timestamps or audio.shape[0] > N_SAMPLES

        n_mels = self.model.config.n_mels
        with concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="log-mel") as pool:
            pending: collections.deque = collections.deque()
            for key, audio in items:
                features = pool.submit(log_mel_recording, audio, n_mels) if long(audio) else None
                pending.append((key, audio, features))
                if len(pending) > ahead:
                    yield pending.popleft()
            yield from pending

    def text(self, result) -> str:
        """Transcript of a `decode_results` result (segments joined as faster-whisper does)."""
        if isinstance(result, LongformResult):
            return "".join(self.tokenizer.decode(s.tokens) for s in result.segments).strip()
        return self.tokenizer.decode(result).strip()

    def segments(self, result) -> list[dict]:
        """`[{"start", "end", "text"}]` (seconds) of a long-form result; [] for a short one."""
        if not isinstance(result, LongformResult):
            return []
        return [
            {
                "start": round(s.start, 2),
                "end": round(s.end, 2),
                "text": self.tokenizer.decode(s.tokens).strip(),
            }
            for s in result.segments
        ]

    def transcribe_arrays(self, clips: list[np.ndarray]) -> list[str]:
        """Transcripts of in-memory 16 kHz mono clips, in order."""
        texts: dict[int, str] = {}
        for key, result in self.decode_results(enumerate(clips)):
            texts[key] = self.text(result)
        return [texts[i] for i in range(len(clips))]

    def transcribe(
        self, utterances: list[Utterance], on_result: Optional[Callable[[dict], None]] = None
    ) -> Iterator[dict]:
        """Yields one record per utterance, in input order.

        Records are `{"id", "audio", "text", "duration_s"}`, or `{"id", "audio", "text": None,
        "error"}` for an input that could not be read. `on_result` is called with each record
        as it is yielded (for progress bars).
        """
        durations: dict[int, float] = {}

        def load(item):
            i, u = item
            if u.error:
                return i, AudioError(u.audio, u.error)
            try:
                audio = load_audio(u.audio)
            except AudioError as e:
                return i, e
            durations[i] = audio.shape[0] / SAMPLE_RATE
            return i, audio

        done: dict[int, dict] = {}
        next_out = 0
        with concurrent.futures.ThreadPoolExecutor(max_workers=2) as pool:
            loaded = read_ahead(pool, load, enumerate(utterances), depth=2 * self.batch_size)
            for i, result in self.decode_results(loaded):
                u = utterances[i]
                if isinstance(result, Exception):
                    done[i] = {"id": u.id, "audio": u.audio, "text": None, "error": str(result)}
                else:
                    done[i] = {
                        "id": u.id,
                        "audio": u.audio,
                        "text": self.text(result),
                        "duration_s": durations[i],
                    }
                    if self.timestamps:
                        done[i]["segments"] = self.segments(result)
                while next_out in done:
                    rec = done.pop(next_out)
                    if on_result:
                        on_result(rec)
                    yield rec
                    next_out += 1
