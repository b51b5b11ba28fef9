"""Augmentations that let an ~85k-parameter model learn from a few hundred clips without memorising them.

Each is switchable from the command line and draws from a seeded NumPy generator, so a run is
repeatable: random time crops and circular shifts (a window can start anywhere in a song),
SpecAugment-style time/frequency masking (no single band or moment can decide the genre), and
mixup (soft targets between two clips, which smooths the decision boundary).
"""

from __future__ import annotations

import numpy as np
import torch

from genrewiz.features import FeatureConfig, loop_to_window, normalize


def crop(mel: np.ndarray, config: FeatureConfig, rng: np.random.Generator | None) -> np.ndarray:
    """One normalised ``(window_frames, n_mels)`` window from a log-mel spectrogram.

    With ``rng`` the song is rolled by a random offset and cropped at a random start; without,
    the first window is taken, as :func:`genrewiz.features.make_windows` would. A song shorter
    than a window is looped, as the predictor does.
    """
    if rng is None:
        return view(mel, config, 0)
    frames = config.window_frames
    mel = loop_to_window(mel, config)
    mel = np.roll(mel, int(rng.integers(len(mel))), axis=0)
    start = int(rng.integers(len(mel) - frames + 1))
    return normalize(mel[start : start + frames], config)


def view(mel: np.ndarray, config: FeatureConfig, shift: int) -> np.ndarray:
    """The first normalised window of a spectrogram rolled by ``shift`` frames (looped if short).

    A fixed set of shifts gives the fixed training views whose frozen-branch outputs are cached.
    """
    mel = loop_to_window(mel, config)
    return normalize(np.roll(mel, shift, axis=0)[: config.window_frames], config)


def spec_augment(
    batch: torch.Tensor,
    rng: np.random.Generator,
    time_masks: int = 2,
    time_width: int = 48,
    freq_masks: int = 2,
    freq_width: int = 16,
) -> torch.Tensor:
    """Mask random time and mel bands of ``(batch, 1, frames, n_mels)`` windows with each window's mean.

    The mean, rather than zero or silence, keeps the masked band inside the range the model sees.
    """
    batch = batch.clone()
    _, _, frames, mels = batch.shape
    for window in batch:
        fill = window.mean()
        for _ in range(time_masks):
            width = int(rng.integers(time_width + 1))
            start = int(rng.integers(max(frames - width, 0) + 1))
            window[:, start : start + width, :] = fill
        for _ in range(freq_masks):
            width = int(rng.integers(freq_width + 1))
            start = int(rng.integers(max(mels - width, 0) + 1))
            window[:, :, start : start + width] = fill
    return batch


def mixup(
    inputs: list[torch.Tensor], targets: torch.Tensor, alpha: float, rng: np.random.Generator
) -> tuple[list[torch.Tensor], torch.Tensor]:
    """Blend each example (every tensor of ``inputs``) and its one-hot target with another from the batch.

    The weight is drawn from Beta(alpha, alpha); all ``inputs`` (windows, cached branch features)
    are mixed with the same partner and weight, so they stay one consistent example.
    """
    lam = float(rng.beta(alpha, alpha))
    order = torch.from_numpy(rng.permutation(len(targets))).to(targets.device)
    return [lam * t + (1 - lam) * t[order] for t in inputs], lam * targets + (1 - lam) * targets[order]
