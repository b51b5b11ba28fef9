"""Whole-song prediction with the real bundled model."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf

from genrewiz import AudioError, GenreClassifier
from synthetic import synth_clip, write_clip
from conftest import GTZAN_MINI


def test_prediction_of_a_song(classifier, tmp_path):
    path = write_clip(tmp_path / "song.ogg", "bass_pulse", 75.0)
    prediction = classifier.predict(path)
    assert prediction.labels == classifier.labels
    assert prediction.probabilities.shape == (10,)
    assert prediction.probabilities.sum() == pytest.approx(1.0, abs=1e-5)
    n = len(prediction.window_starts)
    assert n >= 3 and prediction.window_probabilities.shape == (n, 10)
    np.testing.assert_allclose(prediction.probabilities, prediction.window_probabilities.mean(axis=0), rtol=1e-6)
    assert prediction.window_starts[0] == 0 and np.all(np.diff(prediction.window_starts) > 0)
    assert prediction.window_starts[-1] + classifier.config.window_seconds == pytest.approx(75.0, abs=1.5)
    assert prediction.duration == pytest.approx(75.0, abs=0.05)
    assert not prediction.truncated and not prediction.padded
    assert prediction.mel.shape[1] == classifier.config.n_mels

    top = prediction.top(5)
    assert len(top) == 5 and [score for _, score in top] == sorted((s for _, s in top), reverse=True)
    assert top[0][0] == prediction.genre
    assert set(prediction.as_dict()) == set(classifier.labels)


def test_waveform_and_file_give_the_same_answer(classifier, tmp_path):
    samples = synth_clip("chirp", 12.0)
    path = tmp_path / "clip.wav"
    sf.write(path, samples, 22_050, subtype="FLOAT")
    from_file = classifier.predict(path)
    from_array = classifier.predict(samples, sample_rate=22_050)
    np.testing.assert_allclose(from_file.probabilities, from_array.probabilities, atol=1e-6)
    assert from_file.padded


def test_long_input_is_analysed_up_to_the_cap(classifier):
    capped = GenreClassifier(classifier.model, max_duration=40.0)
    prediction = capped.predict(synth_clip("pad", 100.0, 8_000), sample_rate=8_000)
    assert prediction.truncated
    assert prediction.duration == pytest.approx(40.0, abs=0.01)
    assert prediction.source_duration == pytest.approx(100.0)


def test_bad_input_is_an_audio_error(classifier, bad_inputs):
    for path in bad_inputs.values():
        with pytest.raises(AudioError):
            classifier.predict(path)


@pytest.mark.shared("gtzan-mini")
def test_real_gtzan_clip(classifier):
    prediction = classifier.predict(GTZAN_MINI / "genres" / "metal" / "metal.00000.wav")
    assert prediction.duration == pytest.approx(30.0, abs=0.1)
    assert len(prediction.window_starts) == 1 and not prediction.padded
    assert prediction.probabilities.sum() == pytest.approx(1.0, abs=1e-5)


@pytest.mark.shared("gtzan-mini")
def test_bundled_weights_are_the_trained_ones(classifier):
    """The shipped musicnn PCRNN was trained on GTZAN's artist-filtered train + valid lists, which hold most
    GTZAN-mini clips: it must know them far above chance (10 %), and its metrics must name their protocol."""
    clips = sorted((GTZAN_MINI / "genres").glob("*/*.wav"))
    assert len(clips) == 80
    correct = sum(classifier.predict(path).genre == path.parent.name for path in clips)
    assert correct / len(clips) >= 0.8
    metrics = classifier.source.metrics()
    assert classifier.model.cnn_branch == "musicnn"
    assert metrics["split"] == "filtered/valid" and metrics["n_clips"] == 93 and "artist-filtered" in metrics["protocol"]
    assert {"accuracy", "balanced_accuracy", "macro_f1"} <= metrics.keys()
