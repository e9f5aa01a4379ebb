"""Validation during training: greedy WER (percent) of the student on each validation set."""

from __future__ import annotations

import jax
import numpy as np

from jaxwhisper.data.eval_sets import load_eval_set
from jaxwhisper.evaluation.evaluate import evaluate_set
from jaxwhisper.inference.transcribe import Transcriber
from jaxwhisper.models.weights.base import LoadedModel
from jaxwhisper.train import checkpointing


class Validator:
    """WER of the student on each validation spec (`eval/wer/NAME`) and their mean
    (`checkpointing.WER_KEY`, which selects the best checkpoints).

    The validation audio is read and the decoder compiled once; each call only swaps in the
    current params. Each process decodes its share of every set; counts are summed over hosts.
    """

    def __init__(self, student: LoadedModel, specs, batch_size: int, max_examples: int = 0, sources=None):
        self.transcriber = Transcriber(student, batch_size=batch_size)
        pi, pc = jax.process_index(), jax.process_count()
        sources = sources or [None] * len(specs)  # parsed already (checked before the run)
        self.sets = [load_eval_set(s, max_examples, pi, pc, src) for s, src in zip(specs, sources)]

    def __call__(self, params) -> dict:
        self.transcriber.set_params(params)
        out = {f"eval/wer/{s.name}": evaluate_set(self.transcriber, s)["wer"] for s in self.sets}
        out = {k: float("nan") if v is None else v for k, v in out.items()}  # no scored word
        out[checkpointing.WER_KEY] = float(np.mean(list(out.values())))
        return out
