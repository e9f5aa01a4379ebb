"""Students from a teacher: fewer encoder and decoder layers, copied weights, optional gates.

Encoder layers follow the paper (every k-th teacher layer from the first: 8 of 32 ->
0, 4, ..., 28; when k is not an integer, the evenly spaced `floor(i * L / N)`) or
distil-whisper's `np.linspace(0, L - 1, N, dtype=int)` (truncated, not rounded). Decoder
layers: the teacher's first and last for
2 layers (both papers), evenly spaced over [0, L - 1] otherwise. Convolutions, positions,
embeddings and final LayerNorms are copied; gates the teacher lacks are initialised as the
student config says.
"""

from __future__ import annotations

from typing import Optional

import flax.traverse_util
import jax
import numpy as np

from jaxwhisper.config import LAYER_MAPS
from jaxwhisper.models.config import WhisperConfig
from jaxwhisper.models.weights.base import complete_and_check


def encoder_layer_map(n_teacher: int, n_student: int, scheme: str = "paper") -> list[int]:
    """Teacher encoder layer copied into each student layer."""
    if not 1 <= n_student <= n_teacher:
        raise ValueError(f"cannot take {n_student} encoder layers from {n_teacher}")
    if scheme == "paper":
        return [i * n_teacher // n_student for i in range(n_student)]
    if scheme == "linspace":
        # distil-whisper's map: integer linspace, which truncates (32 -> 8: 0, 4, 8, 13, ...).
        return [int(x) for x in np.linspace(0, n_teacher - 1, n_student, dtype=int)]
    raise ValueError(f"layer map must be one of {LAYER_MAPS}, got {scheme!r}")


def decoder_layer_map(n_teacher: int, n_student: int) -> list[int]:
    """First and last teacher layer for 2; evenly spaced over [0, L - 1] in general."""
    if not 1 <= n_student <= n_teacher:
        raise ValueError(f"cannot take {n_student} decoder layers from {n_teacher}")
    if n_student == 1:
        return [n_teacher - 1]
    return [int(x) for x in np.linspace(0, n_teacher - 1, n_student).round()]


def student_config(
    teacher: WhisperConfig, encoder_layers: int, decoder_layers: int, **overrides
) -> WhisperConfig:
    return teacher.replace(encoder_layers=encoder_layers, decoder_layers=decoder_layers, **overrides)


def make_student(
    teacher_config: WhisperConfig,
    teacher_params: dict,
    encoder_layers: int,
    decoder_layers: int,
    layer_map: str = "paper",
    rng: Optional[jax.Array] = None,
    **overrides,
) -> tuple[WhisperConfig, dict]:
    """Builds a student's config and params from a teacher.

    Args:
      teacher_config, teacher_params: the teacher (gate "none" or gated: its gates are
        copied with their layers when the student has the same gate type).
      encoder_layers, decoder_layers: student depth.
      layer_map: "paper" or "linspace" for the encoder.
      rng: initialises the gates the teacher lacks.
      **overrides: other student config fields (gate, dtype, ...).

    Returns:
      (student config, student params); the params share no buffers with the teacher's.
    """
    config = student_config(teacher_config, encoder_layers, decoder_layers, **overrides)
    enc_map = encoder_layer_map(teacher_config.encoder_layers, encoder_layers, layer_map)
    dec_map = decoder_layer_map(teacher_config.decoder_layers, decoder_layers)
    maps = {"encoder": enc_map, "decoder": dec_map}
    flat: dict[tuple, np.ndarray] = {}
    for key, value in flax.traverse_util.flatten_dict(teacher_params).items():
        if any(p.startswith("gate") for p in key) and config.gate != teacher_config.gate:
            continue  # a gate of another type: the student's are initialised below
        side, name = key[0], key[1]
        if not name.startswith("layers_"):
            flat[key] = np.array(value)
            continue
        for i, j in enumerate(maps[side]):
            if j == int(name[len("layers_") :]):
                flat[(side, f"layers_{i}") + key[2:]] = np.array(value)
    # Gates the student has and the teacher lacks are initialised as configured.
    return config, complete_and_check(flat, config, rng, "student")
