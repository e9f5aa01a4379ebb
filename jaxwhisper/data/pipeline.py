"""Deterministic, resumable, multi-host batches of audio and decoder labels.

Order. Row `j` of global step `s` is global draw `g = s * global_batch + j`. Its source is
chosen by a counter-based hash of (seed, g) against the mixture probabilities, and it is the
k-th draw from that source, where k counts earlier draws of the same source; draw k is item
`perm(seed, source, k // size)[k % size]` of a fresh permutation per epoch. So the whole
order is a pure function of (seed, step): a resumed run sees exactly the batches an
uninterrupted run would, and process `p` of `P` reads rows `[p * B / P, (p + 1) * B / P)`
of every global batch, so together the processes read each example once per epoch.

Validation. A row that cannot be used (bad manifest row, cleaning rule, unreadable, empty,
non-finite, silent, too long, empty or too-long text) keeps its place in the batch as
padding (zero audio, labels all -100, `valid` 0) so shapes never change, and is counted by
reason in `DropCounter`; `DropCounter.check` fails a run whose drop fraction is too high.
"""

from __future__ import annotations

import collections
import dataclasses
import logging
import queue
import threading
from typing import Callable, Iterator, Optional, Sequence

import numpy as np

from jaxwhisper.data.audio import AudioError, decode_audio
from jaxwhisper.data.features import N_SAMPLES, SAMPLE_RATE
from jaxwhisper.data.sources import PackedExample, RawExample, Source

log = logging.getLogger(__name__)

DROP_REASONS = (
    "bad_row",
    "text_rule",
    "unreadable",
    "empty",
    "non_finite",
    "silent",
    "too_long",
    "empty_text",
    "text_too_long",
    "no_pseudo_label",
    "wer_filter",
)
IGNORE = -100


class DataError(RuntimeError):
    """Too much of the data was unusable; the message gives the counts."""


class DropCounter:
    """Counts examples seen and dropped, per source and reason."""

    def __init__(self):
        self.seen: collections.Counter = collections.Counter()
        self.dropped: collections.Counter = collections.Counter()  # (source, reason) -> n

    def add(self, source: str, reason: Optional[str]):
        self.seen[source] += 1
        if reason:
            self.dropped[(source, reason)] += 1

    @property
    def total_seen(self) -> int:
        return sum(self.seen.values())

    @property
    def total_dropped(self) -> int:
        return sum(self.dropped.values())

    def summary(self) -> dict:
        by_reason = collections.Counter()
        for (_, reason), n in self.dropped.items():
            by_reason[reason] += n
        return {
            "seen": self.total_seen,
            "dropped": self.total_dropped,
            "by_reason": dict(by_reason),
            "by_source": {f"{s}/{r}": n for (s, r), n in sorted(self.dropped.items())},
        }

    def check(self, max_drop_fraction: float):
        if self.total_seen and self.total_dropped / self.total_seen > max_drop_fraction:
            raise DataError(
                f"{self.total_dropped} of {self.total_seen} examples dropped "
                f"(more than {max_drop_fraction:.0%}): {self.summary()['by_source']}"
            )


# ---------------------------------------------------------------------------------------
# Decoding and validation


_AUDIO_REASONS = {
    "no such file": "unreadable",
    "unreadable audio": "unreadable",
    "empty audio": "empty",
    "non-finite samples": "non_finite",
}


@dataclasses.dataclass(frozen=True)
class ValidationConfig:
    """Limits of usable examples.

    Attributes:
      max_audio_s: longest clip kept (one 30 s window by default).
      silence_peak: a clip whose peak |sample| is below this is `silent`.
      max_label_tokens: longest transcript in tokens (text + end-of-text), from the decoder's
        448 positions minus the forced prefix.
      require_text: drop examples without a transcript (training on references).
    """

    max_audio_s: float = N_SAMPLES / SAMPLE_RATE
    silence_peak: float = 1e-4
    max_label_tokens: int = 444
    require_text: bool = True


