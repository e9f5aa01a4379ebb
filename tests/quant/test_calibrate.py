"""Calibration files: what is saved is what is loaded, unreadable files are one clear error, a
file without SmoothQuant scales cannot serve a smoothing preset, and which presets can share
one calibration."""

import json

import numpy as np
import pytest

from jaxwhisper.quant.calibrate import Calibration, calibration_key
from jaxwhisper.quant.config import QuantConfig, preset
from jaxwhisper.quant.ptq import prepare_calibration

RANGES = {"encoder/layers_0/mlp/fc1/input": (-1.25, 3.0e-7), "decoder/embed": (-655.0625, 145.1)}
SCALES = {
    "encoder/layers_0/final_layer_norm": np.array([0.5, 2.0, 1e-3], np.float32),
    "decoder/layers_1/self_attn_layer_norm": np.array([7.0, 0.1, 3.3], np.float32),
}


def test_round_trip_is_exact(tmp_path):
    path = tmp_path / "sub" / "calibration.json"  # missing folders are created
    Calibration(RANGES, SCALES, {"model": "tiny.en", "clips": 8}).save(path)
    got = Calibration.load(path)
    assert got.ranges == RANGES  # floats survive JSON bit for bit
    assert set(got.smoothing) == set(SCALES)
    for k, v in SCALES.items():
        assert got.smoothing[k].dtype == np.float32
        np.testing.assert_array_equal(got.smoothing[k], v)
    assert got.meta == {"model": "tiny.en", "clips": 8}


def test_the_file_is_plain_json_with_ranges_beside_the_meta(tmp_path):
    path = tmp_path / "c.json"
    Calibration(RANGES, None, {"model": "m"}).save(path)
    data = json.loads(path.read_text())
    assert data == {"model": "m", "ranges": {k: list(v) for k, v in RANGES.items()}}
    assert Calibration.load(path).smoothing is None


@pytest.mark.parametrize(
    "content",
    ["", "not json", "[1, 2]", '{"model": "m"}', '{"ranges": {"a": [1.0]}}', '{"ranges": {"a": ["x", 1]}}'],
    ids=["empty", "text", "list", "no-ranges", "one-bound", "not-a-number"],
)
def test_unreadable_files_are_one_value_error_naming_the_file(tmp_path, content):
    path = tmp_path / "bad.json"
    path.write_text(content)
    with pytest.raises(ValueError, match=r"bad\.json: not a ranges file written by jaxwhisper calibration"):
        Calibration.load(path)


def test_a_missing_file_is_a_value_error(tmp_path):
    with pytest.raises(ValueError, match="missing.json: not a ranges file"):
        Calibration.load(tmp_path / "missing.json")


def test_a_file_without_scales_cannot_serve_a_smoothquant_preset(tmp_path):
    path = tmp_path / "plain.json"
    Calibration(RANGES, None).save(path)
    qcfg = preset("w8a8-smoothquant")
    with pytest.raises(
        ValueError, match=r"plain\.json holds no SmoothQuant scales: calibrate w8a8-smoothquant anew"
    ):
        Calibration.load(path).check(qcfg, str(path))
    Calibration.load(path).check(preset("w8a8"), str(path))  # fine without smoothing
    Calibration(RANGES, SCALES).check(qcfg)  # and with scales

    def no_clips():
        raise AssertionError("a reused calibration must not calibrate again")

    # Reusing the file in the PTQ flow fails before any calibration work (model unused).
    with pytest.raises(ValueError, match="holds no SmoothQuant scales"):
        prepare_calibration(None, qcfg, no_clips, 1, path)
    assert prepare_calibration(None, preset("w8a8"), no_clips, 1, path).ranges == RANGES
    assert prepare_calibration(None, preset("w8a32"), no_clips, 1, path) is None  # weight-only


def test_presets_that_share_a_calibration():
    """Bits, granularity and exclusions do not change recorded ranges; the estimator, its
    parameters and smoothing do."""
    same = {
        calibration_key(preset(n))
        for n in ("w8a8", "w4a8", "w8a8-per-channel", "w8a8-no-exclusion", "w8a8-real-int8")
    }
    assert len(same) == 1
    keys = [
        calibration_key(q)
        for q in (
            preset("w8a8"),
            preset("w8a8-percentile"),
            QuantConfig(estimator="percentile", percentile=99.9),
            preset("w8a8-mse"),
            QuantConfig(estimator="mse", act_bits=4),
            QuantConfig(estimator="mse", act_symmetric=True),
            preset("w8a8-smoothquant"),
            QuantConfig(smoothquant=True, smooth_alpha=0.8),
            QuantConfig(momentum=0.5),
        )
    ]
    assert len(set(keys)) == len(keys)
    # The MSE search's clipping depends on the activation grid; min/max does not.
    assert calibration_key(QuantConfig(act_bits=4)) == calibration_key(QuantConfig())
