"""A scripted `SlotEngine` for the long-form bookkeeping tests: `run(mel [rows, n_mels,
frames], valid [rows], temperature [rows], seed [rows]) -> (tokens, sum_logprob,
no_speech_prob)` decodes every held window at each `advance`, so all of them end together."""

import numpy as np


class BatchSlots:
    def __init__(self, run, rows: int, n_mels: int = 2, frames: int = 3000):
        self.run, self.rows, self.n_mels, self.frames = run, rows, n_mels, frames
        self.held: dict[int, tuple] = {}

    def free(self) -> int:
        return self.rows - len(self.held)

    def admit(self, items):
        assert len(items) <= self.free()
        slots = [s for s in range(self.rows) if s not in self.held][: len(items)]
        self.held.update(zip(slots, items))
        return slots

    def advance(self):
        if not self.held:
            return []
        mel = np.zeros((self.rows, self.n_mels, self.frames), np.float32)
        temperature = np.zeros((self.rows,), np.float32)
        seed = np.zeros((self.rows,), np.int32)
        for s, (m, t, sd) in self.held.items():
            mel[s], temperature[s], seed[s] = m, t, sd
        valid = np.isin(np.arange(self.rows), list(self.held))
        tokens, sum_lp, no_speech = self.run(mel, valid, temperature, seed)
        ended = sorted(self.held)
        self.held = {}
        return [(s, np.asarray(tokens)[s], float(sum_lp[s]), float(no_speech[s])) for s in ended]