def validate_example(
    raw: RawExample, cfg: ValidationConfig, encode=None
) -> tuple[Optional[np.ndarray], Optional[list[int]], Optional[str]]:
    """Decodes and checks one example.

    Returns:
      (audio, text token ids, None) when usable, else (None, None, reason).
    """
    if raw.error:
        log.warning("%s: %s", raw.origin, raw.error)
        return None, None, "bad_row"
    if raw.drop:
        return None, None, raw.drop
    tokens = None
    if cfg.require_text:
        text = (raw.text or "").strip()
        if not text:
            return None, None, "empty_text"
        if encode is not None:
            tokens = encode(" " + text)
            if len(tokens) + 1 > cfg.max_label_tokens:
                return None, None, "text_too_long"
    try:
        audio = decode_audio(raw.audio, raw.origin)
    except AudioError as e:
        log.warning("%s", e)
        return None, None, _AUDIO_REASONS.get(e.reason, "unreadable")
    if audio.shape[0] > cfg.max_audio_s * SAMPLE_RATE:
        return None, None, "too_long"
    if np.abs(audio).max() < cfg.silence_peak:
        return None, None, "silent"
    return audio, tokens, None


def validate_packed(
    packed: PackedExample, cfg: ValidationConfig, encode=None
) -> tuple[Optional[np.ndarray], Optional[list[int]], list[Optional[str]]]:
    """Decodes and checks each member of a packed window, then joins the usable ones.

    A member that fails validation is left out (its reason is returned); if the joined
    text is longer than `cfg.max_label_tokens`, members are left out from the end
    (`text_too_long`) until it fits. Audio is concatenated; texts are joined with a space.

    Returns:
      (audio, token ids, reasons) with one reason (None: used) per member; audio and ids
      are None when no member is usable.
    """
    reasons: list[Optional[str]] = []
    kept: list[tuple[int, np.ndarray, str]] = []
    for j, raw in enumerate(packed.members):
        audio, _, reason = validate_example(raw, cfg, encode)
        reasons.append(reason)
        if reason is None:
            kept.append((j, audio, (raw.text or "").strip()))
    tokens = None
    while kept:
        text = " ".join(t for _, _, t in kept)
        if not cfg.require_text or encode is None:
            break
        tokens = encode(" " + text)
        if len(tokens) + 1 <= cfg.max_label_tokens:
            break
        reasons[kept.pop()[0]] = "text_too_long"
        tokens = None
    # Durations from the rows may be wrong: the window itself must fit too.
    while kept and sum(a.shape[0] for _, a, _ in kept) > cfg.max_audio_s * SAMPLE_RATE:
        reasons[kept.pop()[0]] = "too_long"
        if cfg.require_text and encode is not None:
            tokens = encode(" " + " ".join(t for _, _, t in kept)) if kept else None
    if not kept:
        return None, None, reasons
    return np.concatenate([a for _, a, _ in kept]), tokens, reasons


# ---------------------------------------------------------------------------------------
# Order: a pure function of (seed, global draw index)


def _splitmix64(x: np.ndarray) -> np.ndarray:
    """Vectorised SplitMix64: a counter-based hash, uint64 -> uint64."""
    with np.errstate(over="ignore"):
        z = x + np.uint64(0x9E3779B97F4A7C15)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return z ^ (z >> np.uint64(31))


class MixtureOrder:
    """Which (source, item) is global draw g, for any g, without state.

    Args:
      sizes: items per source.
      weights: sampling weights (default: proportional to size).
      seed: the run's data seed.
    """

    BLOCK = 1 << 20

    def __init__(self, sizes: Sequence[int], weights: Optional[Sequence[float]] = None, seed: int = 0):
        if not sizes or min(sizes) <= 0:
            raise ValueError(f"every source needs at least one example, got sizes {list(sizes)}")
        w = np.asarray(weights if weights is not None else sizes, np.float64)
        if w.shape != (len(sizes),) or (w < 0).any() or w.sum() <= 0:
            raise ValueError(f"weights {weights} do not fit {len(sizes)} sources")
        self.sizes = [int(s) for s in sizes]
        self.cum = np.cumsum(w / w.sum())
        self.seed = int(seed)
        self._perms: dict[tuple[int, int], np.ndarray] = {}
        self._block_counts: dict[int, np.ndarray] = {}  # counts before block b

    def sources_of(self, g: np.ndarray) -> np.ndarray:
        """Source of each global draw index (vectorised)."""
        if len(self.sizes) == 1:
            return np.zeros(np.shape(g), np.int64)
        h = _splitmix64(np.asarray(g, np.uint64) ^ _splitmix64(np.uint64(self.seed) * np.ones(1, np.uint64)))
        u = (h >> np.uint64(11)).astype(np.float64) / float(1 << 53)
        return np.minimum(np.searchsorted(self.cum, u, side="right"), len(self.sizes) - 1)

    def _counts_before(self, g: int) -> np.ndarray:
        """Draws of each source among global indices [0, g)."""
        b = g // self.BLOCK
        if b not in self._block_counts:
            known = max((k for k in self._block_counts if k <= b), default=0)
            counts = self._block_counts.get(known, np.zeros(len(self.sizes), np.int64))
            for k in range(known, b):
                src = self.sources_of(np.arange(k * self.BLOCK, (k + 1) * self.BLOCK))
                counts = counts + np.bincount(src, minlength=len(self.sizes))
                self._block_counts[k + 1] = counts
            self._block_counts.setdefault(b, counts)
        counts = self._block_counts[b]
        start = b * self.BLOCK
        if g > start:
            counts = counts + np.bincount(self.sources_of(np.arange(start, g)), minlength=len(self.sizes))
        return counts

    def _perm(self, source: int, epoch: int) -> np.ndarray:
        key = (source, epoch)
        if key not in self._perms:
            if len(self._perms) > 64:
                self._perms.clear()
            rng = np.random.default_rng([self.seed, source, epoch])
            self._perms[key] = rng.permutation(self.sizes[source])
        return self._perms[key]

    def draws(self, start: int, count: int) -> list[tuple[int, int, int]]:
        """(source, item index, epoch) of global draws [start, start + count)."""
        g = np.arange(start, start + count)
        src = self.sources_of(g)
        counts = self._counts_before(start).copy()
        out = []
        for s in src:
            k = int(counts[s])
            counts[s] += 1
            epoch, r = divmod(k, self.sizes[s])
            out.append((int(s), int(self._perm(int(s), epoch)[r]), epoch))
        return out


