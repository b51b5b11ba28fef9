"""Log-mel and windowing: shapes for short, clip-length and song-length inputs, and the model on each."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from genrewiz.features import FeatureConfig, level, log_mel, make_windows, set_level, window_starts
from genrewiz.musicnn import MUSICNN_FEATURES
from genrewiz.model import PCRNN
from synthetic import synth_clip

CONFIG = FeatureConfig()


@pytest.mark.parametrize("seconds, n_windows, padded", [(0.5, 1, True), (30.0, 1, False), (180.0, 12, False)])
def test_windows_shapes_and_model_outputs(seconds, n_windows, padded):
    mel = log_mel(synth_clip("chirp", seconds), CONFIG)
    assert mel.shape == (int(seconds * CONFIG.sample_rate) // CONFIG.hop_length + 1, CONFIG.n_mels)
    assert mel.max() == pytest.approx(0.0) and mel.min() >= -CONFIG.top_db
    windows = make_windows(mel, CONFIG)
    assert windows.data.shape == (n_windows, 1, CONFIG.window_frames, CONFIG.n_mels)
    assert windows.data.dtype == np.float32
    assert windows.data.min() >= -1.0 and windows.data.max() <= 1.0
    assert windows.padded is padded
    with torch.inference_mode():
        logits = PCRNN().eval()(torch.from_numpy(windows.data))
    assert logits.shape == (n_windows, 10) and torch.isfinite(logits).all()


def test_windows_cover_the_whole_song():
    for frames in (641, 700, 1400, 6460, 12_345):
        starts = window_starts(frames, CONFIG)
        assert starts[0] == 0 and np.all(np.diff(starts) <= CONFIG.window_hop_frames)
        uncovered_tail = frames - (starts[-1] + CONFIG.window_frames)
        assert uncovered_tail <= 0.05 * CONFIG.window_frames


def test_short_clip_is_looped_not_silence_padded():
    mel = log_mel(synth_clip("pad", 2.0), CONFIG)
    window = make_windows(mel, CONFIG).data[0, 0]
    np.testing.assert_array_equal(window[len(mel) : 2 * len(mel)], window[: len(mel)])


def test_config_round_trips_through_json_and_rejects_unknown_fields():
    config = FeatureConfig(n_mels=128, hop_length=512, fmax=8000.0)
    assert FeatureConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config
    with pytest.raises(ValueError, match="unknown"):
        FeatureConfig.from_dict({**config.to_dict(), "n_mfcc": 20})
    with pytest.raises(ValueError):
        FeatureConfig(window_hop_frames=0)


def test_wrong_spectrogram_shape_is_an_error():
    with pytest.raises(ValueError, match="spectrogram"):
        make_windows(np.zeros((700, 64), dtype=np.float32), CONFIG)


def test_level_ignores_silence_and_pauses():
    tone = synth_clip("song", 10.0, 16_000)
    measured = level(tone, 16_000)
    assert measured is not None and -40.0 < measured < 0.0
    quiet_intro = np.concatenate([np.zeros(16_000 * 5, np.float32), 0.001 * tone[: 16_000 * 5], tone])
    assert level(quiet_intro, 16_000) == pytest.approx(measured, abs=0.5), "a silent or quiet intro is not the song's level"
    assert level(0.1 * tone, 16_000) == pytest.approx(measured - 20.0, abs=1e-3)
    assert level(np.zeros(16_000, np.float32), 16_000) is None
    np.testing.assert_array_equal(set_level(np.zeros(100, np.float32), 16_000, -17.0), np.zeros(100, np.float32))
    assert level(set_level(tone, 16_000, -17.0), 16_000) == pytest.approx(-17.0, abs=1e-3)


def test_levelled_features_do_not_hear_how_loud_a_song_was_mastered():
    """musicnn's logc input changes with level; with ``level_db`` a quiet and a loud copy give the same spectrogram."""
    song = synth_clip("song", 12.0, 16_000)
    loud, quiet = 0.9 * song / np.abs(song).max(), 0.02 * song / np.abs(song).max()
    assert np.abs(log_mel(loud, MUSICNN_FEATURES) - log_mel(quiet, MUSICNN_FEATURES)).mean() > 0.1
    levelled = FeatureConfig(**{**MUSICNN_FEATURES.to_dict(), "level_db": -17.0})
    np.testing.assert_allclose(log_mel(loud, levelled), log_mel(quiet, levelled), atol=1e-4)
    assert FeatureConfig.from_dict(json.loads(json.dumps(levelled.to_dict()))) == levelled
    with pytest.raises(ValueError, match="level_db"):
        FeatureConfig(level_db=6.0)
