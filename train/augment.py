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


def crop(mel_db: np.ndarray, config: FeatureConfig, rng: np.random.Generator | None) -> np.ndarray:
    """One normalised ``(window_frames, n_mels)`` window from a dB spectrogram.

    With ``rng`` the song is rolled by a random offset and cropped at a random start; without,
    the first window is taken, as :func:`genrewiz.features.make_windows` would. A song shorter
    than a window is looped, as the predictor does.
    """
    frames = config.window_frames
    mel_db = loop_to_window(mel_db, config)
    if rng is None:
        return normalize(mel_db[:frames], config)
    mel_db = np.roll(mel_db, int(rng.integers(len(mel_db))), axis=0)
    start = int(rng.integers(len(mel_db) - frames + 1))
    return normalize(mel_db[start : start + frames], config)


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
    batch: torch.Tensor, targets: torch.Tensor, alpha: float, rng: np.random.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """Blend each window and its one-hot target with another from the batch, weight ~ Beta(alpha, alpha)."""
    lam = float(rng.beta(alpha, alpha))
    order = torch.from_numpy(rng.permutation(len(batch))).to(batch.device)
    return lam * batch + (1 - lam) * batch[order], lam * targets + (1 - lam) * targets[order]
