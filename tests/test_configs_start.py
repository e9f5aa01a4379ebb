"""Every shipped config starts: its data sources are built against local stand-ins of the
hub corpora (tests/hub_standins.py; `datasets.load_dataset` redirected) and of the demo
corpus, and each training config assembles its first batch with the loader the trainer
builds (fast) and runs its first steps, saves and resumes (marked slow: minutes of XLA
compilation on CPU).

For speed every teacher is a small random model with tiny.en's tokenizer (4+4 layers,
width 64: large-v2 is not available offline, and what is checked here is that the configs'
data, mixture, mesh, student options and loss run, not what the teacher knows), with a 5 s
window for the configs that train on single clips and 30 s for those that pack; students
get 2 encoder layers unless they keep the teacher's frozen encoder and compute in float32
without remat, batches are 8 rows and runs are 2 steps; data specs, mixture, mesh and loss
are the configs' own.
"""

import importlib.util
import json
import math
from pathlib import Path

import pytest
from hub_standins import redirect_hub
from random_teachers import save_random_teacher

from jaxwhisper.config import PipelineConfig, QuantRunConfig, TrainConfig, load
from jaxwhisper.data.sources import parse_spec
from jaxwhisper.data.validation import ValidationConfig, validate_example
from jaxwhisper.models.config import WhisperConfig
from jaxwhisper.models.weights.resolve import bundled_model_files

REPO = Path(__file__).resolve().parents[1]
CONFIGS = sorted(p.stem for p in (REPO / "configs").glob("*.py"))
PIPELINES = ("paper_cpu", "reproduce_cpu")


def _raw(name: str, arg: str = "") -> dict:
    spec = importlib.util.spec_from_file_location(name, REPO / "configs" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config(arg).to_dict()


@pytest.fixture
def offline(tmp_path, monkeypatch, hub_standins, fixture_manifest):
    """Runs in tmp_path, where the configs' relative paths resolve: `data/` is the
    repository's, `runs/demo/corpus` holds the fixture clips in the manifests `jaxwhisper
    demo-corpus` writes."""
    redirect_hub(monkeypatch, hub_standins)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "data").symlink_to(REPO / "data")
    corpus = tmp_path / "runs" / "demo" / "corpus"
    corpus.mkdir(parents=True)
    rows = [json.loads(x) for x in fixture_manifest.read_text().splitlines() if x.strip()]
    lines = [json.dumps({**r, "audio": str(fixture_manifest.parent / r["audio"])}) + "\n" for r in rows]
    # The corpus's parts: half the clips stand in for the real prompts, half for the TTS.
    half = len(lines) // 2
    parts = {"train": lines, "prompts": lines[:half], "tts": lines[half:], "eval": lines}
    for name, part in parts.items():
        (corpus / f"{name}.jsonl").write_text("".join(part))
    return tmp_path


SMALL_TEACHER = WhisperConfig(
    n_vocab=51864, n_text_ctx=448, d_model=64, n_heads=4, encoder_layers=4, decoder_layers=4, ffn_dim=128
)


@pytest.fixture(scope="session")
def small_teacher(tmp_path_factory) -> Path:
    return save_random_teacher(tmp_path_factory.mktemp("small-teacher"), SMALL_TEACHER)


@pytest.fixture(scope="session")
def short_window_teacher(tmp_path_factory) -> Path:
    """The same teacher with a 5 s window (n_audio_ctx 250), for the configs that train on
    single clips: the longer clips are dropped and counted (within max_drop_fraction), and each
    step costs a fraction of a 30 s one. Configs that pack windows keep the 30 s teacher."""
    return save_random_teacher(
        tmp_path_factory.mktemp("short-teacher"), SMALL_TEACHER.replace(n_audio_ctx=250)
    )


