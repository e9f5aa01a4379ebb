"""Streaming sources: each host its own shards, every row once per pass, exact resume
without a shuffle buffer and the documented loss bound with one (jaxwhisper/data/streaming.py)."""

import functools
import json

import pytest

from jaxwhisper.data.batches import BatchConfig
from jaxwhisper.data.packing import pack_groups, row_duration
from jaxwhisper.data.sources import parse_spec as _parse_spec
from jaxwhisper.data.streaming import StreamLoader
from jaxwhisper.data.streams import open_stream

N_ROWS = 59  # data/fixture clips, dealt over 4 shards


@functools.lru_cache(maxsize=None)
def parse_spec(spec):
    # Sources hold no read position (streams do), so one per spec serves every test.
    return _parse_spec(spec)


def _spec(root, extra=""):
    files = f"{root}/librispeech/train.clean.100/*.parquet"
    return f"librispeech@train.clean.100?data_files={files}&streaming=1{extra}"


def _tok():
    return (50257, 50362), 50256, lambda text: [ord(c) % 1000 for c in text]


def _pass_ids(stream, n):
    return [next(stream).id for _ in range(n)]


@pytest.mark.parametrize("buffer", [0, 8])
def test_hosts_read_disjoint_shards_and_every_row_once_per_pass(hub_standins, buffer):
    src = parse_spec(_spec(hub_standins, f"&shuffle_buffer={buffer}"))
    streams = [open_stream(src, p, 2, seed=1) for p in range(2)]
    shares = [30, 29]  # shards 0, 2 (15 + 15 rows) and 1, 3 (15 + 14)
    passes = [_pass_ids(s, n) for s, n in zip(streams, shares)]
    assert [s.state()["epoch"] for s in streams] == [0, 0]
    assert not set(passes[0]) & set(passes[1])
    assert sorted(passes[0] + passes[1]) == sorted(r.id for r in src)  # each row once
    # The next pass starts with the host's next row: again each of its rows once, reshuffled.
    second = _pass_ids(streams[0], 30)
    assert streams[0].state()["epoch"] == 1 and sorted(second) == sorted(passes[0])


def _loader(src, p=0, P=1, batch=4, max_label_len=256):
    prefix, eot, encode = _tok()
    return StreamLoader(
        [src],
        BatchConfig(global_batch=batch, max_label_len=max_label_len, seed=3),
        prefix,
        eot,
        encode,
        process_index=p,
        process_count=P,
    )


def test_resume_without_buffer_reads_the_same_batches(hub_standins):
    src = parse_spec(_spec(hub_standins))
    whole = [b["ids"] for b in _take(_loader(src).iter_from_step(0), 12)]
    first = _loader(src)
    cut = _take(first.iter_from_step(0), 5)
    state = json.loads(json.dumps(cut[-1]["data_state"]))  # as the checkpoint stores it
    resumed = _take(_loader(src).iter_from_step(5, state), 7)
    assert [b["ids"] for b in cut + resumed] == whole
    assert [b["step"] for b in resumed] == list(range(5, 12))
    with pytest.raises(ValueError, match="no saved data position"):
        _loader(src).iter_from_step(5)


def test_resume_with_buffer_loses_at_most_the_buffer_and_repeats_nothing(hub_standins):
    buffer = 6
    src = parse_spec(_spec(hub_standins, f"&shuffle_buffer={buffer}"))
    cut = _take(_loader(src).iter_from_step(0), 3)  # 12 rows
    state = json.loads(json.dumps(cut[-1]["data_state"]))
    before = [i for b in cut for i in b["ids"]]
    rest = []  # rows of the first pass read after the resume
    for b in _take(_loader(src).iter_from_step(3, state), 20):
        pos = b["data_state"]["streams"][0]  # where the stream is after this batch
        if pos["epoch"] > 0:
            rest += b["ids"][: len(b["ids"]) - pos["n"]]
            break
        rest += b["ids"]
    assert not set(before) & set(rest) and len(set(rest)) == len(rest)
    lost = N_ROWS - len(before) - len(rest)
    assert 0 <= lost <= buffer - 1


def _take(it, n):
    out = [next(it) for _ in range(n)]
    it.close()
    return out


