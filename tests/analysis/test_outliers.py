"""Outlier analysis through the model's taps: against numpy/scipy on the same tensors taken
from the sow points, with padding masked; gate histograms; the attention figure's data; the
`jaxwhisper outliers` job on real speech."""

import json

import flax.traverse_util
import jax
import numpy as np
import pytest
import scipy.stats

from jaxwhisper.analysis import outliers
from jaxwhisper.inference.teacher_forcing import ForcedBatch
from jaxwhisper.models.config import WhisperConfig
from jaxwhisper.models.whisper import Whisper, init_params

CFG = WhisperConfig(
    n_audio_ctx=32, n_text_ctx=16, n_vocab=96, d_model=32, n_heads=4, encoder_layers=2,
    decoder_layers=2, ffn_dim=64, gate="shared",
)  # fmt: skip


@pytest.fixture(scope="module")
def params():
    return init_params(CFG, jax.random.PRNGKey(0))


def _batch(seed, b=3, n=7):
    rng = np.random.default_rng(seed)
    enc = np.zeros((b, CFG.n_audio_ctx), np.float32)
    dec = np.zeros((b, n), np.float32)
    for i, (e, d) in enumerate(zip(rng.integers(5, CFG.n_audio_ctx + 1, b), rng.integers(2, n + 1, b))):
        enc[i, :e], dec[i, :d] = 1, 1
    mel = rng.normal(size=(b, 80, 2 * CFG.n_audio_ctx)).astype(np.float32)
    mel[:, :, 50:] += 4.0 * rng.normal(size=(b, 80, 2 * CFG.n_audio_ctx - 50))  # loud "padding"
    tokens = rng.integers(0, CFG.n_vocab, size=(b, n)).astype(np.int32)
    return ForcedBatch(mel, tokens, enc, dec, [""] * b)


def _reference(params, batches, point):
    """scipy/numpy statistics of one point over the batches, unmasked values only."""
    path = tuple(point.split("/"))
    kurt, inf, counts = [], [], 0
    for batch in batches:
        _, cols = Whisper(CFG).apply({"params": params}, batch.mel, batch.tokens, mutable=["intermediates"])
        x = np.asarray(flax.traverse_util.flatten_dict(cols["intermediates"])[path][0], np.float64)
        mask = batch.encoder_mask if point.startswith("encoder") else batch.decoder_mask
        for xi, mi in zip(x, mask):
            v = xi[mi > 0]  # [positions, hidden]
            kurt.append(scipy.stats.kurtosis(v.reshape(-1), fisher=False, bias=True))
            inf.append(np.abs(v).max())
            counts = counts + (np.abs(v - v.mean()) > 6 * v.std()).sum(0)
    return np.mean(kurt), np.mean(inf), np.max(inf), counts


def test_statistics_match_scipy_on_the_tapped_tensors(params):
    batches = [_batch(1), _batch(2)]
    result = outliers.analyze(CFG, params, batches)
    assert result["padding"] == "excluded" and result["utterances"] == 6
    assert set(outliers.attention_points(CFG)) <= set(result["layers"])
    for point in ("encoder/layers_1/self_attn/out", "encoder/layers_0/block_out",
                  "decoder/layers_1/self_attn/out", "decoder/layers_0/encoder_attn/out"):  # fmt: skip
        k, inf, max_inf, counts = _reference(params, batches, point)
        got = result["layers"][point]
        np.testing.assert_allclose(got["kurtosis"], k, rtol=1e-4)
        np.testing.assert_allclose(got["inf_norm"], inf, rtol=1e-5)
        np.testing.assert_allclose(got["max_inf_norm"], max_inf, rtol=1e-5)
        np.testing.assert_array_equal(got["outliers_per_dim"], counts)
    attn = [result["layers"][p] for p in outliers.attention_points(CFG)]
    assert result["summary"]["avg_kurtosis"] == pytest.approx(np.mean([s["kurtosis"] for s in attn]))
    assert result["summary"]["max_inf_norm"] == pytest.approx(max(s["inf_norm"] for s in attn))


def test_padding_is_excluded_unless_asked(params):
    batches = [_batch(3)]
    excluded = outliers.analyze(CFG, params, batches)
    included = outliers.analyze(CFG, params, batches, include_padding=True)
    assert included["padding"] == "included"
    point = "encoder/layers_1/block_out"
    assert excluded["layers"][point]["kurtosis"] != pytest.approx(included["layers"][point]["kurtosis"])
    full = ForcedBatch(*batches[0][:2], np.ones_like(batches[0].encoder_mask),
                       np.ones_like(batches[0].decoder_mask), batches[0].texts)  # fmt: skip
    k, *_ = _reference(params, [full], point)
    np.testing.assert_allclose(included["layers"][point]["kurtosis"], k, rtol=1e-4)


def test_gate_histograms_count_unpadded_gate_values(params):
    batch = _batch(4)
    result = outliers.analyze(CFG, params, [batch])
    _, cols = Whisper(CFG).apply({"params": params}, batch.mel, batch.tokens, mutable=["intermediates"])
    flat = flax.traverse_util.flatten_dict(cols["intermediates"])
    for point, hist in result["gates"].items():
        g = np.asarray(flat[tuple(point.split("/"))][0])[..., 0]  # [b, q]
        mask = batch.encoder_mask if point.startswith("encoder") else batch.decoder_mask
        ref, _ = np.histogram(g[mask > 0], bins=np.asarray(hist["edges"]))
        np.testing.assert_array_equal(hist["counts"], ref)
        assert hist["mean"] == pytest.approx(g[mask > 0].mean(), rel=1e-5)
    assert len(result["gates"]) == CFG.encoder_layers + 2 * CFG.decoder_layers


def test_attention_example_is_probs_times_values(params):
    batch = _batch(5)
    ex = outliers.attention_example(CFG, params, batch, layer=1, head=2, row=1)
    n = int(batch.decoder_mask[1].sum())
    assert ex["probs"].shape == (n, n) and ex["values"].shape == (n, CFG.head_dim)
    np.testing.assert_allclose(ex["probs"].sum(-1), 1.0, rtol=1e-5)
    assert np.all(np.triu(ex["probs"], 1) == 0)  # causal
    np.testing.assert_allclose(ex["output"], ex["probs"] @ ex["values"], rtol=1e-6)
    with pytest.raises(ValueError, match="out of range"):
        outliers.attention_example(CFG, params, batch, layer=2, head=0, row=0)


@pytest.mark.slow
def test_outliers_command_on_real_speech(fixture_manifest, tmp_path):
    from jaxwhisper.cli import main

    out = tmp_path / "o"
    assert main(["outliers", "--model", "tiny.en", "--data", str(fixture_manifest), "--max-examples", "4",
                 "--batch-size", "2", "--output", str(out)]) == 0  # fmt: skip
    r = json.loads((out / "outliers.json").read_text())
    assert r["utterances"] == 4 and r["model"] == "tiny.en" and r["padding"] == "excluded"
    assert {"avg_kurtosis", "max_inf_norm"} <= set(r["summary"])
    assert len(r["layers"]["decoder/layers_3/self_attn/out"]["outliers_per_dim"]) == 384
    for name in ("outlier_share", "attention", "kurtosis"):
        assert (out / f"{name}.png").stat().st_size > 1000
        assert json.loads((out / f"{name}.json").read_text())
    assert not (out / "gates.png").exists()  # tiny.en has no gates
    assert "| tiny.en | no |" in (out / "table.md").read_text()
    assert main(["outliers", "--data", str(tmp_path / "missing.jsonl"), "--output", str(out)]) == 2
