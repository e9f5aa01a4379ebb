"""The figures: each call writes a valid PNG (signature, chunk CRCs, IHDR, IEND checked by hand)
and, beside it, the JSON of the data drawn, computed here from the inputs."""

import json
import struct
import zlib

import numpy as np
import pytest

from jaxwhisper.analysis import plots


def assert_valid_png(path):
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, chunks = 8, []
    while pos < len(data):
        (n,) = struct.unpack(">I", data[pos : pos + 4])
        kind, body = data[pos + 4 : pos + 8], data[pos + 8 : pos + 8 + n]
        (crc,) = struct.unpack(">I", data[pos + 8 + n : pos + 12 + n])
        assert zlib.crc32(kind + body) == crc, kind
        chunks.append((kind, body))
        pos += 12 + n
    assert pos == len(data)
    assert chunks[0][0] == b"IHDR" and chunks[-1] == (b"IEND", b"")
    width, height, depth, color = struct.unpack(">IIBB", chunks[0][1][:10])
    assert width > 50 and height > 50 and depth == 8 and color in (2, 6)
    pixels = zlib.decompress(b"".join(b for k, b in chunks if k == b"IDAT"))
    assert len(pixels) == height * (1 + width * (3 if color == 2 else 4))  # a filter byte per row
    return width, height


def test_outlier_share(tmp_path):
    counts = {"teacher": [0, 10, 0, 30, 0, 0, 60, 0], "student": [5, 5, 5, 5, 0, 0, 0, 0]}
    path = plots.outlier_share(counts, "decoder/layers_3/self_attn/out", tmp_path / "fig" / "share.png")
    assert path == tmp_path / "fig" / "share.png"
    assert_valid_png(path)
    data = json.loads(path.with_suffix(".json").read_text())
    assert data["point"] == "decoder/layers_3/self_attn/out"
    assert data["models"]["teacher"] == {"counts": counts["teacher"], "top2": [6, 3]}
    assert data["models"]["student"]["counts"] == counts["student"]


def test_attention(tmp_path):
    rng = np.random.default_rng(0)
    probs = rng.dirichlet(np.ones(4), size=4)
    values = rng.normal(size=(4, 6))
    example = {"probs": probs, "values": values, "output": probs @ values}
    path = plots.attention(example, ["<|sot|>", " the", " cat", "."], "head 0", tmp_path / "attn.png")
    assert_valid_png(path)
    data = json.loads(path.with_suffix(".json").read_text())
    assert data["tokens"] == ["<|sot|>", " the", " cat", "."] and data["title"] == "head 0"
    np.testing.assert_allclose(data["probs"], probs)
    np.testing.assert_allclose(data["output"], probs @ values)


def test_kurtosis(tmp_path):
    layers = {
        "teacher": {
            "encoder/layers_0/self_attn/out": {"kurtosis": 3.5},
            "decoder/layers_0/self_attn/out": {"kurtosis": 40.0},
        },
        "student": {"encoder/layers_0/self_attn/out": {"kurtosis": 3.1}},
    }
    points = ["encoder/layers_0/self_attn/out", "decoder/layers_0/self_attn/out"]
    path = plots.kurtosis(layers, points, tmp_path / "k.png")
    assert_valid_png(path)
    data = json.loads(path.with_suffix(".json").read_text())
    assert data["points"] == points and data["models"]["teacher"] == [3.5, 40.0]
    assert data["models"]["student"][0] == 3.1 and np.isnan(data["models"]["student"][1])  # no such point


def test_gates(tmp_path):
    edges = [0.0, 0.5, 1.0, 1.5]
    hists = {
        "gated": {
            "encoder/layers_0/self_attn/gate": {"edges": edges, "counts": [1, 2, 3], "mean": 0.9},
            "encoder/layers_1/self_attn/gate": {"edges": edges, "counts": [0, 1, 0], "mean": 0.9},
            "decoder/layers_0/self_attn/gate": {"edges": edges, "counts": [4, 0, 0], "mean": 0.2},
        },
        "plain": {},
    }
    path = plots.gates(hists, tmp_path / "g.png")
    assert_valid_png(path)
    data = json.loads(path.with_suffix(".json").read_text())
    assert data == {"gated": {"encoder": [1, 3, 3], "decoder": [4, 0, 0], "edges": edges}}  # summed per side
    with pytest.raises(ValueError, match="no gated model"):
        plots.gates({"plain": {}}, tmp_path / "none.png")
