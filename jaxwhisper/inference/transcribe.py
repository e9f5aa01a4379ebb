"""Batched transcription of audio files and manifests.

Inputs are read in order; each one either becomes a transcript or an error record naming
the input and the cause, never silently dropped. Valid clips are batched to a fixed batch
size (the last batch is padded), so the jitted features + decoder compile once. Recordings
over 30 s (and every input when timestamps are asked for) are transcribed long-form
(`longform.py`), their windows batched across files.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import logging
import math
from typing import Any, Callable, Iterable, Iterator, Optional

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from jaxwhisper.data.audio import AudioError, load_audio
from jaxwhisper.data.features import HOP, N_SAMPLES, SAMPLE_RATE, log_mel_batch
from jaxwhisper.inference.decoding import DecodeOptions, make_greedy_decoder, strip_tokens
from jaxwhisper.inference.inputs import Utterance, features_ahead, read_ahead
from jaxwhisper.inference.longform import LongformDecoder, LongformOptions, LongformResult
from jaxwhisper.inference.slots import DeviceSlots, slot_mesh
from jaxwhisper.inference.timestamp_rules import TIME_PRECISION_S, TimestampIds
from jaxwhisper.inference.tokenizer import WhisperTokenizer
from jaxwhisper.inference.windows import SegmentOptions, make_window_engine
from jaxwhisper.models.precision import inference_config, inference_variables
from jaxwhisper.models.weights.base import LoadedModel
from jaxwhisper.spmd import host_row_devices

log = logging.getLogger(__name__)


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
      module: the Flax module to decode with instead of `Whisper(model.config)`, with
        Whisper's methods and `model.params` as its params (e.g. a qwix-quantized Whisper,
        `bench/quant_speed.py`).
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
        module: Optional[Any] = None,
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
        self._module = module
        decoder = make_greedy_decoder(self.config, options, intercept, module)
        n_mels = model.config.n_mels

        self.mesh = Mesh(np.asarray(devices[:n_dev]), ("data",))
        rows, replicated = NamedSharding(self.mesh, P("data")), NamedSharding(self.mesh, P())
        self._replicated, self._rows = replicated, rows
        self._slot_mesh = slot_mesh(self.mesh)
        self._slot_rows = NamedSharding(self._slot_mesh, P("data"))

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
        self._slot_programs: dict[bool, tuple] = {}  # compiled slot engines by `timestamps`

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
        if timestamps not in self._slot_programs:
            options = self.segment_options(timestamps)
            engine = make_window_engine(self.config, options, self._intercept, self._module)
            self._slot_programs[timestamps] = DeviceSlots.compile(engine, self)
        return DeviceSlots(self._slot_programs[timestamps], self)

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

    def _per_device(
        self, fn: Callable, row_args: int = 2, donate: tuple[int, ...] = (), mesh: Optional[Mesh] = None
    ) -> Callable:
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
        mesh = mesh or self.mesh
        return jax.jit(
            jax.shard_map(fn, mesh=mesh, in_specs=in_specs, out_specs=P("data"), check_vma=False),
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

        def long(audio) -> bool:  # goes to the long-form decoder
            if isinstance(audio, Exception) or (audio.shape[0] > self.window and self.window != N_SAMPLES):
                return False
            return self.timestamps or audio.shape[0] > N_SAMPLES

        for key, audio, features in features_ahead(items, long, self.model.config.n_mels):
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
