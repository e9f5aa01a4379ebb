"""Where the `"chunked"` long-form mode cuts a recording: at its quietest moments.

No VAD model: the frame of lowest smoothed log-mel energy in each 20-30 s stretch, so that
chunks of at most 30 s end in pauses rather than inside words.
"""

from __future__ import annotations

import numpy as np

from jaxwhisper.data.features import N_FRAMES


def quiet_cuts(
    features: np.ndarray, max_frames: int = N_FRAMES, min_frames: int = 2000, smooth: int = 20
) -> list[int]:
    """Frames at which to cut a recording into chunks of at most `max_frames` content frames.

    Each chunk ends at the quietest frame of the stretch `[start + min_frames, start +
    max_frames]`: the lowest mean log-mel over the mel bins, averaged over `smooth` frames
    (0.2 s) so that a short gap between two syllables does not beat a pause between sentences.

    Args:
      features: log-mel [n_mels, content frames + 1] (`log_mel_recording`).
      max_frames: longest chunk (3000 = one 30 s window).
      min_frames: shortest chunk other than the last.
      smooth: frames of the moving average.

    Returns:
      Frame indices `0 = c_0 < c_1 < ... < c_k = content` (`[0, 0]` for an empty recording);
      chunk i is `[c_i, c_{i+1})`.
    """
    content = features.shape[-1] - 1
    if not 0 < min_frames <= max_frames:
        raise ValueError(f"need 0 < min_frames <= max_frames, got {min_frames}, {max_frames}")
    if content <= max_frames:
        return [0, content]
    energy = features[:, :content].mean(axis=0)
    kernel = np.ones(smooth) / smooth
    smoothed = np.convolve(
        np.pad(energy, (smooth // 2, smooth - 1 - smooth // 2), mode="edge"), kernel, "valid"
    )
    cuts = [0]
    while content - cuts[-1] > max_frames:
        lo, hi = cuts[-1] + min_frames, cuts[-1] + max_frames
        cuts.append(lo + int(np.argmin(smoothed[lo : hi + 1])))
    return cuts + [content]
