"""Every experiment config loads, validates into a TrainConfig and builds its student.

Students are built abstractly (shapes only) from the teacher's preset, so the paper's
large-v2 configs are checked without downloading large-v2.
"""

import dataclasses
import importlib.util
from pathlib import Path

import jax
import numpy as np
import pytest

from jaxwhisper.config import train_config_from_dict
from jaxwhisper.models.config import preset
from jaxwhisper.models.whisper import param_shapes
from jaxwhisper.train.student import student_config

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def _raw(name: str, arg: str = "") -> dict:
    spec = importlib.util.spec_from_file_location(name, CONFIGS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config(arg).to_dict()


def _load(name: str, arg: str = ""):
    return train_config_from_dict(_raw(name, arg))


def _student_millions(cfg) -> float:
    s = student_config(
        preset(cfg.teacher), cfg.student.encoder_layers, cfg.student.decoder_layers, gate=cfg.student.gate
    )
    return sum(int(np.prod(x.shape)) for x in jax.tree.leaves(param_shapes(s))) / 1e6


@pytest.mark.parametrize("enc, millions", [(8, 283), (16, 440), (24, 598)])
@pytest.mark.parametrize("gate", ["shared", "none"])
def test_paper_configs_build_the_papers_students(enc, millions, gate):
    cfg = _load("distill_large_v2", f"encoder_layers={enc},gate={gate}")
    assert (cfg.teacher, cfg.student.decoder_layers, cfg.student.gate) == ("large-v2", 2, gate)
    assert (cfg.global_batch * cfg.optimizer.accumulation_steps, cfg.optimizer.warmup_steps) == (64, 1000)
    assert abs(_student_millions(cfg) - millions) / millions < 0.005


@pytest.mark.parametrize(
    "name, arg, teacher, layers",
    [
        ("distill_tiny_en_2x2", "", "tiny.en", (2, 2)),
        ("distill_tiny_en_2x2", "gate=none", "tiny.en", (2, 2)),
        ("distill_base_3x2", "", "base", (3, 2)),
    ],
)
def test_cpu_configs(name, arg, teacher, layers):
    cfg = _load(name, arg)
    assert cfg.teacher == teacher and (cfg.student.encoder_layers, cfg.student.decoder_layers) == layers
    assert cfg.student.gate == ("none" if arg == "gate=none" else "shared")
    teacher_millions = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(param_shapes(preset(teacher))))
    assert _student_millions(cfg) < 0.9 * teacher_millions / 1e6


@pytest.mark.parametrize("name", ["distill_tiny_en_2x2", "distill_base_3x2", "distill_large_v2"])
def test_unknown_config_argument_is_an_error(name):
    with pytest.raises(ValueError, match="unknown config argument"):
        _load(name, "gates=none")


def test_pipeline_and_quantization_configs_validate():
    from jaxwhisper.config import PipelineConfig, QuantRunConfig, load

    cfg = load(PipelineConfig, _raw("paper_cpu", "steps=7"))
    assert cfg.gates == ("none", "shared") and cfg.train.total_steps == cfg.train.optimizer_steps == 7
    prompts, tts = f"{cfg.corpus}/prompts.jsonl", f"{cfg.corpus}/tts.jsonl"
    # Real clips one per window and packed, and the synthesized prose the corpus builds, packed.
    assert cfg.train.data.train == (prompts, f"{prompts}?pack=30", f"{tts}?pack=30")
    assert cfg.tts_sentences > 0
    assert cfg.train.student.freeze_encoder and cfg.train.encoder_cache_mb > 0
    assert cfg.quant.calibration not in cfg.quant.test
    assert cfg.quant.quantizations == ("w8a8",) and cfg.outliers.data == cfg.quant.test[0]
    assert "w8a8-smoothquant" in load(QuantRunConfig, _raw("quant_int8")).quantizations
    incomplete = _raw("paper_cpu")
    del incomplete["quant"]
    with pytest.raises(ValueError, match="quant.test is not set"):
        load(PipelineConfig, incomplete)
    bad = _raw("paper_cpu")
    bad["train"]["student"]["gates"] = "none"
    with pytest.raises(ValueError, match="unknown config key"):
        load(PipelineConfig, bad)


