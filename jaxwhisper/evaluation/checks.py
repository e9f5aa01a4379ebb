"""What an evaluation reads and writes, checked before a model is loaded or audio decoded
(`jaxwhisper evaluate`, `quantize.py`). Imports no JAX: a refused argument costs well under a
second, not an import of the whole stack."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Optional

from jaxwhisper.data.examples import Source
from jaxwhisper.data.preflight import (
    PreflightError,
    check_output_dir,
    check_output_file,
    check_unique_ids,
    check_unique_names,
    spec_files,
)
from jaxwhisper.data.sources import parse_spec
from jaxwhisper.quant.config import QuantConfig, preset


def hypotheses_dir(output: Path) -> Path:
    """Where `evaluate_model` writes the hypotheses of the results file `output`."""
    return Path(output).parent / f"{Path(output).stem}.hypotheses"


def check_evaluation(
    data: list[str],
    output: Path,
    calibration: Optional[str] = None,
    ranges: Optional[Path] = None,
    ranges_output: Optional[Path] = None,
) -> list[Source]:
    """Checks the specs and outputs of an evaluation.

    Args:
      data: the evaluation sets' specs.
      output: the results file; its hypotheses go beside it.
      calibration: the calibration set's spec, when one will be read.
      ranges: a ranges file to reuse (must exist), when given.
      ranges_output: where new ranges will be written, when they will be.

    Returns:
      The parsed sources of `data`, in order (for `load_eval_set(..., source=)`).

    Raises:
      ValueError: a data spec that names nothing readable, two sets of one name, duplicate
        ids in a set, a missing `ranges` file, or an output that is an input or cannot be
        written.
    """
    sources = [parse_spec(spec) for spec in data]
    check_unique_names(data, sources)
    for src in sources:
        check_unique_ids(src)
    inputs = [f for spec in data for f in spec_files(spec)]
    if calibration is not None:
        parse_spec(calibration)
        inputs += spec_files(calibration)
    if ranges is not None:
        if not Path(ranges).is_file():
            raise PreflightError(f"--ranges {ranges}: no such file")
        inputs.append(Path(ranges))
    check_output_file(output, inputs, "--output")
    check_output_dir(hypotheses_dir(output), inputs, "hypotheses folder")
    if ranges_output is not None:
        check_output_file(ranges_output, inputs, "ranges file")
    return sources


@dataclasses.dataclass(frozen=True)
class EvaluationPlan:
    """What `jaxwhisper evaluate` will read and write, checked.

    Attributes:
      sources: the parsed evaluation sets, in order.
      quant: the quantization preset (with its calibration batches), None for float.
      ranges: the ranges file read (`reuse_ranges`) or written by calibration; None without
        quantization.
      reuse_ranges: whether `ranges` is an earlier calibration's file to read.
    """

    sources: list[Source]
    quant: Optional[QuantConfig] = None
    ranges: Optional[Path] = None
    reuse_ranges: bool = False


def plan_evaluation(
    data: list[str],
    output: Path,
    quantize: Optional[str] = None,
    calibration: Optional[str] = None,
    calibration_batches: int = 16,
    ranges: Optional[str] = None,
) -> EvaluationPlan:
    """Checks an evaluation's arguments together (`check_evaluation` for specs and outputs).

    Args:
      data: the evaluation sets' specs.
      output: the results file.
      quantize: a preset name (`quant/config.py`), or None for the float model.
      calibration: the calibration set's spec.
      calibration_batches: batches of the calibration set.
      ranges: a ranges file of an earlier calibration, reused instead of calibrating.

    Raises:
      ValueError: an unknown preset, an activation preset with neither calibration set nor
        ranges file, a calibration set that is also evaluated, or what `check_evaluation`
        refuses.
    """
    output = Path(output)
    qcfg = None
    if quantize:
        qcfg = dataclasses.replace(preset(quantize), calibration_batches=calibration_batches)
        if qcfg.act_bits and not ranges:
            if not calibration:
                raise PreflightError(
                    f"--quantize {quantize} quantizes activations: give --calibration SPEC or --ranges FILE"
                )
            if calibration in data:
                raise PreflightError(f"--calibration {calibration} is also an evaluation set")
    calibrates = qcfg is not None and bool(qcfg.act_bits) and not ranges
    written = output.with_suffix(".ranges.json")
    sources = check_evaluation(
        data,
        output,
        calibration if calibrates else None,
        Path(ranges) if qcfg is not None and ranges else None,
        written if calibrates else None,
    )
    if qcfg is None:
        return EvaluationPlan(sources)
    return EvaluationPlan(sources, qcfg, Path(ranges) if ranges else written, bool(ranges))
