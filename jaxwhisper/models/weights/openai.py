"""OpenAI whisper `.pt` checkpoints ({"dims", "model_state_dict"}), renamed to the HF layout."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from jaxwhisper.models.config import WhisperConfig
from jaxwhisper.models.weights.base import ModelFormatError, StateDict, read_torch, torch_to_numpy
from jaxwhisper.models.whisper import sinusoids

_OPENAI_RENAMES = [
    (r"^encoder\.positional_embedding$", "encoder.embed_positions.weight"),
    (r"^decoder\.positional_embedding$", "decoder.embed_positions.weight"),
    (r"^decoder\.token_embedding\.", "decoder.embed_tokens."),
    (r"^encoder\.ln_post\.", "encoder.layer_norm."),
    (r"^decoder\.ln\.", "decoder.layer_norm."),
    (r"\.blocks\.", ".layers."),
    (r"\.attn\.query\.", ".self_attn.q_proj."),
    (r"\.attn\.key\.", ".self_attn.k_proj."),
    (r"\.attn\.value\.", ".self_attn.v_proj."),
    (r"\.attn\.out\.", ".self_attn.out_proj."),
    (r"\.cross_attn\.query\.", ".encoder_attn.q_proj."),
    (r"\.cross_attn\.key\.", ".encoder_attn.k_proj."),
    (r"\.cross_attn\.value\.", ".encoder_attn.v_proj."),
    (r"\.cross_attn\.out\.", ".encoder_attn.out_proj."),
    (r"\.attn_ln\.", ".self_attn_layer_norm."),
    (r"\.cross_attn_ln\.", ".encoder_attn_layer_norm."),
    (r"\.mlp_ln\.", ".final_layer_norm."),
    (r"\.mlp\.0\.", ".fc1."),
    (r"\.mlp\.2\.", ".fc2."),
]


def openai_to_hf_state_dict(sd: Mapping[str, np.ndarray]) -> StateDict:
    out = {}
    for k, v in sd.items():
        for pattern, repl in _OPENAI_RENAMES:
            k = re.sub(pattern, repl, k)
        out[k] = v
    return out


def load_openai_pt(path: Path, **overrides: Any) -> tuple[WhisperConfig, StateDict]:
    """Reads an OpenAI whisper checkpoint: {"dims": ..., "model_state_dict": ...}."""
    ckpt = read_torch(path)
    if not isinstance(ckpt, dict) or "dims" not in ckpt or "model_state_dict" not in ckpt:
        raise ModelFormatError(f"{path}: not an OpenAI whisper checkpoint (no dims/model_state_dict)")
    d = ckpt["dims"]
    if d["n_audio_state"] != d["n_text_state"] or d["n_audio_head"] != d["n_text_head"]:
        raise ModelFormatError(f"{path}: encoder and decoder widths differ; not supported")
    config = WhisperConfig(
        n_mels=d["n_mels"],
        n_audio_ctx=d["n_audio_ctx"],
        n_text_ctx=d["n_text_ctx"],
        n_vocab=d["n_vocab"],
        d_model=d["n_audio_state"],
        n_heads=d["n_audio_head"],
        encoder_layers=d["n_audio_layer"],
        decoder_layers=d["n_text_layer"],
        ffn_dim=4 * d["n_audio_state"],
    ).replace(**overrides)
    sd = openai_to_hf_state_dict(torch_to_numpy(ckpt["model_state_dict"]))
    if "encoder.embed_positions.weight" not in sd:  # a buffer some exports leave out
        sd["encoder.embed_positions.weight"] = sinusoids(config.n_audio_ctx, config.d_model)
    return config, sd
