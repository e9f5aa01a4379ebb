"""Outlier statistics of the real tiny.en against the same statistics computed with PyTorch
forward hooks on transformers' Whisper holding the same converted weights (numpy formulas on
the hooked tensors)."""

import numpy as np
import pytest

from jaxwhisper.analysis import outliers
from jaxwhisper.data.eval_sets import load_eval_set
from jaxwhisper.inference.teacher_forcing import forced_batches
from jaxwhisper.models.weights.ct2 import load_ct2
from jaxwhisper.models.weights.hf import config_to_hf
from jaxwhisper.models.weights.resolve import bundled_model_files

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

pytestmark = [pytest.mark.parity, pytest.mark.slow]


def _np_stats(x, mask):
    """x [b, n, d] float64, mask [b, n]: per-sample kurtosis, inf-norm; 6-sigma counts per dim."""
    kurt, inf, counts = [], [], 0
    for xi, mi in zip(x, mask):
        v = xi[mi > 0]
        c = v - v.mean()
        kurt.append((c**4).mean() / (c**2).mean() ** 2)
        inf.append(np.abs(v).max())
        counts = counts + (np.abs(c) > 6 * v.std()).sum(0)
    return kurt, inf, counts


def test_against_pytorch_forward_hooks(tiny_en, fixture_manifest):
    clips = load_eval_set(str(fixture_manifest), 4).clips
    batches = forced_batches(tiny_en, clips, batch_size=4)
    ours = outliers.analyze(tiny_en.config, tiny_en.params, batches)

    config, sd = load_ct2(bundled_model_files("tiny.en")[0])
    model = transformers.WhisperForConditionalGeneration(transformers.WhisperConfig(**config_to_hf(config)))
    # The converted state dict is the WhisperModel's (no "model." prefix; proj_out is tied).
    model.model.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in sd.items()}, strict=True)
    model.eval()
    captured = {}

    def hook(name):
        def fn(module, args, output):
            out = output[0] if isinstance(output, tuple) else output
            captured[name] = out.detach().double().numpy()

        return fn

    for side, layers in (("encoder", model.model.encoder.layers), ("decoder", model.model.decoder.layers)):
        for i, layer in enumerate(layers):
            layer.self_attn.register_forward_hook(hook(f"{side}/layers_{i}/self_attn/out"))
            layer.register_forward_hook(hook(f"{side}/layers_{i}/block_out"))
            if side == "decoder":
                layer.encoder_attn.register_forward_hook(hook(f"{side}/layers_{i}/encoder_attn/out"))
    batch = batches[0]
    with torch.no_grad():
        model(
            input_features=torch.from_numpy(np.array(batch.mel)),
            decoder_input_ids=torch.from_numpy(batch.tokens.astype(np.int64)),
        )
    assert len(captured) == len(ours["layers"]) == 4 * 2 + 4 * 3
    for point, x in captured.items():
        mask = batch.encoder_mask if point.startswith("encoder") else batch.decoder_mask
        kurt, inf, counts = _np_stats(x, mask)
        got = ours["layers"][point]
        # Two f32 forwards with different kernels (XLA vs PyTorch) through 4+4 layers differ
        # in the last bits of every value, and the 4th moment amplifies them: hence 2e-3.
        np.testing.assert_allclose(got["kurtosis"], np.mean(kurt), rtol=2e-3, err_msg=point)
        np.testing.assert_allclose(got["inf_norm"], np.mean(inf), rtol=2e-3, err_msg=point)
        # A value within float rounding of the 6-sigma threshold may fall either side.
        assert np.abs(np.asarray(got["outliers_per_dim"]) - counts).sum() <= max(2, 0.01 * counts.sum()), (
            point
        )
