"""CTranslate2 `model.bin` files (no ctranslate2 import needed), mapped to the HF layout.

Layout (little endian): u32 version, string spec name, u32 revision, u32 count, then per
variable: string name, u8 rank, u32 dims[rank], u8 dtype, u32 nbytes, raw bytes; then u32
alias count and (alias, target) string pairs. Strings are u16 length + bytes including a NUL.
"""

from __future__ import annotations

import os
import re
import struct
from pathlib import Path
from typing import BinaryIO, Mapping, Sequence

import ml_dtypes
import numpy as np

from jaxwhisper.models.config import WhisperConfig
from jaxwhisper.models.weights.base import ModelFormatError, StateDict

_DTYPES = {
    0: np.dtype("<f4"),
    1: np.dtype("i1"),
    2: np.dtype("<i2"),
    3: np.dtype("<i4"),
    4: np.dtype("<f2"),
    5: np.dtype(ml_dtypes.bfloat16),
}


class _Reader:
    def __init__(self, f: BinaryIO, path: str):
        self.f = f
        self.path = path

    def read(self, n: int) -> bytes:
        b = self.f.read(n)
        if len(b) != n:
            raise ModelFormatError(f"{self.path}: truncated CTranslate2 model (unexpected end of file)")
        return b

    def u8(self) -> int:
        return self.read(1)[0]

    def u16(self) -> int:
        return struct.unpack("<H", self.read(2))[0]

    def u32(self) -> int:
        return struct.unpack("<I", self.read(4))[0]

    def string(self) -> str:
        raw = self.read(self.u16())
        return raw.rstrip(b"\0").decode("utf-8")


class _ConcatFile:
    """A read-only file object over several parts (the base model ships split in two)."""

    def __init__(self, paths: Sequence[str]):
        self.files = [open(p, "rb") for p in paths]
        self.i = 0

    def read(self, n: int) -> bytes:
        out = b""
        while len(out) < n and self.i < len(self.files):
            chunk = self.files[self.i].read(n - len(out))
            if not chunk:
                self.i += 1
                continue
            out += chunk
        return out

    def close(self):
        for f in self.files:
            f.close()


def read_model_bin(paths: str | Sequence[str]) -> tuple[str, dict[str, np.ndarray]]:
    """Reads a CTranslate2 model.bin (optionally split into parts, concatenated in order).

    Returns:
      The spec name (e.g. "WhisperSpec") and a dict from variable name to array, with
      aliases resolved to the arrays they point to.
    """
    paths = [paths] if isinstance(paths, (str, os.PathLike)) else list(paths)
    name = " + ".join(str(p) for p in paths)
    f = _ConcatFile(paths)
    try:
        r = _Reader(f, name)
        version = r.u32()
        if version < 5 or version > 7:
            raise ModelFormatError(
                f"{name}: not a CTranslate2 model.bin this reader knows (binary version {version})"
            )
        spec = r.string()
        r.u32()  # spec revision
        count = r.u32()
        variables: dict[str, np.ndarray] = {}
        for _ in range(count):
            var = r.string()
            rank = r.u8()
            dims = [r.u32() for _ in range(rank)]
            dtype_id = r.u8()
            if dtype_id not in _DTYPES:
                raise ModelFormatError(f"{name}: variable {var} has unknown dtype id {dtype_id}")
            nbytes = r.u32()
            dtype = _DTYPES[dtype_id]
            expected = int(np.prod(dims, dtype=np.int64)) * dtype.itemsize
            if nbytes != expected:
                raise ModelFormatError(
                    f"{name}: variable {var} has {nbytes} bytes, expected {expected} for {dims}"
                )
            variables[var] = np.frombuffer(r.read(nbytes), dtype=dtype).reshape(dims)
        for _ in range(r.u32()):
            alias, target = r.string(), r.string()
            variables[alias] = variables[target]
        return spec, variables
    finally:
        f.close()


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


def load_ct2(paths: list[Path], **overrides) -> tuple[WhisperConfig, StateDict]:
    name = " + ".join(str(p) for p in paths)
    spec, variables = read_model_bin(paths)
    if spec != "WhisperSpec":
        raise ModelFormatError(f"{name}: CTranslate2 spec is {spec!r}, not WhisperSpec")
    config, sd = ct2_to_hf_state_dict(variables, name)
    return config.replace(**overrides), sd