# ---------------------------------------------------------------------------------------
# Batches


@dataclasses.dataclass(frozen=True)
class BatchConfig:
    """Shapes of one batch.

    Attributes:
      global_batch: rows per step over all processes.
      max_label_len: decoder positions per row (prefix + text + end-of-text, padded).
      seed: data seed; the order is a pure function of (seed, step).
    """

    global_batch: int = 16
    max_label_len: int = 128
    seed: int = 0


def make_labels(
    prefix: Sequence[int], text_tokens: Optional[Sequence[int]], eot: int, length: int
) -> tuple[np.ndarray, np.ndarray]:
    """Decoder inputs and labels for teacher forcing, padded to `length`.

    inputs = prefix + text (+ eot padding); labels[t] = inputs[t + 1] (the next token), with
    the forced prefix positions and padding set to -100 so they carry no loss; the last
    real label is end-of-text. `text_tokens` None gives an all-padding row.
    """
    inputs = np.full((length,), eot, np.int32)
    labels = np.full((length,), IGNORE, np.int32)
    if text_tokens is None:
        return inputs, labels
    seq = list(prefix) + list(text_tokens) + [eot]
    if len(seq) > length + 1:
        raise ValueError(f"label of {len(seq)} tokens does not fit max_label_len={length}")
    inputs[: len(seq) - 1] = seq[:-1]
    n_prefix = len(prefix)
    labels[n_prefix - 1 : len(seq) - 1] = seq[n_prefix:]
    return inputs, labels


class BatchLoader:
    """Batches of this process's rows, step by step, from any step.

    Args:
      sources: map-style sources (the mixture).
      weights: mixture weights (default: proportional to size).
      batch: shapes and seed.
      validation: limits of usable examples.
      prefix, eot, encode: the tokenizer's forced prefix, end-of-text id and text encoder.
      process_index, process_count: this process's slice of every global batch.
      decode_workers: threads that decode and validate a batch's rows in parallel.
    """

    def __init__(
        self,
        sources: Sequence[Source],
        batch: BatchConfig,
        prefix: Sequence[int],
        eot: int,
        encode,
        weights: Optional[Sequence[float]] = None,
        validation: ValidationConfig = ValidationConfig(),
        process_index: int = 0,
        process_count: int = 1,
        decode_workers: int = 1,
    ):
        if batch.global_batch % process_count:
            raise ValueError(
                f"global batch {batch.global_batch} is not divisible by {process_count} processes"
            )
        for s in sources:
            if s.streaming:
                raise ValueError(f"{s.name}: a streaming source; read it with streaming.StreamLoader")
        self.sources = list(sources)
        self.order = MixtureOrder([len(s) for s in sources], weights, batch.seed)
        self.batch = batch
        self.validation = dataclasses.replace(
            validation,
            max_label_tokens=min(validation.max_label_tokens, batch.max_label_len + 1 - len(prefix)),
        )
        self.prefix, self.eot, self.encode = tuple(prefix), eot, encode
        self.process_index, self.process_count = process_index, process_count
        self.local_batch = batch.global_batch // process_count
        self.drops = DropCounter()
        self.decode_workers = decode_workers

    def rows_of_step(self, step: int) -> list[tuple[int, int, int]]:
        """(source, item, epoch) of this process's rows at `step`."""
        start = step * self.batch.global_batch + self.process_index * self.local_batch
        return self.order.draws(start, self.local_batch)

    def load_step(self, step: int, pool=None) -> dict:
        """The batch of `step`: numpy arrays, this process's rows only (`assemble_batch`)."""
        rows = self.rows_of_step(step)
        items = [(self.sources[s].name, self.sources[s][i]) for s, i, _ in rows]
        out = assemble_batch(
            items,
            self.batch.max_label_len,
            self.validation,
            self.prefix,
            self.eot,
            self.encode,
            self.drops,
            pool,
        )
        out.update(step=step, epoch=rows[0][2] if rows else 0)
        return out

    def iter_from_step(self, step: int, prefetch: int = 2) -> Iterator[dict]:
        """Batches from `step` on, read `prefetch` steps ahead in a background thread."""
        pool = decode_pool(self.decode_workers)
        return prefetched(lambda s: self.load_step(s, pool), step, prefetch)


