"""Calibration on audio: the float model transcribes the calibration clips, then its own
transcripts are teacher-forced batch by batch while every activation point's min/max is
recorded (`fakequant.calibrate`), so that the decoder sees the tokens it sees when decoding.
Ranges (and SmoothQuant scales, when the recipe smooths) are saved as JSON and reused.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Optional

import numpy as np

from jaxwhisper.models.weights import LoadedModel
from jaxwhisper.quant import smoothquant
from jaxwhisper.quant.config import QuantConfig
from jaxwhisper.quant.fakequant import Ranges, calibrate
from jaxwhisper.quant.smoothquant import Scales
from jaxwhisper.teacher_forcing import forced_batches

log = logging.getLogger(__name__)


def calibration_batches(
    model: LoadedModel, clips: list[np.ndarray], batch_size: int, n_batches: int, padding: str = "log_mel"
) -> list[tuple[np.ndarray, np.ndarray]]:
    """(mel [b, n_mels, 3000], tokens [b, len]) batches: the first 30 s of each clip and the
    float model's greedy transcript after the forced prefix, padded with end-of-text."""
    want = batch_size * n_batches
    if len(clips) < want:
        log.warning(
            "calibration: %d clips for %d batches of %d; using what there is",
            len(clips),
            n_batches,
            batch_size,
        )
    clips = clips[:want]
    if not clips:
        raise ValueError("calibration needs at least one clip")
    return [(b.mel, b.tokens) for b in forced_batches(model, clips, batch_size, padding)]


def calibrate_on_audio(
    model: LoadedModel, clips: list[np.ndarray], qcfg: QuantConfig, batch_size: int
) -> tuple[Ranges, Optional[Scales]]:
    """Activation ranges, and with `qcfg.smoothquant` the smoothing scales (collected on the
    float model first; the ranges are then those of the smoothed model). Returns
    (ranges, smoothing or None)."""
    batches = calibration_batches(model, clips, batch_size, qcfg.calibration_batches)
    params, smoothing = model.params, None
    if qcfg.smoothquant:
        absmax = smoothquant.collect_absmax(model.config, params, batches)
        smoothing = smoothquant.smoothing_scales(model.config, params, absmax, qcfg.smooth_alpha)
        params = smoothquant.apply_smoothing(model.config, params, smoothing)
    return calibrate(model.config, params, batches, qcfg), smoothing


def save_ranges(ranges: Ranges, path: Path, meta: dict, smoothing: Optional[Scales] = None) -> None:
    data = {**meta, "ranges": {k: list(v) for k, v in ranges.items()}}
    if smoothing is not None:
        data["smoothing"] = {k: np.asarray(v).tolist() for k, v in smoothing.items()}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=1) + "\n")


def load_smoothing(path: Path) -> Optional[Scales]:
    """The SmoothQuant scales saved with the ranges, or None where there are none."""
    try:
        data = json.loads(Path(path).read_text())
        if "smoothing" not in data:
            return None
        return {k: np.asarray(v, np.float32) for k, v in data["smoothing"].items()}
    except (OSError, ValueError, TypeError, AttributeError) as e:
        raise ValueError(f"{path}: unreadable smoothing scales ({e})") from None


def load_ranges(path: Path) -> Ranges:
    try:
        data = json.loads(Path(path).read_text())
        return {k: (float(lo), float(hi)) for k, (lo, hi) in data["ranges"].items()}
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise ValueError(f"{path}: not a ranges file written by jaxwhisper calibration ({e})") from None
