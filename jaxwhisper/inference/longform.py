"""Long-form transcription: recordings of any length as 30 s windows, batched across files.

Three algorithms on the log-mel of the whole recording (`log_mel_recording`), each window a
slice of `min(3000, content_frames - seek)` frames padded with zeros to 3000; the first two
are faster-whisper's (`WhisperModel.generate_segments`):

* `"windows"` (faster-whisper's `without_timestamps=True`): consecutive, non-overlapping
  windows decoded without timestamps; every window is independent, so all of a file's
  windows can share one batch.
* `"sequential"` (OpenAI's and faster-whisper's default): windows decoded with timestamps;
  the text is split into segments at consecutive timestamp pairs, and the next window starts
  at the last complete timestamp (a single trailing timestamp, meaning no speech after it, or
  no timestamp at all consumes the window). Nothing between windows is lost or repeated.
  A file has one window in flight at a time; the batch is filled with other files' windows,
  each row one file at its current seek, refilled as files advance.
* `"chunked"`: the recording is first cut into chunks of at most 30 s at its quietest
  moments (`quiet_cuts`: no VAD model, the frame of lowest smoothed log-mel energy in each
  20-30 s stretch), then every chunk is decoded as its own `"sequential"` recording. The
  chunks of one file fill a batch together, so a single long file uses the whole batch; a
  chunk whose text stops before its end is continued from its last complete timestamp like
  any sequential recording, so nothing inside a chunk is dropped, and the cuts fall in pauses
  rather than inside words. The price: Whisper sees each chunk without the audio before it.

Windows are decoded in a batch of slots (`SlotEngine`; the model's is
`windows.make_window_engine`): a window takes a slot as soon as one is free and leaves it
when it ends, so the batch does not wait for its longest window (a batch decoded to its
longest row left a quarter of the row-steps of a long-form run idle). The engine may take
windows ahead of its free slots (on CPU it prepares them on another device while the
slots decode, `slots.DeviceSlots`).

Options as faster-whisper's: a window is skipped as silence when its no-speech probability
exceeds `no_speech_threshold` unless its average log-prob exceeds `log_prob_threshold`.

Temperature fallback (`fallback.py`), when `temperatures` lists more than one: a window that
fails faster-whisper's checks is decoded again at the next temperature (`best_of` samples,
seeded per file, window, attempt and sample, so independent of the batch) in its file's
place. With the default `temperatures=(0.0,)` decoding is greedy and a repetitive window is
kept and logged, as faster-whisper keeps it at temperature 0.
"""

from __future__ import annotations

import collections
import dataclasses
import logging
import zlib
from typing import Callable, Iterator, Optional

import numpy as np

from jaxwhisper.data.features import HOP, N_FRAMES, SAMPLE_RATE, log_mel_recording
from jaxwhisper.inference.chunking import quiet_cuts
from jaxwhisper.inference.fallback import Decoded, compression_ratio, fallback_choice, needs_fallback
from jaxwhisper.inference.slots import SlotEngine
from jaxwhisper.inference.timestamp_rules import TIME_PRECISION_S

log = logging.getLogger(__name__)

MODES = ("sequential", "windows", "chunked")
FRAME_S = HOP / SAMPLE_RATE  # 0.01 s per mel frame
INPUT_STRIDE = 2  # mel frames per encoder position (one timestamp step)


@dataclasses.dataclass
class Segment:
    """A stretch of a recording and its text tokens (timestamps removed on output).

    `avg_logprob`, `no_speech_prob` and `compression_ratio` describe the window's decoding
    it came from; `temperature` is the window's last temperature tried (faster-whisper's:
    when every one fails, the kept decoding may come from an earlier one).
    """

    start: float
    end: float
    tokens: list[int]
    avg_logprob: float = 0.0
    no_speech_prob: float = 0.0
    compression_ratio: float = 0.0
    temperature: float = 0.0


@dataclasses.dataclass
class LongformResult:
    """The segments of one recording, in order (empty and zero-length ones dropped)."""

    segments: list[Segment]

    def tokens(self, eot: int) -> list[int]:
        """Text ids of all segments (timestamps and other special ids removed)."""
        return [t for s in self.segments for t in s.tokens if t < eot]