def test_pseudo_labels_packing_and_drops_apply_to_streams(hub_standins, tmp_path):
    rows = list(parse_spec(_spec(hub_standins).replace("&streaming=1", "")))
    labels = tmp_path / "labels"
    labels.mkdir()
    with open(labels / "labels-00000-of-00001.jsonl", "w") as f:
        for k, r in enumerate(rows[:40]):  # 19 rows without a label; every 4th over max_wer
            f.write(
                json.dumps({"id": r.id, "pseudo_text": r.text.lower(), "wer": 50.0 if k % 4 == 0 else 1.0})
                + "\n"
            )
    spec = _spec(hub_standins, f"&pseudo_labels={labels}&max_wer=10")
    loader = _loader(parse_spec(spec), batch=N_ROWS, max_label_len=1024)  # no text too long
    batch = loader.next_batch()  # one pass, no read-ahead
    assert loader.drops.summary()["by_reason"] == {"no_pseudo_label": 19, "wer_filter": 10}
    assert int(batch["valid"].sum()) == 30
    # Packing: the same greedy rule over the stream's order as over a map-style source.
    packed = parse_spec(spec + "&pack=30")
    windows = open_stream(packed, 0, 1, seed=5)
    base = open_stream(packed.base, 0, 1, seed=5)
    order = [next(base) for _ in range(N_ROWS)]
    groups = pack_groups([row_duration(r) for r in order], 30.0)
    got = [next(windows) for _ in groups]
    assert [[m.id for m in w.members] for w in got] == [[order[i].id for i in g] for g in groups]
    assert any(len(w.members) > 1 for w in got)
    assert all(m.text == m.text.lower() for w in got for m in w.members if not m.drop)


def test_a_spec_with_fewer_shards_than_hosts_is_an_error(hub_standins):
    src = parse_spec(_spec(hub_standins).replace("*.parquet", "train-00000-of-00004.parquet"))
    with pytest.raises(ValueError, match="1 shard"):
        open_stream(src, 1, 2, seed=0)


class _EchoTranscriber:
    """Stands in for the model (decoding is tested elsewhere): each clip's "tokens" are its
    sample count, decoded as that number."""

    class tokenizer:
        @staticmethod
        def decode(tokens):
            return str(tokens[0])

    def decode_stream(self, items):
        for key, audio in items:
            yield key, audio if isinstance(audio, Exception) else [int(audio.shape[0])]


def test_evaluation_and_pseudo_labels_read_each_hosts_shards_once_and_resume(hub_standins, tmp_path):
    from jaxwhisper.data.eval_sets import load_eval_set
    from jaxwhisper.data.labels import read_labels
    from jaxwhisper.inference.pseudo_label import pseudo_label

    spec = _spec(hub_standins)
    sets = [load_eval_set(spec, 0, p, 2) for p in range(2)]
    assert [len(s.ids) for s in sets] == [30, 29] and not set(sets[0].ids) & set(sets[1].ids)
    assert sorted(sets[0].ids + sets[1].ids) == sorted(r.id for r in parse_spec(spec))
    assert [len(load_eval_set(spec, 10, p, 2).ids) for p in range(2)] == [5, 5]

    out = tmp_path / "labels"
    src = parse_spec(spec)
    first = pseudo_label(_EchoTranscriber(), src, out, 0, 2)
    # Host 1 is killed after 7 rows (the last line cut short), then resumed.
    pseudo_label(_EchoTranscriber(), src, out, 1, 2)
    path = out / "labels-00001-of-00002.jsonl"
    lines = path.read_text().splitlines()
    path.write_text("\n".join(lines[:7]) + "\n" + lines[7][:10])
    again = pseudo_label(_EchoTranscriber(), src, out, 1, 2)
    assert (first["labelled"], again["skipped_existing"], again["labelled"]) == (30, 7, 22)
    labels = read_labels(out)
    assert sorted(labels) == sorted(r.id for r in src)
    assert all(int(labels[i]["pseudo_text"]) > 0 for i in labels)


def test_decode_workers_give_the_same_batches(hub_standins):
    import numpy as np

    src = parse_spec(_spec(hub_standins))
    batches = []
    for workers in (1, 3):
        prefix, eot, encode = _tok()
        loader = StreamLoader(
            [src],
            BatchConfig(global_batch=8, max_label_len=64, seed=3),
            prefix,
            eot,
            encode,
            decode_workers=workers,
        )
        batches.append(_take(loader.iter_from_step(0, prefetch=1), 2))
    for a, b in zip(*batches):
        assert a["ids"] == b["ids"]
        np.testing.assert_array_equal(a["audio"], b["audio"])
        np.testing.assert_array_equal(a["labels"], b["labels"])
