"""Calibration on audio: the float model transcribes the calibration clips, then its own
transcripts are teacher-forced batch by batch while every activation point's min/max is
recorded (`fakequant.calibrate`), so that the decoder sees the tokens it sees when decoding.
The result is one `Calibration` (ranges and, when the recipe smooths, SmoothQuant scales),
saved as one JSON file and reused.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from pathlib import Path
from typing import Optional

import numpy as np

from jaxwhisper.inference.teacher_forcing import forced_batches
from jaxwhisper.models.weights.base import LoadedModel
from jaxwhisper.quant import smoothquant
from jaxwhisper.quant.config import QuantConfig
from jaxwhisper.quant.fakequant import Ranges, calibrate
from jaxwhisper.quant.smoothquant import Scales

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


def calibration_key(qcfg: QuantConfig) -> str:
    """What a calibration depends on besides the model and the clips: presets with the same
    key share one (bits, granularity and exclusions do not change the recorded ranges;
    another estimator, momentum, or what the MSE search quantizes to does; SmoothQuant changes
    the model whose ranges are taken)."""
    mse = qcfg.estimator == "mse"
    return (
        f"{qcfg.estimator}-m{qcfg.momentum}"
        + (f"-p{qcfg.percentile}" if qcfg.estimator == "percentile" else "")
        + (f"-a{qcfg.act_bits}{'s' if qcfg.act_symmetric else ''}" if mse else "")
        + (f"-smooth{qcfg.smooth_alpha}" if qcfg.smoothquant else "")
    )


@dataclasses.dataclass(frozen=True)
class Calibration:
    """What PTQ learns from calibration data, saved as one JSON file.

    Attributes:
      ranges: `{activation point: (lo, hi)}` (point names: `jaxwhisper.quant.config`).
      smoothing: SmoothQuant scales `{LayerNorm path: [d_model]}` when the recipe smooths
        (the ranges are then those of the smoothed model), else None.
      meta: provenance written with it (model, calibration spec, clips, estimator key).
    """

    ranges: Ranges
    smoothing: Optional[Scales] = None
    meta: dict = dataclasses.field(default_factory=dict)

    def check(self, qcfg: QuantConfig, source: str = "calibration") -> None:
        """Raises ValueError when this calibration cannot serve `qcfg`."""
        if qcfg.smoothquant and self.smoothing is None:
            raise ValueError(f"{source} holds no SmoothQuant scales: calibrate {qcfg.name} anew")

    def save(self, path: Path) -> None:
        data = {**self.meta, "ranges": {k: list(v) for k, v in self.ranges.items()}}
        if self.smoothing is not None:
            data["smoothing"] = {k: np.asarray(v).tolist() for k, v in self.smoothing.items()}
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(data, indent=1) + "\n")

    @classmethod
    def load(cls, path: Path) -> "Calibration":
        """Reads what `save` wrote.

        Raises:
          ValueError: not a calibration file (the message names it).
        """
        try:
            data = json.loads(Path(path).read_text())
            ranges = {k: (float(lo), float(hi)) for k, (lo, hi) in data.pop("ranges").items()}
            smoothing = data.pop("smoothing", None)
            if smoothing is not None:
                smoothing = {k: np.asarray(v, np.float32) for k, v in smoothing.items()}
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
            raise ValueError(f"{path}: not a ranges file written by jaxwhisper calibration ({e})") from None
        return cls(ranges, smoothing, data)


def calibrate_on_audio(
    model: LoadedModel,
    clips: list[np.ndarray],
    qcfg: QuantConfig,
    batch_size: int,
    meta: Optional[dict] = None,
) -> Calibration:
    """Activation ranges, and with `qcfg.smoothquant` the smoothing scales (collected on the
    float model first; the ranges are then those of the smoothed model).

    Args:
      clips: float32 [samples] 16 kHz clips; the first `qcfg.calibration_batches * batch_size`
        are used.
      meta: provenance to keep with the result (`Calibration.meta`).
    """
    batches = calibration_batches(model, clips, batch_size, qcfg.calibration_batches)
    params, smoothing = model.params, None
    if qcfg.smoothquant:
        absmax = smoothquant.collect_absmax(model.config, params, batches)
        smoothing = smoothquant.smoothing_scales(model.config, params, absmax, qcfg.smooth_alpha)
        params = smoothquant.apply_smoothing(model.config, params, smoothing)
    return Calibration(calibrate(model.config, params, batches, qcfg), smoothing, dict(meta or {}))