@dataclasses.dataclass(frozen=True)
class LongformOptions:
    """Long-form settings (faster-whisper's defaults, no previous-text prompt).

    Attributes:
      mode: "sequential", "windows" or "chunked" (see the module docstring).
      no_speech_threshold, log_prob_threshold, compression_ratio_threshold: faster-whisper's
        checks (None turns one off).
      temperatures: decoding temperatures tried in order (0 is greedy); one entry turns the
        fallback off. `FALLBACK_TEMPERATURES` is faster-whisper's default.
      best_of: samples drawn at a temperature above 0.
      seed: seeds the samples.
    """

    mode: str = "sequential"
    no_speech_threshold: Optional[float] = 0.6
    log_prob_threshold: Optional[float] = -1.0
    compression_ratio_threshold: Optional[float] = 2.4
    temperatures: tuple[float, ...] = (0.0,)
    best_of: int = 5
    seed: int = 0

    def __post_init__(self):
        if self.mode not in MODES:
            raise ValueError(f"long-form mode must be one of {MODES}, got {self.mode!r}")
        if not self.temperatures or any(t < 0 for t in self.temperatures):
            raise ValueError(f"temperatures must be a non-empty list of values >= 0, got {self.temperatures}")
        if self.best_of < 1:
            raise ValueError(f"best_of must be at least 1, got {self.best_of}")


def window_features(features: np.ndarray, seek: int) -> tuple[np.ndarray, int]:
    """The window of `features` [n_mels, frames] at frame `seek`, padded to 3000 frames.

    Returns:
      (mel [n_mels, 3000], segment_size): `segment_size` content frames of the window.
    """
    content = features.shape[-1] - 1
    size = min(N_FRAMES, content - seek)
    mel = np.zeros((features.shape[0], N_FRAMES), np.float32)
    mel[:, :size] = features[:, seek : seek + size]
    return mel, size


def split_by_timestamps(
    tokens: list[int], timestamp_begin: int, seek: int, segment_size: int
) -> tuple[list[Segment], int]:
    """Segments of one window's tokens and the next seek (faster-whisper's rules).

    Args:
      tokens: the window's generated ids up to (excluding) end-of-text.
      timestamp_begin: id of `<|0.00|>`.
      seek: the window's first mel frame in the recording.
      segment_size: its content frames.

    Returns:
      (segments with absolute start/end in seconds, next seek in frames).
    """
    offset = seek * FRAME_S
    is_ts = [t >= timestamp_begin for t in tokens]
    single_ending = len(tokens) >= 2 and not is_ts[-2] and is_ts[-1]
    consecutive = [i for i in range(1, len(tokens)) if is_ts[i] and is_ts[i - 1]]
    if consecutive:
        slices = consecutive + ([len(tokens)] if single_ending else [])
        segments, last = [], 0
        for cut in slices:
            part = tokens[last:cut]
            segments.append(
                Segment(
                    start=offset + (part[0] - timestamp_begin) * TIME_PRECISION_S,
                    end=offset + (part[-1] - timestamp_begin) * TIME_PRECISION_S,
                    tokens=part,
                )
            )
            last = cut
        if single_ending:
            return segments, seek + segment_size
        # The text after the last complete pair is unfinished: decode it again from there.
        return segments, seek + (tokens[last - 1] - timestamp_begin) * INPUT_STRIDE
    duration = segment_size * FRAME_S
    stamps = [t for t in tokens if t >= timestamp_begin]
    if stamps and stamps[-1] != timestamp_begin:
        duration = (stamps[-1] - timestamp_begin) * TIME_PRECISION_S
    return [Segment(start=offset, end=offset + duration, tokens=tokens)], seek + segment_size


class _Chunks:
    """The chunks of one recording in `"chunked"` mode, each a `_File` at its `offset`."""

    def __init__(self, key):
        self.key, self.files, self.remaining = key, [], 0


