"""Post-training quantization as one step: (model, preset, calibration) -> what evaluation runs.

    calibration = prepare_calibration(model, qcfg, load_clips, batch_size, path)
    quantized = quantize_model(model, qcfg, calibration)
    evaluate_model(quantized, sets, output)

The choice of how activations are quantized lives here: presets with at most 8-bit weights
and activations run their Dense layers in the integer domain (`int8`: real int8 x int8 ->
int32, or its exact float32 emulation); other activation widths use fake quantization at
every activation point (`fakequant`); weight-only presets need no interceptor at all.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Any, Callable, Optional

import jax
import numpy as np

from jaxwhisper.models.weights.base import LoadedModel
from jaxwhisper.quant import fakequant, int8, smoothquant
from jaxwhisper.quant.calibrate import Calibration, calibrate_on_audio, calibration_key
from jaxwhisper.quant.config import QuantConfig

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class QuantizedModel:
    """A model ready to evaluate under a quantization preset.

    Attributes:
      model: the float model smoothed (SmoothQuant presets) and with fake-quantized weights.
      qcfg: the preset.
      intercept: `(state) -> context manager` entered while tracing the decoder (activation
        quantization), or None for weight-only presets.
      state: the arrays `intercept` reads (the INT8 kernels), or None. Decoders take them as
        an argument: closed over, they would be compiled into the program as constants
        (tiny.en's W8A8 decoder: 33 MB of HLO text instead of 2.2 MB).
    """

    model: LoadedModel
    qcfg: QuantConfig
    intercept: Optional[Callable] = None
    state: Any = None

    def describe(self) -> dict:
        """The `quantization` entry of a results file."""
        return {"name": self.qcfg.name, **self.qcfg.to_dict()}


def quantize_model(
    model: LoadedModel, qcfg: QuantConfig, calibration: Optional[Calibration] = None
) -> QuantizedModel:
    """Applies `qcfg` to `model` with the ranges (and scales) of `calibration`.

    Raises:
      ValueError: activation quantization without a calibration, or a SmoothQuant preset
        with a calibration that holds no scales.
    """
    if qcfg.act_bits and calibration is None:
        raise ValueError("activation quantization needs calibrated ranges")
    params = model.params
    if qcfg.smoothquant:
        if calibration is None or calibration.smoothing is None:
            raise ValueError(f"{qcfg.name} needs the SmoothQuant scales from its calibration")
        params = smoothquant.apply_smoothing(model.config, params, calibration.smoothing)
    quantized = LoadedModel(
        model.config, fakequant.quantize_params(params, qcfg), model.tokenizer_dir, model.source
    )
    intercept, state = None, None
    if 2 <= qcfg.act_bits <= 8 and 2 <= qcfg.weight_bits <= 8:
        state = int8.int8_kernels(params, qcfg)
        ranges = calibration.ranges

        def intercept(kernels):
            return int8.integer_dense_interceptor(kernels, ranges, qcfg, model.config, real=qcfg.real_int8)

    elif qcfg.act_bits:
        ranges = calibration.ranges

        def intercept(_):
            return fakequant.activation_interceptor(ranges, qcfg, model.config)

    return QuantizedModel(quantized, qcfg, intercept, state)


def prepare_calibration(
    model: LoadedModel,
    qcfg: QuantConfig,
    load_clips: Callable[[], list[np.ndarray]],
    batch_size: int,
    path: Path,
    reuse: bool = True,
    meta: Optional[dict] = None,
) -> Optional[Calibration]:
    """The calibration `qcfg` needs (None for weight-only presets), read from `path` when
    `reuse` and it exists, else calibrated on `load_clips()` and saved to `path` (by process
    0: every process calibrates on the same clips).

    Raises:
      ValueError: an unreadable file at `path`, or one without the scales `qcfg` needs.
    """
    if not qcfg.act_bits:
        return None
    path = Path(path)
    if reuse and path.exists():
        log.info("reusing calibrated ranges from %s", path)
        calibration = Calibration.load(path)
        calibration.check(qcfg, str(path))
        return calibration
    clips = load_clips()
    meta = {"model": model.source, "clips": len(clips), **(meta or {}), "estimator": calibration_key(qcfg)}
    calibration = calibrate_on_audio(model, clips, qcfg, batch_size, meta)
    if jax.process_index() == 0:
        calibration.save(path)
    return calibration
