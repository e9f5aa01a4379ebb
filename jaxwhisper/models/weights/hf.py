"""Hugging Face checkpoints: transformers `config.json` + safetensors or `pytorch_model.bin`,
and the one map from an HF-style state dict to Flax params that every reader ends in."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Mapping, Optional

import jax
import jax.numpy as jnp
import numpy as np

from jaxwhisper.models.config import WhisperConfig
from jaxwhisper.models.weights.base import (
    ModelFormatError,
    StateDict,
    complete_and_check,
    read_torch,
    torch_to_numpy,
)


def _linear(sd: StateDict, name: str, out: dict, path: tuple, bias: bool = True):
    out[path + ("kernel",)] = sd[name + ".weight"].T
    if bias:
        out[path + ("bias",)] = sd[name + ".bias"]


def _norm(sd: StateDict, name: str, out: dict, path: tuple):
    out[path + ("scale",)] = sd[name + ".weight"]
    out[path + ("bias",)] = sd[name + ".bias"]


def _attention(sd: StateDict, name: str, out: dict, path: tuple):
    for proj in ("q_proj", "v_proj", "out_proj"):
        _linear(sd, f"{name}.{proj}", out, path + (proj,))
    _linear(sd, f"{name}.k_proj", out, path + ("k_proj",), bias=False)


def _block(sd: StateDict, name: str, out: dict, path: tuple, cross: bool):
    _attention(sd, f"{name}.self_attn", out, path + ("self_attn",))
    _norm(sd, f"{name}.self_attn_layer_norm", out, path + ("self_attn_layer_norm",))
    if cross:
        _attention(sd, f"{name}.encoder_attn", out, path + ("encoder_attn",))
        _norm(sd, f"{name}.encoder_attn_layer_norm", out, path + ("encoder_attn_layer_norm",))
    _linear(sd, f"{name}.fc1", out, path + ("mlp", "fc1"))
    _linear(sd, f"{name}.fc2", out, path + ("mlp", "fc2"))
    _norm(sd, f"{name}.final_layer_norm", out, path + ("final_layer_norm",))


def hf_state_dict_to_params(
    sd: StateDict, config: WhisperConfig, rng: Optional[jax.Array] = None, source: str = "?"
) -> dict:
    """Builds Flax params from an HF-style state dict (keys with or without `model.`).

    Gate parameters that the state dict lacks are initialised as `config` says (teachers
    have none). Every other parameter must be present with the right shape.
    """
    sd = {k[len("model.") :] if k.startswith("model.") else k: v for k, v in sd.items()}
    flat: dict[tuple, np.ndarray] = {}
    try:
        for conv in ("conv1", "conv2"):
            # torch Conv1d [out, in, k] -> flax Conv [k, in, out]
            flat[("encoder", conv, "kernel")] = sd[f"encoder.{conv}.weight"].transpose(2, 1, 0)
            flat[("encoder", conv, "bias")] = sd[f"encoder.{conv}.bias"]
        flat[("encoder", "embed_positions")] = sd["encoder.embed_positions.weight"]
        for i in range(config.encoder_layers):
            _block(sd, f"encoder.layers.{i}", flat, ("encoder", f"layers_{i}"), cross=False)
        _norm(sd, "encoder.layer_norm", flat, ("encoder", "layer_norm"))
        flat[("decoder", "embed_tokens", "embedding")] = sd["decoder.embed_tokens.weight"]
        flat[("decoder", "embed_positions")] = sd["decoder.embed_positions.weight"]
        for i in range(config.decoder_layers):
            _block(sd, f"decoder.layers.{i}", flat, ("decoder", f"layers_{i}"), cross=True)
        _norm(sd, "decoder.layer_norm", flat, ("decoder", "layer_norm"))
    except KeyError as e:
        raise ModelFormatError(f"{source}: missing weight {e.args[0]}") from None
    dtype = jnp.dtype(config.param_dtype)
    flat = {k: np.asarray(v, dtype=dtype) for k, v in flat.items()}
    return complete_and_check(flat, config, rng, source)


def config_from_hf(hf: Mapping[str, Any], **overrides: Any) -> WhisperConfig:
    """WhisperConfig from a transformers `config.json` dict."""
    if hf.get("encoder_attention_heads") != hf.get("decoder_attention_heads"):
        raise ModelFormatError("encoder and decoder head counts differ; not a Whisper layout")
    return WhisperConfig(
        n_mels=hf["num_mel_bins"],
        n_audio_ctx=hf["max_source_positions"],
        n_text_ctx=hf["max_target_positions"],
        n_vocab=hf["vocab_size"],
        d_model=hf["d_model"],
        n_heads=hf["encoder_attention_heads"],
        encoder_layers=hf["encoder_layers"],
        decoder_layers=hf["decoder_layers"],
        ffn_dim=hf["encoder_ffn_dim"],
    ).replace(**overrides)


def config_to_hf(config: WhisperConfig) -> dict:
    """transformers `WhisperConfig` kwargs of a WhisperConfig (inverse of `config_from_hf`)."""
    return {
        "vocab_size": config.n_vocab,
        "num_mel_bins": config.n_mels,
        "max_source_positions": config.n_audio_ctx,
        "max_target_positions": config.n_text_ctx,
        "d_model": config.d_model,
        "encoder_attention_heads": config.n_heads,
        "decoder_attention_heads": config.n_heads,
        "encoder_layers": config.encoder_layers,
        "decoder_layers": config.decoder_layers,
        "encoder_ffn_dim": config.ffn_dim,
        "decoder_ffn_dim": config.ffn_dim,
    }


def load_hf_dir(path: Path, **overrides: Any) -> tuple[WhisperConfig, StateDict]:
    """Reads a transformers Whisper directory: config.json + safetensors or pytorch_model.bin."""
    cfg_path = path / "config.json"
    try:
        hf = json.loads(cfg_path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise ModelFormatError(f"{cfg_path}: unreadable config ({e})") from None
    if hf.get("model_type") != "whisper":
        raise ModelFormatError(f"{cfg_path}: model_type is {hf.get('model_type')!r}, not whisper")
    config = config_from_hf(hf, **overrides)
    shards = sorted(path.glob("model*.safetensors"))
    if shards:
        from safetensors.numpy import load_file

        sd: StateDict = {}
        for shard in shards:
            try:
                sd.update(load_file(str(shard)))
            except Exception as e:  # safetensors raises its own error types
                raise ModelFormatError(f"{shard}: unreadable safetensors file ({e})") from None
        # bf16 safetensors come back as ml_dtypes arrays; cast below handles them.
        return config, sd
    bins = sorted(path.glob("pytorch_model*.bin"))
    if bins:
        sd = {}
        for b in bins:
            sd.update(torch_to_numpy(read_torch(b)))
        return config, sd
    raise ModelFormatError(f"{path}: no model*.safetensors or pytorch_model*.bin next to config.json")
