"""The long-form slot engine on devices: windows joining a running batch."""

import pytest

from jaxwhisper.data.audio import load_audio
from jaxwhisper.inference.inputs import read_manifest
from jaxwhisper.inference.transcribe import Transcriber

pytestmark = pytest.mark.slow


def test_windows_joining_a_running_batch_decode_as_each_window_alone(tiny_en, fixture_manifest):
    """The long-form slot engine on 2 devices, two slots each (accelerators' layout), and on
    CPU's (4 slots on one device, windows prepared on both): 7 windows of real speech, a
    slot refilled as soon as its window ends, so windows run at different positions side by
    side. Each window's tokens, log-prob sum and no-speech probability are those of the
    window decoded alone (beside an empty row: the same per-device shapes), bit for bit."""
    import jax
    import numpy as np

    from jaxwhisper.data.features import log_mel_recording
    from jaxwhisper.inference.longform import window_features
    from jaxwhisper.inference.windows import make_segment_decoder

    rows = [u for u in read_manifest(fixture_manifest) if "arctic" in u.id or "sonnet" in u.id][:7]
    mels = [window_features(log_mel_recording(load_audio(u.audio), 80), 0)[0] for u in rows]

    def run(slots):
        queue, results, joined_running, held = list(range(len(mels))), {}, 0, {}
        while queue or held:
            n = min(slots.free(), len(queue))
            if n:
                joined_running += bool(held)
                items = [(mels[i], 0.0, 0) for i in queue[:n]]
                held.update(zip(slots.admit(items), queue[:n]))
                queue = queue[n:]
            for window, tokens, sum_lp, no_speech in slots.advance():
                results[held.pop(window)] = (tokens, sum_lp, no_speech)
        # Windows did join a running batch: taken while others were held, and (7 windows
        # for 4 slots, ending at different steps) placed in a slot freed mid-run.
        assert joined_running >= 1
        ends = [int(np.argmax(r[0] == t.tokenizer.eot)) for r in results.values()]
        assert len(set(ends)) >= 4, ends
        return results

    t = Transcriber(tiny_en, batch_size=4, devices=jax.local_devices()[:2])
    # CPU: the slots on one device, windows prepared on the other one too.
    cpu_default = Transcriber(tiny_en, batch_size=4, devices=jax.local_devices()[:2])
    on_cpu = cpu_default._window_engine(timestamps=True)
    assert on_cpu.devices == 1 and on_cpu.helper == jax.local_devices()[1]
    prepared_on = []
    prepare_on = on_cpu._prepare_on
    on_cpu._prepare_on = lambda device, item: prepared_on.append(device) or prepare_on(device, item)
    helped = run(on_cpu)
    assert set(prepared_on) == set(jax.local_devices()[:2])

    t._slot_mesh, t._slot_rows = t.mesh, t._rows  # accelerators' layout: slots on every device
    slots = t._window_engine(timestamps=True)
    assert slots.devices == 2 and slots.helper is None
    results = run(slots)

    alone = make_segment_decoder(t.config, t.segment_options(True))
    for i, mel in enumerate(mels):
        # beside empty rows: the per-device shapes of each engine (2 and 4 slots)
        for rows, got in ((2, results[i]), (4, helped[i])):
            batch = np.stack([mel] + [np.zeros_like(mel)] * (rows - 1))
            valid = np.arange(rows) == 0
            tokens, sum_lp, no_speech = jax.device_get(alone(t.params, batch, valid))
            assert np.array_equal(got[0], tokens[0]), (i, rows)
            assert (got[1], got[2]) == (float(sum_lp[0]), float(no_speech[0])), (i, rows)