def _small(raw: dict, teacher: Path) -> dict:
    raw["teacher"] = str(teacher)
    if not raw["student"].get("freeze_encoder"):
        raw["student"]["encoder_layers"] = 2
    # float32 without remat: XLA on CPU compiles bfloat16 and remat many times slower.
    raw["student"].update(dtype="float32", remat=False)
    raw["teacher_dtype"] = "float32"
    raw.update(global_batch=8, total_steps=2, eval_every_steps=0, checkpoint_every_steps=2, log_every_steps=1)
    # The stand-ins are uncleaned fixture clips (one longer than 30 s, long texts).
    raw["data"]["max_drop_fraction"] = 0.5
    raw["optimizer"]["warmup_steps"] = 1
    # One step program per run: every bucketed label length is one more XLA compile (10-40 s
    # here); that the cut changes nothing is tests/train/test_step.py's.
    raw["data"]["label_bucket"] = 0
    raw["data"]["max_eval_examples"] = 4
    return raw


def _check_sources(specs):
    for spec in specs:
        raw = next(iter(parse_spec(spec)))
        audio, _, reason = validate_example(raw, ValidationConfig())
        assert reason is None and audio.size > 0, (spec, reason)


def _first_batch(cfg: TrainConfig) -> dict:
    """The training loader `train_and_evaluate` builds for `cfg`, and its first batch."""
    from jaxwhisper.data.batches import BatchConfig
    from jaxwhisper.data.streaming import make_loader
    from jaxwhisper.inference.tokenizer import WhisperTokenizer

    _, tok_dir = bundled_model_files("tiny.en")
    tok = WhisperTokenizer(tok_dir, multilingual=False)
    loader = make_loader(
        [parse_spec(s) for s in cfg.data.train],
        BatchConfig(cfg.global_batch, cfg.data.max_label_len, cfg.data.seed),
        tok.prefix,
        tok.eot,
        tok.encode,
        weights=cfg.data.weights or None,
        validation=ValidationConfig(max_audio_s=cfg.data.max_audio_s),
        decode_workers=cfg.data.decode_workers,
    )
    batches = loader.iter_from_step(0)
    batch = next(batches)
    batches.close()
    return batch


def _train_configs(name: str, teacher: Path) -> list:
    raw = _raw(name)
    if name == "quant_int8":
        cfg = load(QuantRunConfig, raw)
        _check_sources(cfg.test + (cfg.calibration,))
        return []
    if name in PIPELINES:
        cfg = load(PipelineConfig, raw)
        _check_sources(cfg.quant.test + (cfg.quant.calibration, cfg.outliers.data))
        return [_small(raw["train"], teacher)]
    return [_small(raw, teacher)]


@pytest.mark.parametrize("name", CONFIGS)
def test_every_config_builds_its_sources_and_first_batch(name, offline, small_teacher):
    for raw in _train_configs(name, small_teacher):
        cfg = load(TrainConfig, raw)
        _check_sources(cfg.data.eval)
        batch = _first_batch(cfg)
        assert batch["valid"].sum() >= 4 and batch["audio"].shape == (8, 480000)


@pytest.mark.slow
# reproduce_cpu trains paper_cpu's students (tests/test_configs.py checks that they are equal).
@pytest.mark.parametrize("name", [n for n in CONFIGS if n not in ("quant_int8", "reproduce_cpu")])
def test_every_training_config_runs_its_first_steps_and_resumes(
    name, offline, small_teacher, short_window_teacher
):
    """Two steps, saved at step 1, then the same call resumes and runs step 2 (from the
    saved stream position for the streaming configs)."""
    from jaxwhisper.train.loop import train_and_evaluate

    packs = "pack=" in json.dumps(_raw(name))
    for raw in _train_configs(name, small_teacher if packs else short_window_teacher):
        raw["checkpoint_every_steps"] = 1
        cfg = load(TrainConfig, raw)
        workdir = offline / "run"
        train_and_evaluate(cfg, workdir, stop_after=1)
        last = train_and_evaluate(cfg, workdir)
        assert math.isfinite(last["train/loss"])
        steps = [json.loads(x)["step"] for x in (workdir / "metrics.jsonl").read_text().splitlines()]
        assert steps == [1, 2] and (workdir / "export").is_dir()
