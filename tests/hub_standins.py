"""Local parquet stand-ins for the paper's hub corpora, in their hub schemas, and a
redirect of `datasets.load_dataset` to them (no network).

    python tests/hub_standins.py OUT_DIR [--shards 4]

writes `OUT_DIR/CORPUS/SPLIT/train-0000K-of-0000N.parquet` for every corpus of
`jaxwhisper.data.corpora` and the splits the configs name: the real speech of
data/fixture/audio (16 kHz FLAC bytes in the `audio` struct, as the hub's parquet holds it),
its transcripts written in the corpus's text columns and style (upper case for LibriSpeech,
quotes for Common Voice, `<COMMA>` tags for GigaSpeech, ...).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
FIXTURE = REPO / "data" / "fixture"


def _rows(corpus: str, clips: list[dict]) -> dict:
    """Columns of `corpus` as the hub has them, for the fixture clips."""
    audio = [{"bytes": (FIXTURE / c["audio"]).read_bytes(), "path": Path(c["audio"]).name} for c in clips]
    ids = [c["id"] for c in clips]
    text = [c["text"] for c in clips]
    dur = [c.get("duration") or 0.0 for c in clips]
    spk = [c.get("speaker", "s") for c in clips]
    if corpus == "librispeech":
        return {
            "file": [a["path"] for a in audio],
            "audio": audio,
            "text": [t.upper() for t in text],
            "speaker_id": [i for i, _ in enumerate(spk)],
            "chapter_id": [0] * len(ids),
            "id": ids,
        }
    if corpus == "common_voice":
        return {
            "client_id": spk,
            "path": ids,
            "audio": audio,
            "sentence": [f'"{t}"' for t in text],
            "up_votes": [2] * len(ids),
            "down_votes": [0] * len(ids),
            "age": [""] * len(ids),
            "gender": [""] * len(ids),
            "accent": [""] * len(ids),
            "locale": ["en"] * len(ids),
            "segment": [""] * len(ids),
            "variant": [""] * len(ids),
        }
    if corpus == "peoples_speech":
        return {"id": ids, "audio": audio, "duration_ms": [int(d * 1000) for d in dur], "text": text}
    if corpus == "voxpopuli":
        return {
            "audio_id": ids,
            "language": [0] * len(ids),
            "audio": audio,
            "raw_text": text,
            "normalized_text": text,
            "gender": [""] * len(ids),
            "speaker_id": spk,
            "is_gold_transcript": [True] * len(ids),
            "accent": ["None"] * len(ids),
        }
    if corpus == "tedlium":
        return {
            "audio": audio,
            "text": text,
            "speaker_id": spk,
            "gender": [0] * len(ids),
            "file": [a["path"] for a in audio],
            "id": ids,
        }
    if corpus == "fleurs":
        return {
            "id": list(range(len(ids))),
            "num_samples": [int(d * 16000) for d in dur],
            "path": [a["path"] for a in audio],
            "audio": audio,
            "transcription": text,
            "raw_transcription": text,
            "gender": [0] * len(ids),
            "lang_id": [19] * len(ids),
            "language": ["English"] * len(ids),
            "lang_group_id": [0] * len(ids),
        }
    if corpus == "gigaspeech":
        return {
            "segment_id": ids,
            "speaker": spk,
            "text": [t.upper().replace(" ", " <COMMA> ", 1) for t in text],
            "audio": audio,
            "begin_time": [0.0] * len(ids),
            "end_time": dur,
            "audio_id": ids,
            "title": [""] * len(ids),
            "url": [""] * len(ids),
            "source": [0] * len(ids),
            "category": [0] * len(ids),
            "original_full_path": [""] * len(ids),
        }
    raise KeyError(corpus)


SPLITS = {
    "librispeech": (
        "train.clean.100",
        "train.clean.360",
        "train.other.500",
        "validation.clean",
        "test.clean",
    ),
    "common_voice": ("train", "validation", "test"),
    "peoples_speech": ("train", "validation", "test"),
    "voxpopuli": ("train", "validation", "test"),
    "tedlium": ("train", "validation", "test"),
    "fleurs": ("train", "validation", "test"),
    "gigaspeech": ("train", "validation", "test"),
}


def write_corpus(out: Path, corpus: str, split: str, n_shards: int = 4, clips=None) -> list[Path]:
    """Parquet shards of `corpus`/`split` (every fixture clip, dealt round-robin)."""
    import datasets
    import pyarrow as pa
    import pyarrow.parquet as pq

    clips = clips or [
        json.loads(x) for x in (FIXTURE / "manifest.jsonl").read_text().splitlines() if x.strip()
    ]
    cols = _rows(corpus, clips)
    table = pa.table(cols)
    # The hub's parquet carries the datasets features, `audio` as Audio (16 kHz).
    features = datasets.Features.from_arrow_schema(table.schema)
    features["audio"] = datasets.Audio(sampling_rate=16000)
    table = table.cast(features.arrow_schema)
    d = out / corpus / split
    d.mkdir(parents=True, exist_ok=True)
    paths = []
    for k in range(n_shards):
        path = d / f"train-{k:05d}-of-{n_shards:05d}.parquet"
        pq.write_table(table.take(list(range(k, table.num_rows, n_shards))), path)
        paths.append(path)
    return paths


def write_all(out: Path, n_shards: int = 4) -> Path:
    for corpus, splits in SPLITS.items():
        for split in splits:
            write_corpus(out, corpus, split, n_shards)
    return out


def redirect_hub(monkeypatch, root: Path):
    """`datasets.load_dataset(REPO, CONFIG, split=SPLIT, streaming=...)` of a corpus repo
    reads `root/CORPUS/SPLIT/*.parquet` instead; any other repo fails as offline would."""
    import datasets
    import pyarrow.parquet as pq

    from jaxwhisper.data.corpora import CORPORA

    original = datasets.load_dataset
    by_repo = {c.repo: name for name, c in CORPORA.items()}

    def load_dataset(path, name=None, *args, split=None, streaming=False, **kwargs):
        if path in ("parquet", "arrow", "json", "csv"):
            return original(path, name, *args, split=split, streaming=streaming, **kwargs)
        if path not in by_repo:
            raise ConnectionError(f"offline test: {path} is not a stand-in corpus")
        files = sorted(str(p) for p in (root / by_repo[path] / split).glob("*.parquet"))
        if not files:
            raise ValueError(f'Unknown split "{split}"')
        ds = original("parquet", data_files={split: files}, split=split, streaming=streaming)
        # The hub's dataset card gives the split sizes; the parquet builder does not.
        n = sum(pq.read_metadata(f).num_rows for f in files)
        ds.info.splits = datasets.SplitDict({split: datasets.SplitInfo(name=split, num_examples=n)})
        return ds

    monkeypatch.setattr(datasets, "load_dataset", load_dataset)


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("out", type=Path)
    p.add_argument("--shards", type=int, default=4)
    args = p.parse_args()
    print(write_all(args.out, args.shards))