def test_student_model_overrides_are_validated_against_whisper_config():
    from jaxwhisper.config import ConfigError, train_config_from_dict

    raw = _raw("distill_tiny_en_2x2")
    raw["student"]["model"] = {"gate_pi_init": 0.5, "softmax_clip_gamma": -0.03}
    s = train_config_from_dict(raw).student
    assert s.model_overrides() == {
        **{"gate": "shared", "dtype": "float32", "remat": False},
        **{"gate_pi_init": 0.5, "softmax_clip_gamma": -0.03},
    }
    for bad, match in [
        ({"gate_pi": 0.5}, r"unknown config key student\.model\.gate_pi; known: \[.*'gate_pi_init'"),
        ({"d_model": 64}, r"unknown config key student\.model\.d_model"),
        ({"gate": "none"}, r"set it as student\.gate"),
        ({"gate_pi_init": 1.5}, "gate_pi_init must be in"),
    ]:
        raw["student"]["model"] = bad
        with pytest.raises(ConfigError, match=match):
            train_config_from_dict(raw)


def test_one_total_steps_and_the_batch_plan():
    from jaxwhisper.config import ConfigError, train_config_from_dict

    raw = _raw("distill_tiny_en_2x2")
    raw["optimizer"]["accumulation_steps"] = 4
    raw["total_steps"] = 300
    cfg = train_config_from_dict(raw)
    assert cfg.optimizer_steps == 75
    assert cfg.batch_plan(n_devices=4, n_processes=2) == (8, 4, 2, 4, 32)
    with pytest.raises(ConfigError, match="not divisible by the 3 devices"):
        cfg.batch_plan(3)
    raw["total_steps"] = 301
    with pytest.raises(ConfigError, match="whole number of updates"):
        train_config_from_dict(raw)
    raw["optimizer"]["total_steps"] = 300
    with pytest.raises(ConfigError, match=r"unknown config key\(s\) optimizer\.total_steps"):
        train_config_from_dict(raw)


def test_pipeline_students_per_gate_and_seed():
    from jaxwhisper.config import PipelineConfig, load

    one = load(PipelineConfig, _raw("paper_cpu", "steps=7")).students()
    assert [name for name, _ in one] == ["student_4x3_gate_none", "student_4x3_gate_shared"]
    assert [t.student.gate for _, t in one] == ["none", "shared"]
    raw = _raw("paper_cpu", "steps=7")
    raw["seeds"] = (3, 5)
    runs = load(PipelineConfig, raw).students()
    assert [name for name, _ in runs] == [
        "student_4x3_gate_none_seed3",
        "student_4x3_gate_none_seed5",
        "student_4x3_gate_shared_seed3",
        "student_4x3_gate_shared_seed5",
    ]
    # A seed is the student's initialisation and its data order.
    assert [(t.seed, t.data.seed, t.student.gate) for _, t in runs] == [
        (3, 3, "none"),
        (5, 5, "none"),
        (3, 3, "shared"),
        (5, 5, "shared"),
    ]
    raw["seeds"] = (1, 1)
    with pytest.raises(ValueError, match="names a seed twice"):
        load(PipelineConfig, raw)


def test_reproduction_is_the_demo_per_seed():
    from jaxwhisper.config import PipelineConfig, load

    demo = load(PipelineConfig, _raw("paper_cpu"))
    rep = load(PipelineConfig, _raw("reproduce_cpu"))
    assert rep.seeds == (0, 1) and demo.seeds == ()
    assert dataclasses.replace(rep, seeds=()) == demo
    assert load(PipelineConfig, _raw("reproduce_cpu", "seeds=3:4:5,steps=9")).seeds == (3, 4, 5)
    assert load(PipelineConfig, _raw("reproduce_cpu", "steps=9")).train.total_steps == 9
    with pytest.raises(ValueError, match="unknown config argument"):
        _raw("reproduce_cpu", "gates=none")
