"""Hugging Face datasets (hub or local parquet/arrow files) as sources, audio undecoded."""

from __future__ import annotations

import glob
from typing import Any, Iterator, Optional

from jaxwhisper.data.corpora import Cleaner
from jaxwhisper.data.examples import DataSpecError, RawExample, Source


class HFSource(Source):
    """A Hugging Face dataset (hub or local data files), audio left undecoded."""

    def __init__(
        self,
        name: str,
        ds: Any,
        text: str,
        id_col: Optional[str],
        audio: str,
        clean: Cleaner,
        streaming: bool,
        num_rows: Optional[int] = None,
        shuffle_buffer: int = 0,
    ):
        self.name, self.ds, self.text, self.id_col = name, ds, text, id_col
        self.audio, self.clean, self.streaming = audio, clean, streaming
        # Rows of a streaming split when the files or the hub's metadata say (mixture weights).
        self.num_rows = num_rows if streaming else len(ds)
        self.shuffle_buffer = shuffle_buffer

    def convert(self, i, row: dict) -> RawExample:
        """Row `i` of the dataset (a dict of its columns) as a RawExample."""
        rid = str(row[self.id_col]) if self.id_col and self.id_col in row else f"{self.name}[{i}]"
        text = self.clean(row)
        return RawExample(
            rid, row.get(self.audio), text, f"{self.name}[{i}]", drop="text_rule" if text is None else None
        )

    def __len__(self) -> int:
        if self.streaming:
            return super().__len__()
        return len(self.ds)

    def __getitem__(self, i: int) -> RawExample:
        if self.streaming:
            return super().__getitem__(i)
        return self.convert(i, self.ds[int(i)])

    def __iter__(self) -> Iterator[RawExample]:
        for i, row in enumerate(self.ds):
            yield self.convert(i, row)


def load_hf(name, repo, config, split, data_files, streaming, audio_col):
    """The dataset (audio undecoded) and, when known without reading it, its row count."""
    try:
        import datasets
    except ImportError:
        raise DataSpecError(f"{name}: Hugging Face datasets need `pip install datasets`") from None
    num_rows = None
    try:
        if data_files:
            files = sorted(glob.glob(data_files, recursive=True))
            if not files:
                raise DataSpecError(f"{name}: data_files {data_files!r} matches no file")
            builder = "arrow" if files[0].endswith(".arrow") else "parquet"
            ds = datasets.load_dataset(builder, data_files={split: files}, split=split, streaming=streaming)
            if builder == "parquet":
                import pyarrow.parquet as pq

                num_rows = sum(pq.read_metadata(f).num_rows for f in files)
        else:
            ds = datasets.load_dataset(repo, config, split=split, streaming=streaming)
            splits = getattr(ds, "info", None) and ds.info.splits
            if splits and split in splits and splits[split].num_examples:
                num_rows = int(splits[split].num_examples)
    except DataSpecError:
        raise
    except Exception as e:  # offline, unknown repo or split: one clear line for the user
        raise DataSpecError(
            f"{name}: could not load ({type(e).__name__}: {str(e).splitlines()[0][:300]})"
        ) from None
    if audio_col in (ds.features or {}):
        ds = ds.cast_column(audio_col, datasets.Audio(decode=False))
    return ds, num_rows
