"""jaxwhisper checkpoints (what `jaxwhisper convert` and a finished training run write):
`DIR/{jaxwhisper_config.json, params.msgpack}` plus the tokenizer files."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import flax.serialization
import flax.traverse_util
import jax
import jax.numpy as jnp
import numpy as np

from jaxwhisper.models.config import WhisperConfig
from jaxwhisper.models.weights.base import LoadedModel, ModelFormatError, complete_and_check

CHECKPOINT_PARAMS = "params.msgpack"
CHECKPOINT_CONFIG = "jaxwhisper_config.json"
TOKENIZER_FILES = ("tokenizer.json", "vocabulary.txt")


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
    return new_config, complete_and_check(flat, new_config, None, str(path))
