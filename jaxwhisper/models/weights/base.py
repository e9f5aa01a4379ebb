"""What every weight reader shares: the loaded model, the errors, and the final check.

Every source is first turned into a Hugging Face-style state dict of numpy arrays (torch
layout, `model.encoder.layers.0.self_attn.q_proj.weight` [out, in], ...) plus a
`WhisperConfig` (`ct2.py`, `openai.py`, `hf.py`); `hf.hf_state_dict_to_params` then builds the
Flax params, and `complete_and_check` verifies them against the config (initialising gates
the weights lack). `resolve.py` picks the reader for a model spec.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import logging
from pathlib import Path
from typing import Any, Mapping, Optional

import flax.traverse_util
import jax
import jax.numpy as jnp
import numpy as np

from jaxwhisper.models.attention import MultiHeadAttention
from jaxwhisper.models.config import WhisperConfig
from jaxwhisper.models.whisper import param_shapes

log = logging.getLogger(__name__)

StateDict = dict[str, np.ndarray]


class ModelFormatError(ValueError):
    """A weights file that cannot be parsed; the message names the file."""


class ModelNotFoundError(ValueError):
    """A model spec that resolves to nothing loadable; the message says why."""


@dataclasses.dataclass
class LoadedModel:
    """A model ready to run: its config, Flax params and where its tokenizer lives."""

    config: WhisperConfig
    params: dict
    tokenizer_dir: Optional[Path]
    source: str


def _gate_params(config: WhisperConfig, rng: jax.Array) -> dict:
    """Fresh gate params of one attention block, initialised as configured."""
    x = jnp.zeros((1, 1, config.d_model), jnp.float32)
    params = MultiHeadAttention(config).init(rng, x)["params"]
    return {k: v for k, v in params.items() if k.startswith("gate")}


def complete_and_check(
    flat: dict[tuple, np.ndarray], config: WhisperConfig, rng: Optional[jax.Array], source: str
) -> dict:
    """Flax params from flat `{path tuple: array}`: every parameter of `config` present with its
    shape, nothing else; gate parameters that are missing are initialised from `rng`.

    Raises:
      ModelFormatError: a missing, unexpected or misshapen parameter (named, with `source`).
    """
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


def read_torch(path: Path) -> Any:
    if importlib.util.find_spec("torch") is None:
        raise ModelFormatError(f"{path}: reading PyTorch files needs torch; install jaxwhisper[torch]")
    import torch

    return torch.load(path, map_location="cpu", weights_only=True)


def torch_to_numpy(sd: Mapping[str, Any]) -> StateDict:
    out = {}
    for k, v in sd.items():
        if hasattr(v, "detach"):
            v = v.detach().float().numpy() if v.is_floating_point() else v.numpy()
        out[k] = np.asarray(v)
    return out
