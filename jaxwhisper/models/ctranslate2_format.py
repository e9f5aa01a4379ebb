"""Reader for CTranslate2 `model.bin` files (no ctranslate2 import needed).

Layout (little endian): u32 version, string spec name, u32 revision, u32 count, then per
variable: string name, u8 rank, u32 dims[rank], u8 dtype, u32 nbytes, raw bytes; then u32
alias count and (alias, target) string pairs. Strings are u16 length + bytes including a NUL.
"""

from __future__ import annotations

import os
import struct
from typing import BinaryIO, Sequence

import ml_dtypes
import numpy as np

_DTYPES = {
    0: np.dtype("<f4"),
    1: np.dtype("i1"),
    2: np.dtype("<i2"),
    3: np.dtype("<i4"),
    4: np.dtype("<f2"),
    5: np.dtype(ml_dtypes.bfloat16),
}


class ModelFormatError(ValueError):
    """A weights file that cannot be parsed; the message names the file."""


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
