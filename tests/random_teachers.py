"""Small random teachers for the training tests (real tiny.en tokenizer, random weights) and
the real clips they train on."""

import json
from pathlib import Path

import jax

from jaxwhisper.models.config import WhisperConfig
from jaxwhisper.models.weights.base import LoadedModel
from jaxwhisper.models.weights.native import save_checkpoint
from jaxwhisper.models.weights.resolve import bundled_model_files
from jaxwhisper.models.whisper import init_params

# n_text_ctx 64: greedy decoding of the random students stops within 32 tokens (test time).
# n_audio_ctx 250: a 5 s window (batches, features and decoding follow the model's window),
# enough for the training clips (at most 4.1 s); 1500 positions made every step 2x dearer.
SMALL = WhisperConfig(
    n_vocab=51864,
    n_audio_ctx=250,
    n_text_ctx=64,
    d_model=64,
    n_heads=4,
    encoder_layers=2,
    decoder_layers=2,
    ffn_dim=128,
)


def save_random_teacher(path: Path, config: WhisperConfig = SMALL) -> Path:
    """A jaxwhisper checkpoint of `config` with random weights (seed 0) at `path`."""
    _, tok = bundled_model_files("tiny.en")
    save_checkpoint(LoadedModel(config, init_params(config, jax.random.PRNGKey(0)), tok, "random"), path)
    return path


def write_training_clips(fixture_manifest: Path, path: Path) -> Path:
    """A manifest at `path` of 8 short fixture clips (arctic and sonnet, 2.5-4.1 s)."""
    rows = [
        json.loads(x) for x in fixture_manifest.read_text().splitlines() if "arctic" in x or "sonnet" in x
    ][:8]
    for r in rows:
        r["audio"] = str(fixture_manifest.parent / r["audio"])
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path