class _File:
    def __init__(
        self, key, features: np.ndarray, mode: str, group: Optional[_Chunks] = None, offset: int = 0
    ):
        self.key = key
        self.group, self.offset = group, offset  # offset: the chunk's first frame in its recording
        self.index = 0  # the recording's place in the decoder's input (seeds its samples)
        self.features = features
        self.content = features.shape[-1] - 1
        self.mode = mode
        self.seek = 0
        # windows mode: every window's seek is known up front, results land by window index
        self.pending = list(range(0, self.content, N_FRAMES)) if mode == "windows" else []
        self.results: dict[int, list[Segment]] = {}
        self.in_flight = 0

    def done(self) -> bool:
        if self.mode == "windows":
            return not self.pending and not self.in_flight
        return self.seek >= self.content and not self.in_flight

    def segments(self) -> list[Segment]:
        return [s for k in sorted(self.results) for s in self.results[k]]


class _Window:
    """A file's window being decoded: its attempt (temperature index) and samples so far."""

    def __init__(self, file: _File, seek: int):
        self.file, self.seek = file, seek
        self.size = min(N_FRAMES, file.content - seek)
        self.attempt = 0
        self.samples: list[Decoded] = []
        self.tried: list[Decoded] = []


class LongformDecoder:
    """Feeds files' windows to a slot engine and turns its output into segments.

    Args:
      engine: the decoder (`SlotEngine`): a window takes a free slot as soon as there is
        one, so the batch stays full while windows end at different lengths.
      n_mels: mel bins of the model.
      eot, timestamp_begin: ids.
      decode_text: ids -> text (for the compression ratio).
      options: mode and thresholds.
    """

    def __init__(
        self,
        engine: SlotEngine,
        n_mels: int,
        eot: int,
        timestamp_begin: int,
        decode_text: Callable[[list[int]], str],
        options: LongformOptions,
    ):
        self.engine, self.n_mels = engine, n_mels
        self.eot, self.timestamp_begin, self.decode_text = eot, timestamp_begin, decode_text
        self.options = options
        self.ready: collections.deque = collections.deque()  # (window, sample) rows to decode
        self.held: dict[int, tuple[_Window, int]] = {}  # windows the engine holds, by id
        self.finished: list[_File] = []  # files with no window at all (under 10 ms)
        self._files = 0  # files added so far: each file's index seeds its samples

    def add(self, key, audio: np.ndarray) -> None:
        """Queues a recording (mono 16 kHz samples [n_samples])."""
        self.add_features(key, log_mel_recording(audio, self.n_mels))

    def add_features(self, key, features: np.ndarray) -> None:
        """Queues a recording by its log-mel [n_mels, content frames + 1] (`log_mel_recording`)."""
        self._files += 1
        if self.options.mode != "chunked":
            files = [_File(key, features, self.options.mode)]
        else:
            cuts = quiet_cuts(features)
            group = _Chunks(key)
            # each chunk keeps one frame past its end, as a recording's log-mel has one
            bounds = zip(cuts[:-1], cuts[1:])
            files = [_File(key, features[:, a : b + 1], "sequential", group, a) for a, b in bounds]
            group.files, group.remaining = files, len(files)
        for f in files:
            f.index = self._files
            self._queue(f)
            if f.done():
                self.finished.append(f)

    def _queue(self, f: _File) -> None:
        if f.mode == "windows":
            for seek in f.pending:
                self._queue_attempt(_Window(f, seek))
            f.in_flight += len(f.pending)
            f.pending = []
        elif f.seek < f.content:
            self._queue_attempt(_Window(f, f.seek))
            f.in_flight += 1

    def _temperature(self, w: _Window) -> float:
        return self.options.temperatures[w.attempt]

    def _rows(self, w: _Window) -> int:
        """Rows of the window's current attempt: one greedy, or `best_of` samples."""
        return self.options.best_of if self._temperature(w) > 0 else 1

    def _queue_attempt(self, w: _Window) -> None:
        self.ready.extend((w, j) for j in range(self._rows(w)))

    def _seed(self, w: _Window, sample: int) -> int:
        # A function of where the row is in the input, not of the batch it lands in.
        f = w.file
        data = f"{self.options.seed}/{f.index}/{f.offset}/{w.seek}/{w.attempt}/{sample}".encode()
        return zlib.crc32(data) & 0x7FFFFFFF

    def pump(self, final: bool = False) -> Iterator[tuple[object, LongformResult]]:
        """Decodes while the engine takes no more windows (until nothing is left when
        `final`); yields finished files. Without `final` it returns once the engine could
        take a window and none is ready (more input is needed)."""
        while self.finished:
            yield from self._completed(self.finished.pop(0))
        while True:
            self._fill()
            if not self.held or (not final and self.engine.free()):
                return
            for window, tokens, sum_lp, no_speech in self.engine.advance():
                w, _ = self.held.pop(window)
                yield from self._decoded(w, tokens, sum_lp, no_speech)

    def _fill(self) -> None:
        rows = [self.ready.popleft() for _ in range(min(self.engine.free(), len(self.ready)))]
        if not rows:
            return
        items = [
            (window_features(w.file.features, w.seek)[0], self._temperature(w), self._seed(w, j))
            for w, j in rows
        ]
        for window, row in zip(self.engine.admit(items), rows):
            self.held[window] = row

    def _decoded(self, w: _Window, tokens: np.ndarray, sum_lp: float, no_speech: float):
        row = np.asarray(tokens).tolist()
        ids = row[: row.index(self.eot)] if self.eot in row else row
        ratio = compression_ratio(self.decode_text(ids).strip())
        w.samples.append(Decoded(ids, float(sum_lp), float(no_speech), ratio))
        if len(w.samples) == self._rows(w):
            yield from self._attempted(w)

    def _attempted(self, w: _Window):
        """Takes the window's attempt: retries it at the next temperature, or places its
        segments and moves its file on."""
        # best_of: OpenAI's ranking of samples, log-prob per generated token
        d = max(w.samples, key=lambda s: s.sum_logprob / max(len(s.ids), 1))
        w.samples = []
        w.tried.append(d)
        if needs_fallback(d, self.options):
            if w.attempt + 1 < len(self.options.temperatures):
                w.attempt += 1
                self._queue_attempt(w)
                return
            d = fallback_choice(w.tried, self.options)
        f, seek = w.file, w.seek
        f.in_flight -= 1
        f.results[seek], next_seek = self._segments(f, d, seek, w.size, self._temperature(w))
        if f.mode == "sequential":
            # A last complete pair at the window's first frame would decode the same
            # window forever (faster-whisper would loop): move on by the window instead.
            f.seek = next_seek if next_seek > seek else seek + w.size
            self._queue(f)
        if f.done():
            yield from self._completed(f)

    def _completed(self, f: _File):
        """Yields the file's (key, result), or its recording's once its last chunk is done."""
        if f.group is None:
            yield f.key, self._result(f)
            return
        g = f.group
        g.remaining -= 1
        if g.remaining == 0:
            merged = []
            for chunk in g.files:
                offset = chunk.offset * FRAME_S
                merged += [
                    dataclasses.replace(s, start=s.start + offset, end=s.end + offset)
                    for s in self._result(chunk).segments
                ]
            yield g.key, LongformResult(merged)

    def _result(self, f: _File) -> LongformResult:
        # faster-whisper drops segments of zero length or without text
        kept = [s for s in f.segments() if s.start != s.end and self.decode_text(s.tokens).strip()]
        return LongformResult(kept)

    def _segments(self, f: _File, d: Decoded, seek: int, size: int, temperature: float):
        o = self.options
        if o.no_speech_threshold is not None and d.no_speech_prob > o.no_speech_threshold:
            if o.log_prob_threshold is None or d.avg_logprob <= o.log_prob_threshold:
                return [], seek + size  # silence: skip the window
        ratio = d.compression_ratio
        if o.compression_ratio_threshold is not None and ratio > o.compression_ratio_threshold:
            log.warning(
                "%s: the window at %.1f s looks repetitive (compression ratio %.2f > %.2f); kept %s",
                f.key,
                (f.offset + seek) * FRAME_S,
                ratio,
                o.compression_ratio_threshold,
                "after every temperature" if len(o.temperatures) > 1 else "(no temperature fallback)",
            )
        segments, next_seek = split_by_timestamps(d.ids, self.timestamp_begin, seek, size)
        for s in segments:
            s.avg_logprob, s.no_speech_prob, s.compression_ratio = d.avg_logprob, d.no_speech_prob, ratio
            s.temperature = temperature
        return segments, next_seek
