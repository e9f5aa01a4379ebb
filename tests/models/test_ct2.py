"""The CTranslate2 model.bin reader on small files written byte by byte in the documented
layout (little endian): u32 version, string spec name, u32 revision, u32 count, then per
variable string name, u8 rank, u32 dims[rank], u8 dtype, u32 nbytes, raw bytes; then u32
alias count and (alias, target) string pairs; strings are u16 length + bytes including a NUL."""

import struct

import ml_dtypes
import numpy as np
import pytest

from jaxwhisper.models.weights.base import ModelFormatError
from jaxwhisper.models.weights.ct2 import load_ct2, read_model_bin

# CTranslate2's DataType ids.
FLOAT32, INT8, INT16, INT32, FLOAT16, BFLOAT16 = range(6)


def _string(s: str) -> bytes:
    raw = s.encode("utf-8") + b"\0"
    return struct.pack("<H", len(raw)) + raw


def _variable(name: str, array: np.ndarray, dtype_id: int, nbytes: int | None = None) -> bytes:
    raw = array.tobytes()
    out = _string(name) + struct.pack("<B", array.ndim)
    out += b"".join(struct.pack("<I", d) for d in array.shape)
    return out + struct.pack("<BI", dtype_id, len(raw) if nbytes is None else nbytes) + raw


def _model_bin(variables, aliases=(), version=6, spec="WhisperSpec", revision=3) -> bytes:
    out = struct.pack("<I", version) + _string(spec) + struct.pack("<I", revision)
    out += struct.pack("<I", len(variables)) + b"".join(_variable(*v) for v in variables)
    out += struct.pack("<I", len(aliases)) + b"".join(_string(a) + _string(t) for a, t in aliases)
    return out


ARRAYS = {
    "encoder/conv1/weight": (np.arange(6, dtype="<f4").reshape(2, 3) / 7, FLOAT32),
    "decoder/scale": (np.array([-128, -1, 0, 127], "i1"), INT8),
    "a/i16": (np.array([[-300, 2], [3, 30000]], "<i2"), INT16),
    "encoder/num_heads": (np.array(6, "<i4"), INT32),  # rank 0: a scalar
    "a/half": (np.array([0.5, -2.0, 65504.0], "<f2"), FLOAT16),
    "a/bf16": (np.array([1.5, -3.0e38, 0.0078125], ml_dtypes.bfloat16), BFLOAT16),
}


def _write(path, data: bytes):
    path.write_bytes(data)
    return path


def test_reads_every_dtype_rank_and_alias(tmp_path):
    variables = [(name, a, dt) for name, (a, dt) in ARRAYS.items()]
    path = _write(
        tmp_path / "model.bin", _model_bin(variables, aliases=[("decoder/embeddings/weight", "a/half")])
    )
    spec, got = read_model_bin(str(path))
    assert spec == "WhisperSpec"  # the NUL is not part of the name
    assert set(got) == set(ARRAYS) | {"decoder/embeddings/weight"}
    for name, (want, _) in ARRAYS.items():
        assert got[name].dtype == want.dtype and got[name].shape == want.shape, name
        np.testing.assert_array_equal(got[name], want)
    assert int(got["encoder/num_heads"]) == 6
    np.testing.assert_array_equal(got["decoder/embeddings/weight"], ARRAYS["a/half"][0])


@pytest.mark.parametrize("version", [5, 6, 7])
def test_known_versions(tmp_path, version):
    a = np.ones((2,), "<f4")
    spec, got = read_model_bin(_write(tmp_path / "m.bin", _model_bin([("x", a, FLOAT32)], version=version)))
    assert spec == "WhisperSpec" and list(got) == ["x"]


def test_a_model_split_in_parts_reads_as_their_concatenation(tmp_path):
    """The bundled base model ships as model.bin parts; a split may fall inside any field."""
    data = _model_bin([(name, a, dt) for name, (a, dt) in ARRAYS.items()])
    cuts = [0, 3, 17, 60, len(data)]  # inside the version, inside a string, inside raw bytes
    parts = [_write(tmp_path / f"part{i}", data[a:b]) for i, (a, b) in enumerate(zip(cuts, cuts[1:]))]
    _, got = read_model_bin(parts)
    for name, (want, _) in ARRAYS.items():
        np.testing.assert_array_equal(got[name], want)


@pytest.mark.parametrize(
    "data, match",
    [
        (_model_bin([("x", np.ones(2, "<f4"), FLOAT32)], version=4), "binary version 4"),
        (_model_bin([("x", np.ones(2, "<f4"), FLOAT32)], version=8), "binary version 8"),
        (_model_bin([("x", np.ones(2, "<f4"), 9)]), "unknown dtype id 9"),
        (_model_bin([("x", np.ones(2, "<f4"), FLOAT32, 12)]), "x has 12 bytes, expected 8"),
        (_model_bin([("x", np.ones(2, "<f4"), FLOAT32)])[:-6], "truncated"),
        (b"\x06\x00", "truncated"),
    ],
    ids=["version-4", "version-8", "dtype-9", "nbytes", "truncated-raw-bytes", "truncated-version"],
)
def test_malformed_files_are_one_clear_error(tmp_path, data, match):
    path = _write(tmp_path / "model.bin", data)
    with pytest.raises(ModelFormatError, match=match) as e:
        read_model_bin(path)
    assert str(path) in str(e.value)


def test_load_ct2_rejects_another_spec(tmp_path):
    path = _write(
        tmp_path / "model.bin", _model_bin([("x", np.ones(2, "<f4"), FLOAT32)], spec="TransformerSpec")
    )
    with pytest.raises(ModelFormatError, match="'TransformerSpec', not WhisperSpec"):
        load_ct2([path])


def test_load_ct2_rejects_a_whisper_spec_without_whisper_variables(tmp_path):
    path = _write(tmp_path / "model.bin", _model_bin([("x", np.ones(2, "<f4"), FLOAT32)]))
    with pytest.raises(ModelFormatError, match="not a CTranslate2 Whisper model"):
        load_ct2([path])
