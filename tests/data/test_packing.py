"""Packing short utterances into 30 s windows (distil-whisper's `concatenate_dataset`)."""

import json

import numpy as np
import soundfile as sf

from jaxwhisper.data.batches import BatchConfig
from jaxwhisper.data.demo_corpus import SENTENCES
from jaxwhisper.data.examples import PackedExample, RawExample
from jaxwhisper.data.packing import TextBudget, pack_groups
from jaxwhisper.data.pipeline import BatchLoader
from jaxwhisper.data.sources import parse_spec
from jaxwhisper.data.validation import ValidationConfig, validate_packed
from jaxwhisper.inference.tokenizer import WhisperTokenizer
from jaxwhisper.models.weights.resolve import bundled_model_files


def concatenate_reference(durations, max_s):
    """distil-whisper's loop (run_pseudo_labelling.py, `concatenate_dataset`, speakers
    ignored): append while the running total stays <= max; otherwise emit and start anew."""
    out, cur, total = [], [], 0.0
    for i, d in enumerate(durations):
        if cur and total + d > max_s:
            out.append(cur)
            cur, total = [], 0.0
        cur.append(i)
        total += d
    if cur:
        out.append(cur)
    return out


def test_groups_match_distil_whispers_concatenation():
    rng = np.random.default_rng(0)
    durations = list(rng.uniform(0.5, 12.0, size=200))
    assert [list(g) for g in pack_groups(durations, 30.0)] == concatenate_reference(durations, 30.0)
    # An unknown or over-long duration stands alone; order and coverage are kept.
    groups = pack_groups([10, 10, None, 10, 31, 5, 5], 30.0)
    assert [list(g) for g in groups] == [[0, 1], [2], [3], [4], [5, 6]]


def _manifest(tmp_path, durations, texts):
    rows = []
    for i, (d, t) in enumerate(zip(durations, texts)):
        tone = (0.1 * np.sin(np.arange(int(d * 16000)) / 7)).astype(np.float32)
        sf.write(tmp_path / f"{i}.wav", tone, 16000)
        rows.append({"id": f"u{i}", "audio": f"{i}.wav", "text": t})  # no duration: headers are read
    (tmp_path / "m.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return tmp_path / "m.jsonl"


def test_packed_spec_joins_audio_and_text(tmp_path):
    path = _manifest(tmp_path, [12.0, 12.0, 12.0, 4.0], ["one", "two", "three", "four"])
    src = parse_spec(f"{path}?pack=30")
    assert len(src) == 2 and src.name.endswith("+pack30s")
    first = src[0]
    assert isinstance(first, PackedExample) and first.id == "u0+1"
    audio, tokens, reasons = validate_packed(first, ValidationConfig(), encode=lambda s: [ord(c) for c in s])
    assert audio.shape[0] == 24 * 16000 and reasons == [None, None]
    assert tokens == [ord(c) for c in " one two"]
    loader = BatchLoader([src], BatchConfig(2, 24, 0), [1], 0, lambda s: [ord(c) for c in s])
    batch = loader.load_step(0)
    assert sorted(batch["ids"]) == ["m+pack30s/u0+1", "m+pack30s/u2+1"]
    assert loader.drops.total_seen == 4 and loader.drops.total_dropped == 0


def test_a_bad_member_is_left_out_and_counted(tmp_path):
    sf.write(tmp_path / "a.wav", np.full(16000, 0.1, np.float32), 16000)
    good = RawExample("a", str(tmp_path / "a.wav"), "alpha", "m:1")
    bad = RawExample("b", None, None, "m:2", error="bad row")
    packed = PackedExample("a+2", "m:1", (good, bad, good))
    encode = lambda s: list(s.encode())  # noqa: E731
    audio, tokens, reasons = validate_packed(packed, ValidationConfig(), encode)
    assert reasons == [None, "bad_row", None]
    assert audio.shape[0] == 32000 and bytes(tokens).decode() == " alpha alpha"
    # A joined text over the token limit loses members from the end, counted.
    audio, tokens, reasons = validate_packed(packed, ValidationConfig(max_label_tokens=8), encode)
    assert reasons == [None, "bad_row", "text_too_long"] and bytes(tokens).decode() == " alpha"
    assert audio.shape[0] == 16000


def concatenate_with_budget_reference(durations, costs, max_s, max_text):
    """The loop above with a second limit: append while both totals stay within theirs; an
    item over either limit on its own is a window of its own."""
    out, cur, total, text = [], [], 0.0, 0
    for i, (d, c) in enumerate(zip(durations, costs)):
        alone = d > max_s or c > max_text
        if cur and (alone or total + d > max_s or text + c > max_text):
            out.append(cur)
            cur, total, text = [], 0.0, 0
        if alone:
            out.append([i])
            continue
        cur.append(i)
        total, text = total + d, text + c
    if cur:
        out.append(cur)
    return out


def test_a_text_budget_closes_windows_before_their_labels_overflow():
    rng = np.random.default_rng(1)
    durations = list(rng.uniform(0.5, 9.0, size=300))
    costs = [int(c) for c in rng.integers(1, 40, size=300)]
    costs[17] = 120  # over the budget alone: a window of its own
    groups = [list(g) for g in pack_groups(durations, 30.0, costs, 96)]
    assert groups == concatenate_with_budget_reference(durations, costs, 30.0, 96)
    assert [i for g in groups for i in g] == list(range(300))  # each once, in order
    assert [17] in groups
    for g in groups:
        if len(g) > 1:
            assert sum(durations[i] for i in g) <= 30.0 and sum(costs[i] for i in g) <= 96
    # the budget binds: without it, windows hold more text
    assert len(pack_groups(durations, 30.0)) < len(groups)


def test_joined_texts_cost_the_sum_of_their_members_tokens():
    """`TextBudget`'s premise, on Whisper's tokenizer and the demo's prose: the label of a
    packed window is exactly as long as the budget counted."""
    tok = WhisperTokenizer(bundled_model_files("tiny.en")[1], multilingual=False)
    budget = TextBudget.of(tok.encode, 93)
    lines = [s for s in SENTENCES.read_text().splitlines() if s.strip() and not s.startswith("#")]
    for k in range(0, 600, 3):
        texts = lines[k : k + 3] + ["  2,000 pounds, 10:30 -- Mr. O'Brien's \u00e9clair?! "]
        assert len(tok.encode(" " + " ".join(t.strip() for t in texts))) == sum(map(budget.count, texts))


def test_packed_windows_within_the_label_budget_lose_no_member(tmp_path):
    texts = ["one two three four five six"] * 6  # 24 ord-tokens each with its space
    path = _manifest(tmp_path, [3.0] * 6, texts)
    encode = lambda s: [ord(c) for c in s]  # noqa: E731
    budget = TextBudget.of(encode, 60)
    unbudgeted = BatchLoader([parse_spec(f"{path}?pack=30")], BatchConfig(1, 61, 0), [1], 0, encode)
    unbudgeted.load_step(0)
    assert unbudgeted.drops.total_dropped == 4  # one window of six, four cut off for their text
    src = parse_spec(f"{path}?pack=30", budget)
    assert [list(g) for g in src.groups] == [[0, 1], [2, 3], [4, 5]]
    loader = BatchLoader([src], BatchConfig(3, 61, 0), [1], 0, encode)
    loader.load_step(0)
    assert loader.drops.total_seen == 6 and loader.drops.total_dropped == 0
