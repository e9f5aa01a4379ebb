"""Students: layer maps, copied weights, gates, and the paper's parameter counts."""

import jax
import numpy as np
import pytest

from jaxwhisper.models.config import preset
from jaxwhisper.models.whisper import Whisper, init_params, param_shapes
from jaxwhisper.train.student import decoder_layer_map, encoder_layer_map, make_student, student_config


def test_layer_maps():
    assert encoder_layer_map(32, 8) == [0, 4, 8, 12, 16, 20, 24, 28]  # the paper's example
    assert encoder_layer_map(32, 16) == list(range(0, 32, 2))
    assert encoder_layer_map(32, 24)[:4] == [0, 1, 2, 4] and len(set(encoder_layer_map(32, 24))) == 24
    # distil-whisper's map is the truncating integer linspace: its literal output for 32 -> 8.
    assert encoder_layer_map(32, 8, "linspace") == [0, 4, 8, 13, 17, 22, 26, 31]
    for n_teacher, n_student in [(32, 16), (32, 24), (6, 3), (4, 2)]:
        expected = np.linspace(0, n_teacher - 1, n_student, dtype=int).tolist()
        assert encoder_layer_map(n_teacher, n_student, "linspace") == expected
    assert decoder_layer_map(32, 2) == [0, 31] and decoder_layer_map(4, 2) == [0, 3]
    with pytest.raises(ValueError):
        encoder_layer_map(4, 5)


@pytest.mark.parametrize("n_enc, expected_m", [(8, 283), (16, 440), (24, 598)])
def test_paper_students_parameter_counts(n_enc, expected_m):
    """large-v2 teacher, n_enc encoder + 2 decoder layers, built abstractly (eval_shape)."""
    for gate in ("none", "shared"):
        cfg = student_config(preset("large-v2"), n_enc, 2, gate=gate)
        n = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(param_shapes(cfg)))
        assert abs(n / 1e6 - expected_m) / expected_m < 0.005, (gate, n)


def test_student_copies_teacher_layers_and_adds_gates():
    teacher = preset("tiny.en").replace(n_vocab=300, n_audio_ctx=50, n_text_ctx=32)
    t_params = init_params(teacher, jax.random.PRNGKey(0))
    cfg, s = make_student(teacher, t_params, 2, 2, gate="shared")
    assert (cfg.encoder_layers, cfg.decoder_layers, cfg.gate) == (2, 2, "shared")
    np.testing.assert_array_equal(
        s["encoder"]["layers_1"]["mlp"]["fc1"]["kernel"],
        t_params["encoder"]["layers_2"]["mlp"]["fc1"]["kernel"],
    )
    np.testing.assert_array_equal(
        s["decoder"]["layers_1"]["encoder_attn"]["q_proj"]["kernel"],
        t_params["decoder"]["layers_3"]["encoder_attn"]["q_proj"]["kernel"],
    )
    np.testing.assert_array_equal(
        s["decoder"]["embed_tokens"]["embedding"], t_params["decoder"]["embed_tokens"]["embedding"]
    )
    assert s["encoder"]["layers_0"]["self_attn"]["gate_proj"]["kernel"].shape == (384, 1)
    assert "layers_2" not in s["encoder"]


def test_full_depth_student_is_the_teacher():
    teacher = preset("tiny.en").replace(n_vocab=300, n_audio_ctx=50, n_text_ctx=32)
    t_params = init_params(teacher, jax.random.PRNGKey(0))
    cfg, s = make_student(teacher, t_params, 4, 4)
    mel = np.random.default_rng(0).normal(size=(1, 80, 100)).astype(np.float32)
    tokens = np.array([[1, 2, 3]], np.int32)
    np.testing.assert_array_equal(
        Whisper(cfg).apply({"params": s}, mel, tokens),
        Whisper(teacher).apply({"params": t_params}, mel, tokens),
    )
