"""Audio loading: every format and shape we promise, and a clear AudioError for everything else."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf

from encoded import ENCODINGS, write_encoded
from genrewiz.audio import FFMPEG_EXTENSIONS, SUPPORTED_EXTENSIONS, AudioError, load_audio, prepare_waveform
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
        ("unsupported", "unsupported format '.xyz'"),
        ("corrupt_m4a", "not a readable audio file"),
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


def test_every_ffmpeg_format_is_searched_for_in_folders():
    assert {f".{ext}" for ext in ENCODINGS} <= FFMPEG_EXTENSIONS <= SUPPORTED_EXTENSIONS


@pytest.mark.parametrize("ext", sorted(ENCODINGS))
def test_ffmpeg_formats_decode_stereo_to_mono_at_model_rate(tmp_path, ext):
    """AAC (.m4a, .aac, .mka), WMA and WebM/Opus: the waveform comes back, down-mixed and resampled."""
    rate = 48_000 if ext == "webm" else 44_100
    left = synth_clip("pad", 3.0, rate, seed=2)
    path = write_encoded(tmp_path / f"clip.{ext}", np.stack([left, -0.5 * left], axis=1), rate)
    audio = load_audio(path, SR)
    assert audio.samples.dtype == np.float32 and audio.samples.ndim == 1 and audio.sample_rate == SR
    assert audio.duration == pytest.approx(3.0, abs=0.1) and audio.source_duration == pytest.approx(3.0, abs=0.1)
    expected = np.interp(np.arange(len(audio.samples)) / SR, np.arange(len(left)) / rate, 0.25 * left)
    expected /= np.max(np.abs(expected))
    best = max(np.corrcoef(audio.samples[SR : 2 * SR], np.roll(expected, lag)[SR : 2 * SR])[0, 1] for lag in range(-1200, 1200, 3))
    assert best > 0.95  # lossy codecs add a delay of a few hundred samples and some noise


def test_ffmpeg_decoding_is_capped_and_reports_the_whole_length(tmp_path):
    path = write_encoded(tmp_path / "long.m4a", synth_clip("bass_pulse", 40.0, 22_050), 22_050)
    audio = load_audio(path, SR, max_duration=10.0)
    assert audio.duration == pytest.approx(10.0, abs=0.01)
    assert audio.source_duration == pytest.approx(40.0, abs=0.1)


def test_ffmpeg_offset_reads_the_requested_excerpt(tmp_path):
    samples = synth_clip("chirp", 6.0, SR)
    path = write_encoded(tmp_path / "song.m4a", samples, SR)
    whole = load_audio(path, SR).samples
    excerpt = load_audio(path, SR, max_duration=2.0, offset=3.0).samples
    assert len(excerpt) == 2 * SR
    np.testing.assert_allclose(excerpt / np.max(np.abs(excerpt)), whole[3 * SR : 5 * SR] / np.max(np.abs(whole[3 * SR : 5 * SR])), atol=1e-4)


def test_ffmpeg_file_with_a_foreign_name_and_an_unknown_extension(tmp_path):
    """A name that is not UTF-8 is read; an extension neither decoder list names is tried with FFmpeg after libsndfile."""
    path = write_encoded(tmp_path / "clip.m4a", synth_clip("pad", 2.0, SR), SR)
    latin1 = tmp_path / "caf\udce9.m4a"
    latin1.write_bytes(path.read_bytes())
    assert load_audio(latin1, SR).duration == pytest.approx(2.0, abs=0.1)
    renamed = path.rename(tmp_path / "clip.mp4a")
    assert load_audio(renamed, SR).duration == pytest.approx(2.0, abs=0.1)
