"""The field augmentations: repeatable under a seed, and each changes what it claims to change."""

from __future__ import annotations

import numpy as np
import pyloudnorm
import pytest

from tests.synthetic import synth_clip
from train import arrival
from train.arrival import EVAL_CHAINS, Arrival

SR = 16_000


@pytest.fixture(scope="module")
def music() -> np.ndarray:
    """Eight seconds with energy across the spectrum: a pad, a bass pulse and hi-hats together."""
    parts = [synth_clip(style, 8.0, SR, seed=3) for style in ("pad", "bass_pulse", "hihat", "chirp")]
    return (sum(parts) / len(parts)).astype(np.float32)


def band_energy(y: np.ndarray, low: float, high: float) -> float:
    spectrum = np.abs(np.fft.rfft(y)) ** 2
    freqs = np.fft.rfftfreq(len(y), 1 / SR)
    return float(spectrum[(freqs >= low) & (freqs < high)].sum())


def test_band_limit_removes_energy_outside_the_band(music):
    limited = arrival.band_limit(music, SR, 300.0, 3000.0)
    assert len(limited) == len(music)
    kept = band_energy(limited, 600, 2000) / band_energy(music, 600, 2000)
    below = band_energy(limited, 0, 80) / band_energy(music, 0, 80)
    above = band_energy(limited, 6000, 8000) / band_energy(music, 6000, 8000)
    assert kept > 0.5, f"the pass band keeps most of its energy ({kept:.2f})"
    assert below < 0.01 and above < 0.01, f"outside the band: {below:.4f} below, {above:.4f} above"


@pytest.mark.parametrize("target", [-8.0, -14.0])
def test_loudness_normaliser_hits_its_target(music, target):
    out = arrival.loudness(music * 0.05, SR, target)
    measured = pyloudnorm.Meter(SR).integrated_loudness(out.astype(np.float64))
    assert abs(measured - target) < 0.5, f"{measured:.2f} LUFS, asked for {target}"
    assert np.max(np.abs(out)) <= 10 ** (-1 / 20) + 1e-6, "peaks stay under the -1 dBFS ceiling"


@pytest.mark.parametrize("kind,quality", [("mp3", 8.0), ("gsm", 0.0), ("aac", 32.0), ("opus", 12.0)])
def test_codec_round_trip_keeps_length_and_the_music(music, kind, quality):
    out = arrival.codec(music, SR, kind, quality)
    assert out.shape == music.shape and out.dtype == np.float32
    assert not np.array_equal(out, music), "a lossy codec changes the samples"
    mid = slice(SR, len(music) - SR)
    assert np.corrcoef(out[mid], music[mid])[0, 1] > 0.5, "aligned with the input, not shifted or garbled"


def test_noise_is_added_at_the_asked_snr(music):
    rng = np.random.default_rng(0)
    noisy = arrival.add_noise(music, 10.0, rng, colour=1.0)
    snr = 10 * np.log10(np.mean(music.astype(np.float64) ** 2) / np.mean((noisy - music).astype(np.float64) ** 2))
    assert abs(snr - 10.0) < 0.1


def test_room_adds_a_reverberant_tail_of_the_same_length(music):
    impulse = np.zeros(SR, dtype=np.float32)
    impulse[100] = 1.0
    heard = arrival.room(impulse, SR, seed=3)
    assert len(heard) == SR
    assert np.abs(heard[:100]).max() < 1e-6 * np.abs(heard).max(), "nothing before the sound"
    assert np.abs(heard[2000:]).max() > 1e-3 * np.abs(heard).max(), "a tail after the direct sound"
    assert np.array_equal(arrival.room_response(3, SR), arrival.room_response(3, SR))


def test_arrivals_are_repeatable_per_clip_and_differ_between_clips_and_variants(music):
    first = Arrival("random", variant=1, seed=0).apply(music, SR, "rock/rock.00001")
    assert np.array_equal(first, Arrival("random", variant=1, seed=0).apply(music, SR, "rock/rock.00001"))
    assert not np.array_equal(first, Arrival("random", variant=2, seed=0).apply(music, SR, "rock/rock.00001"))
    assert not np.array_equal(first, Arrival("random", variant=1, seed=0).apply(music, SR, "rock/rock.00002"))
    assert first.shape == music.shape and np.all(np.isfinite(first))


@pytest.mark.parametrize("chain", sorted(EVAL_CHAINS))
def test_evaluation_chains_are_fixed_and_band_limited(music, chain):
    out = Arrival(chain).apply(music, SR, "pop/pop.00001")
    assert np.array_equal(out, Arrival(chain).apply(music, SR, "pop/pop.00001"))
    assert out.shape == music.shape
    assert band_energy(out, 0, 50) / band_energy(out, 0, SR / 2) < 0.01, "a small microphone hears no deep bass"


def test_evaluation_rooms_are_never_training_rooms():
    assert not set(arrival.EVAL_ROOM_SEEDS) & set(arrival.TRAIN_ROOM_SEEDS)


def test_unknown_chains_are_refused():
    with pytest.raises(ValueError, match="chain must be"):
        Arrival("concert-hall")