def decode_pool(workers: int):
    """Threads that decode a batch's rows in parallel (None for one: decoded in order)."""
    if workers <= 1:
        return None
    import concurrent.futures

    return concurrent.futures.ThreadPoolExecutor(workers, thread_name_prefix="decode")


def _validate(item, validation: ValidationConfig, encode):
    raw = item[1]
    if isinstance(raw, PackedExample):  # members are counted one by one
        return validate_packed(raw, validation, encode)
    audio, tokens, reason = validate_example(raw, validation, encode)
    return audio, tokens, [reason]


def assemble_batch(
    items: Sequence[tuple[str, "RawExample | PackedExample"]],
    max_label_len: int,
    validation: ValidationConfig,
    prefix: Sequence[int],
    eot: int,
    encode,
    drops: DropCounter,
    pool=None,
) -> dict:
    """Decodes, validates and labels one batch of rows, whatever source they came from.

    Args:
      items: (source name, RawExample or PackedExample) per row.
      pool: a `concurrent.futures` executor that decodes rows in parallel (None: in order
        here); drops are counted in row order either way.

    Returns:
      `audio` [rows, 480000] f32, `audio_len` [rows] int32, `decoder_input_ids` and `labels`
      [rows, max_label_len] int32, `valid` [rows] f32, `ids` list of str. A row that cannot
      be used keeps its place as padding (`valid` 0).
    """
    n, length = len(items), max_label_len
    out = {
        "audio": np.zeros((n, N_SAMPLES), np.float32),
        "audio_len": np.zeros((n,), np.int32),
        "decoder_input_ids": np.zeros((n, length), np.int32),
        "labels": np.zeros((n, length), np.int32),
        "valid": np.zeros((n,), np.float32),
        "ids": [],
    }

    def work(item):
        return _validate(item, validation, encode)

    results = pool.map(work, items) if pool is not None else map(work, items)
    for r, ((name, raw), (audio, tokens, reasons)) in enumerate(zip(items, results)):
        for reason in reasons:
            drops.add(name, reason)
        out["ids"].append(f"{name}/{raw.id}")
        out["decoder_input_ids"][r], out["labels"][r] = make_labels(prefix, tokens, eot, length)
        if audio is not None:
            out["audio"][r, : audio.shape[0]] = audio
            out["audio_len"][r] = audio.shape[0]
            out["valid"][r] = 1.0
    return out


def prefetched(load: Callable[[int], dict], step: int, prefetch: int = 2) -> Iterator[dict]:
    """`load(step), load(step + 1), ...`, computed `prefetch` steps ahead in a background
    thread; an exception in `load` is raised in the consumer, with its traceback."""
    q: queue.Queue = queue.Queue(maxsize=max(1, prefetch))
    stop = threading.Event()

    def work():
        s = step
        while not stop.is_set():
            try:
                item = load(s)
            except Exception as e:
                q.put(e)
                return
            while not stop.is_set():
                try:
                    q.put(item, timeout=0.1)
                    break
                except queue.Full:
                    continue
            s += 1

    def consume():
        thread = threading.Thread(target=work, daemon=True, name="batch-prefetch")
        thread.start()
        try:
            while True:
                item = q.get()
                if isinstance(item, Exception):
                    raise item
                yield item
        finally:
            stop.set()

    return consume()
