"""Equal-output speed-ups: each fast path is checked against the formulation it replaces."""

from __future__ import annotations

from pathlib import Path

import librosa
import numpy as np
import pytest

from genrewiz.audio import load_audio
from genrewiz.features import FeatureConfig, log_mel, mel_filterbank, mel_frequencies, to_db
from genrewiz.musicnn import MUSICNN_FEATURES
from synthetic import synth_clip

EXAMPLES = sorted((Path(__file__).resolve().parents[1] / "examples").glob("*.ogg"))
CONFIGS = {"scratch": FeatureConfig(), "musicnn": MUSICNN_FEATURES, "fmin_fmax": FeatureConfig(fmin=30.0, fmax=8000.0, n_mels=64)}


def librosa_log_mel(waveform: np.ndarray, config: FeatureConfig) -> np.ndarray:
    """The librosa formulation ``log_mel`` had before it was written out in numpy."""
    mel = librosa.feature.melspectrogram(
        y=np.ascontiguousarray(waveform, dtype=np.float32), sr=config.sample_rate, n_fft=config.n_fft,
        hop_length=config.hop_length, n_mels=config.n_mels, fmin=config.fmin, fmax=config.fmax, power=2.0,
    ).astype(np.float32)
    if config.scale == "logc":
        compressed = np.log10(np.float32(1.0) + np.float32(10_000.0) * mel)
    else:
        compressed = librosa.power_to_db(mel, ref=np.max, top_db=config.top_db)
    return np.ascontiguousarray(compressed.T, dtype=np.float32)


@pytest.mark.parametrize("name", CONFIGS)
def test_mel_filterbank_is_librosas(name):
    c = CONFIGS[name]
    expected = librosa.filters.mel(sr=c.sample_rate, n_fft=c.n_fft, n_mels=c.n_mels, fmin=c.fmin, fmax=c.fmax)
    np.testing.assert_allclose(mel_filterbank(c.sample_rate, c.n_fft, c.n_mels, c.fmin, c.fmax), expected, rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(mel_frequencies(c.n_mels, c.fmin, c.fmax or c.sample_rate / 2),
                               librosa.mel_frequencies(n_mels=c.n_mels, fmin=c.fmin, fmax=c.fmax or c.sample_rate / 2), rtol=1e-12)


@pytest.mark.parametrize("name", CONFIGS)
def test_log_mel_equals_librosa_on_real_and_generated_audio(name):
    config = CONFIGS[name]
    clips = [load_audio(path, config.sample_rate).samples for path in EXAMPLES[:3]]
    clips += [synth_clip(style, seconds, config.sample_rate, seed=i)
              for i, (style, seconds) in enumerate((("hihat", 1.0), ("chirp", 7.3), ("pad", 95.0)))]
    assert clips, "no audio to compare on"
    for waveform in clips:
        fast, reference = log_mel(waveform, config), librosa_log_mel(waveform, config)
        assert fast.shape == reference.shape and fast.dtype == np.float32
        np.testing.assert_allclose(fast, reference, atol=1e-5, rtol=0)
        if config.scale == "logc":
            expected_db = librosa.power_to_db(np.maximum((10.0 ** reference - 1) / 10_000, 0), ref=np.max, top_db=80)
            np.testing.assert_allclose(to_db(fast, config), expected_db, atol=1e-3, rtol=0)
