"""Values taken from inside a Whisper forward pass in tests."""

import flax.linen as nn

from jaxwhisper.models.whisper import Whisper


def decoder_final_layer_norm(config, params, mel, tokens):
    """The decoder's final LayerNorm output [batch, len, embed] (what the tied output
    projection reads) of a plain forward pass of `Whisper(config)`."""
    captured = {}

    def grab(next_fun, args, kwargs, context):
        out = next_fun(*args, **kwargs)
        if context.method_name == "__call__" and context.module.path == ("decoder", "layer_norm"):
            captured["ln"] = out
        return out

    with nn.intercept_methods(grab):
        Whisper(config).apply({"params": params}, mel, tokens)
    return captured["ln"]
