"""Fit the music detector: the AudioSet ear's music-evidence logits -> the probability that a window is music.

The genre layer only ever sees music, so it cannot say when its input is not. The AudioSet ear
can: it was trained to tell music from speech, silence, noise and test tones. A logistic
regression over its :data:`~genrewiz.mn04.MUSIC_CLASSES` logits is fitted on the training
views' windows (music, as the ear heard each view: clean, or an arrival variant where the
recipe's ``ear_arrivals`` let it hear them) against
generated sounds that are not music (:mod:`train.nonmusic`), with both sides weighted equally,
and written into the model (:attr:`genrewiz.audioset.AudioSetBranch.music`), so every engine
and the exported graph give the same probability.
"""

from __future__ import annotations

import logging

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression

from genrewiz.features import audioset_log_mel, audioset_windows
from genrewiz.model import PCRNN
from train import nonmusic

logger = logging.getLogger("train")

NONMUSIC_EACH = 24
"""Generated clips of each kind of non-music the detector is fitted on."""


def evidence(model: PCRNN, summaries: np.ndarray) -> np.ndarray:
    """``(n, patches, summary)`` ear summaries -> ``(n, evidence)`` window means of the music-evidence logits."""
    with torch.inference_mode():
        return model.ear.split(torch.from_numpy(summaries))[2].numpy()


def nonmusic_summaries(model: PCRNN, seed: int, n_each: int = NONMUSIC_EACH) -> tuple[np.ndarray, list[str]]:
    """The ear's summaries of one window of each generated non-music clip, and each clip's kind."""
    ear = model.audioset_features
    window = model.features.window_seconds
    out, kinds = [], []
    for kind, y in nonmusic.examples(n_each, ear.sample_rate, seed):
        patches = audioset_windows(audioset_log_mel(y, ear), np.zeros(1), window, ear)
        with torch.inference_mode():
            out.append(model.ear.patch_summaries(torch.from_numpy(patches[0])).numpy()[None])
        kinds.append(kind)
    return np.concatenate(out), kinds


def fit(model: PCRNN, music: np.ndarray, seed: int = 0, n_each: int = NONMUSIC_EACH) -> dict:
    """Fit :attr:`~genrewiz.audioset.AudioSetBranch.music` on music windows' ear summaries ``(n, patches, summary)`` in place.

    Returns what was fitted on and how well it separates the two sides (on the same windows).
    """
    negative, kinds = nonmusic_summaries(model, seed, n_each)
    x = np.concatenate([evidence(model, music), evidence(model, negative)])
    y = np.concatenate([np.ones(len(music)), np.zeros(len(negative))])
    regression = LogisticRegression(C=1.0, class_weight="balanced", max_iter=2000).fit(x, y)
    with torch.no_grad():
        model.ear.music.weight.copy_(torch.from_numpy(regression.coef_.astype(np.float32)))
        model.ear.music.bias.copy_(torch.from_numpy(regression.intercept_.astype(np.float32)))
    p = regression.predict_proba(x)[:, 1]
    flagged_music = float((p[: len(music)] < 0.5).mean())
    passed = {k: float((p[len(music):][np.array(kinds) == k] >= 0.5).mean()) for k in sorted(set(kinds))}
    logger.info("music detector: %d music windows, %d generated non-music (%s); music windows called non-music %.1f%%",
                len(music), len(negative), ", ".join(sorted(set(kinds))), 100 * flagged_music)
    return {"music_windows": len(music), "nonmusic_clips": len(negative), "nonmusic_kinds": sorted(set(kinds)),
            "music_called_nonmusic": flagged_music, "nonmusic_called_music": passed}
