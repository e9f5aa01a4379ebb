"""One batch of training rows as arrays: decoded, validated, labelled for teacher forcing.

`Loader` is what both loaders (`pipeline.BatchLoader`, `streaming.StreamLoader`) share:
this process's slice of every global batch and the arrays of its rows; they differ only in
which rows a step reads.
"""

from __future__ import annotations

import dataclasses
from typing import Optional, Sequence

import numpy as np

from jaxwhisper.data.examples import PackedExample, RawExample, Source
from jaxwhisper.data.features import N_SAMPLES, SAMPLE_RATE
from jaxwhisper.data.validation import DropCounter, ValidationConfig, validate_item

IGNORE = -100


@dataclasses.dataclass(frozen=True)
class BatchConfig:
    """Shapes of one batch.

    Attributes:
      global_batch: rows per step over all processes.
      max_label_len: decoder positions per row (prefix + text + end-of-text, padded).
      seed: data seed; the order is a pure function of (seed, step).
      window: audio samples per row: the model's window (`WhisperConfig.n_frames` x 160),
        480000 (30 s) for every Whisper model. Longer clips are dropped as `too_long`.
    """

    global_batch: int = 16
    max_label_len: int = 128
    seed: int = 0
    window: int = N_SAMPLES


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


def assemble_batch(
    items: Sequence[tuple[str, RawExample | PackedExample]],
    max_label_len: int,
    validation: ValidationConfig,
    prefix: Sequence[int],
    eot: int,
    encode,
    drops: DropCounter,
    pool=None,
    window: int = N_SAMPLES,
) -> dict:
    """Decodes, validates and labels one batch of rows, whatever source they came from.

    Args:
      items: (source name, RawExample or PackedExample) per row.
      validation: its `max_audio_s` must fit `window`.
      pool: a `concurrent.futures` executor that decodes rows in parallel (None: in order
        here); drops are counted in row order either way.
      window: audio samples per row.

    Returns:
      `audio` [rows, window] f32, `audio_len` [rows] int32, `decoder_input_ids` and `labels`
      [rows, max_label_len] int32, `valid` [rows] f32, `ids` list of str. A row that cannot
      be used keeps its place as padding (`valid` 0).
    """
    if validation.max_audio_s * SAMPLE_RATE > window:
        raise ValueError(
            f"max_audio_s={validation.max_audio_s} does not fit a window of {window / SAMPLE_RATE:g} s"
        )
    n, length = len(items), max_label_len
    out = {
        "audio": np.zeros((n, window), np.float32),
        "audio_len": np.zeros((n,), np.int32),
        "decoder_input_ids": np.zeros((n, length), np.int32),
        "labels": np.zeros((n, length), np.int32),
        "valid": np.zeros((n,), np.float32),
        "ids": [],
    }

    def work(item):
        return validate_item(item[1], validation, encode)

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


class Loader:
    """What both loaders share: this process's slice of every global batch, and its rows as
    the arrays of one batch. A loader chooses which rows a step reads (`set_up_reading`).

    Args:
      sources: the mixture's sources.
      batch: shapes and seed.
      prefix, eot, encode: the tokenizer's forced prefix, end-of-text id and text encoder.
      validation: limits of usable examples; the label limit is tightened so that prefix,
        text and end-of-text fit `batch.max_label_len` + 1 positions, and the audio limit
        to `batch.window`.
      process_index, process_count: this process's slice of every global batch.
      weights: mixture weights (default: proportional to the sources' sizes).
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
        validation: Optional[ValidationConfig] = None,
        process_index: int = 0,
        process_count: int = 1,
        decode_workers: int = 1,
    ):
        if batch.global_batch % process_count:
            raise ValueError(
                f"global batch {batch.global_batch} is not divisible by {process_count} processes"
            )
        self.batch = batch
        validation = validation or ValidationConfig()
        self.validation = dataclasses.replace(
            validation,
            max_label_tokens=min(validation.max_label_tokens, batch.max_label_len + 1 - len(prefix)),
            max_audio_s=min(validation.max_audio_s, batch.window / SAMPLE_RATE),
        )
        self.prefix, self.eot, self.encode = tuple(prefix), eot, encode
        self.process_index, self.process_count = process_index, process_count
        self.local_batch = batch.global_batch // process_count
        self.drops = DropCounter()
        self.decode_workers = decode_workers
        self.sources = list(sources)
        self.set_up_reading(self.sources, weights)

    def set_up_reading(self, sources: list[Source], weights: Optional[Sequence[float]]) -> None:
        """Checks `sources` for this loader and sets up `self.order` (the mixture) and
        whatever else reading them needs."""
        raise NotImplementedError

    def first_draw(self, step: int) -> int:
        """Global draw index of this process's first row at `step`."""
        return step * self.batch.global_batch + self.process_index * self.local_batch

    def assemble(self, items: Sequence[tuple[str, RawExample | PackedExample]], pool=None) -> dict:
        """`assemble_batch` of `items` with this loader's shapes, tokenizer and drop counter."""
        return assemble_batch(
            items,
            self.batch.max_label_len,
            self.validation,
            self.prefix,
            self.eot,
            self.encode,
            self.drops,
            pool,
            self.batch.window,
        )


def used_label_positions(labels: np.ndarray) -> int:
    """Decoder positions up to the last label any row trains on (labels [rows, len])."""
    used = np.nonzero((np.asarray(labels) != IGNORE).any(axis=0))[0]
    return int(used[-1]) + 1 if used.size else 1


def trim_label_positions(batch: dict, positions: int, bucket: int) -> dict:
    """`batch` with `decoder_input_ids` and `labels` cut to `positions` rounded up to a
    multiple of `bucket` (at most their padded length).

    Exact for teacher forcing: a position attends only to earlier ones, and the cut positions
    carry no label, so every kept position's logits and the loss are unchanged; the step
    costs what the longest row needs instead of `max_label_len`. Bucketing bounds the number
    of shapes (compilations) to `max_label_len / bucket`.
    """
    length = batch["labels"].shape[1]
    keep = min(length, -(-positions // bucket) * bucket)
    if keep == length:
        return batch
    return {
        **batch,
        "decoder_input_ids": batch["decoder_input_ids"][:, :keep],
        "labels": batch["labels"][:, :keep],
    }
