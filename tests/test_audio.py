"""Audio loading: every format and shape we promise, and a clear AudioError for everything else."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf

from genrewiz.audio import AudioError, load_audio, prepare_waveform
from synthetic import synth_clip

SR = 22_050


@pytest.mark.parametrize("ext", ["wav", "flac", "ogg", "mp3"])
def test_formats_decode_to_mono_at_model_rate(tmp_path, ext):
    path = tmp_path / f"clip.{ext}"
    sf.write(path, synth_clip("pad", 3.0, 44_100), 44_100)
    audio = load_audio(path, SR)
    assert audio.samples.dtype == np.float32 and audio.samples.ndim == 1
    assert audio.sample_rate == SR
    assert audio.duration == pytest.approx(3.0, abs=0.1)


def test_stereo_8khz_is_downmixed_and_resampled(tmp_path):
    left = synth_clip("pad", 2.0, 8_000, seed=1)
    path = tmp_path / "stereo.wav"
    sf.write(path, np.stack([left, -left * 0.5], axis=1), 8_000)
    audio = load_audio(path, SR)
    assert len(audio.samples) == pytest.approx(2 * SR, abs=2)
    expected = np.interp(np.arange(2 * SR) / SR, np.arange(len(left)) / 8_000, left * 0.25)
    assert np.corrcoef(audio.samples[1000:-1000], expected[1000:-1000])[0, 1] > 0.99


def test_96khz_is_resampled(tmp_path):
    path = tmp_path / "hires.flac"
    sf.write(path, synth_clip("chirp", 2.0, 96_000), 96_000)
    assert len(load_audio(path, SR).samples) == pytest.approx(2 * SR, abs=2)


def test_long_file_is_capped_without_reading_it_all(tmp_path):
    path = tmp_path / "long.wav"
    sf.write(path, synth_clip("bass_pulse", 90.0, 8_000), 8_000)
    audio = load_audio(path, SR, max_duration=20.0)
    assert audio.duration == pytest.approx(20.0, abs=0.01)
    assert audio.source_duration == pytest.approx(90.0, abs=0.01)


def test_one_second_clip_is_accepted(tmp_path):
    path = tmp_path / "one_second.wav"
    sf.write(path, synth_clip("hihat", 1.0), SR)
    assert load_audio(path, SR).duration == pytest.approx(1.0)


@pytest.mark.parametrize(
    "case, message",
    [
        ("not_audio", "not a readable audio file"),
        ("truncated", "not a readable audio file"),
        ("empty", "empty"),
        ("zero_frames", "no audio frames"),
        ("silent", "silent"),
        ("too_short", "too short"),
        ("unsupported", "unsupported format '.m4a'"),
        ("directory", "not a file"),
        ("missing", "not found"),
    ],
)
def test_bad_inputs_raise_audio_error_with_message(bad_inputs, case, message):
    with pytest.raises(AudioError, match=message) as info:
        load_audio(bad_inputs[case], SR)
    assert str(info.value).startswith(bad_inputs[case].name + ":")
    assert str(bad_inputs[case].parent) not in str(info.value), "server paths must not leak to users"


def test_waveform_layouts_and_integer_pcm():
    mono = synth_clip("pad", 2.0, SR)
    pcm = (mono * 32767).astype(np.int16)
    for array in (mono, np.stack([mono, mono], axis=1), np.stack([mono, mono], axis=0), pcm):
        audio = prepare_waveform(array, SR, SR)
        assert len(audio.samples) == len(mono)
        np.testing.assert_allclose(audio.samples, mono, atol=1e-3)


@pytest.mark.parametrize(
    "array, rate, message",
    [
        (np.zeros(0, dtype=np.float32), SR, "non-empty"),
        (np.zeros((2, 2, 2), dtype=np.float32), SR, "non-empty"),
        (np.full(SR * 2, np.nan, dtype=np.float32), SR, "NaN"),
        (synth_clip("pad", 2.0), 0, "sample rate"),
    ],
)
def test_bad_waveforms_raise_audio_error(array, rate, message):
    with pytest.raises(AudioError, match=message):
        prepare_waveform(array, rate, SR)


def test_offset_reads_the_requested_excerpt(tmp_path):
    samples = synth_clip("chirp", 6.0, SR)
    path = tmp_path / "song.wav"
    sf.write(path, samples, SR, subtype="FLOAT")
    audio = load_audio(path, SR, max_duration=2.0, offset=3.0)
    np.testing.assert_array_equal(audio.samples, samples[3 * SR : 5 * SR])
    assert audio.source_duration == pytest.approx(6.0)
