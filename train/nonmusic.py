"""Sounds that are not music, generated: what the music detector learns to turn away.

Users send what is not music too: a recording of a quiet room, a hiss, a test tone, mains hum,
someone talking. Each generator maps a NumPy generator, a sample rate and a length to a mono
float32 waveform, with its level and character drawn at random, so a set of them is repeatable
from its seed. Speech comes from Debian's ``espeak-ng`` when it is installed.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np

Generator = Callable[[np.random.Generator, int, float], np.ndarray]

_SENTENCES = (
    "Please leave a message after the tone and I will call you back as soon as I can.",
    "The weather today is cloudy with a chance of rain in the afternoon and evening.",
    "Welcome to the meeting. Let us start with a short review of last week's numbers.",
    "Turn left at the next junction, then continue straight for two hundred metres.",
    "This recording is a test of the microphone. One, two, three, four, five.",
    "In the beginning the universe was created. This has made a lot of people very angry.",
)


def _level(rng: np.random.Generator, y: np.ndarray) -> np.ndarray:
    """Scale to a random peak between -40 and -1 dBFS: quiet rooms and hot recordings alike."""
    peak = float(np.max(np.abs(y))) or 1.0
    return (y / peak * 10 ** (rng.uniform(-40, -1) / 20)).astype(np.float32)


def coloured_noise(exponent: float) -> Generator:
    """Noise whose power falls as ``1 / f ** exponent``: white 0, pink 1, brown 2."""

    def generate(rng: np.random.Generator, sr: int, seconds: float) -> np.ndarray:
        n = int(sr * seconds)
        spectrum = rng.standard_normal(n // 2 + 1) + 1j * rng.standard_normal(n // 2 + 1)
        freqs = np.fft.rfftfreq(n, 1 / sr)
        spectrum *= np.where(freqs > 0, np.maximum(freqs, 1.0) ** (-exponent / 2), 0.0)
        return _level(rng, np.fft.irfft(spectrum, n))

    return generate


def near_silence(rng: np.random.Generator, sr: int, seconds: float) -> np.ndarray:
    """A quiet room: faint noise around -60 dBFS."""
    y = coloured_noise(rng.uniform(0, 2))(rng, sr, seconds)
    return (y / (np.max(np.abs(y)) or 1.0) * 10 ** (rng.uniform(-75, -55) / 20)).astype(np.float32)


def sweep(rng: np.random.Generator, sr: int, seconds: float) -> np.ndarray:
    """A logarithmic sine sweep between random frequencies (a test signal)."""
    t = np.arange(int(sr * seconds)) / sr
    f0, f1 = sorted(rng.uniform(30, 0.45 * sr, 2))
    k = np.log(f1 / f0) / seconds
    return _level(rng, np.sin(2 * np.pi * f0 * (np.exp(k * t) - 1) / k))


def tone(rng: np.random.Generator, sr: int, seconds: float) -> np.ndarray:
    """A steady sine (a test tone or a dial tone)."""
    t = np.arange(int(sr * seconds)) / sr
    return _level(rng, np.sin(2 * np.pi * rng.uniform(100, 4000) * t))


def clicks(rng: np.random.Generator, sr: int, seconds: float) -> np.ndarray:
    """Irregular clicks and ticks over a faint noise floor."""
    n = int(sr * seconds)
    y = 1e-3 * rng.standard_normal(n)
    for at in rng.integers(0, n - 64, int(rng.uniform(2, 20) * seconds)):
        y[at : at + 64] += rng.choice([-1, 1]) * np.exp(-np.arange(64) / rng.uniform(2, 12))
    return _level(rng, y)


def hum(rng: np.random.Generator, sr: int, seconds: float) -> np.ndarray:
    """Mains hum: 50 or 60 Hz and its harmonics, with a little noise."""
    t = np.arange(int(sr * seconds)) / sr
    base = rng.choice([50.0, 60.0])
    y = sum(rng.uniform(0.1, 1) / h * np.sin(2 * np.pi * base * h * t + rng.uniform(0, 6)) for h in range(1, 8))
    return _level(rng, y + 0.01 * rng.standard_normal(len(t)))


def speech(rng: np.random.Generator, sr: int, seconds: float) -> np.ndarray:
    """Synthetic speech from ``espeak-ng`` (a random voice, speed and pitch), repeated to length."""
    import soundfile as sf
    import soxr

    with tempfile.TemporaryDirectory() as tmp:
        wav = Path(tmp) / "speech.wav"
        voice = rng.choice(["en", "en-us", "en+f3", "en+m3", "en+f5", "de", "fr", "es"])
        text = " ".join(rng.permutation(_SENTENCES))
        subprocess.run(["espeak-ng", "-v", str(voice), "-s", str(int(rng.uniform(120, 200))),
                        "-p", str(int(rng.uniform(20, 80))), "-w", str(wav), text], check=True, capture_output=True)
        y, rate = sf.read(wav, dtype="float32")
    y = soxr.resample(y, rate, sr) if rate != sr else y
    n = int(sr * seconds)
    return _level(rng, np.tile(y, n // len(y) + 1)[:n])


GENERATORS: dict[str, Generator] = {
    "quiet room": near_silence,
    "white noise": coloured_noise(0.0),
    "pink noise": coloured_noise(1.0),
    "brown noise": coloured_noise(2.0),
    "sweep": sweep,
    "tone": tone,
    "clicks": clicks,
    "mains hum": hum,
}
"""Every generator that needs nothing installed; :func:`speech` joins them where ``espeak-ng`` is."""


def available() -> dict[str, Generator]:
    """The generators this machine can run: :data:`GENERATORS`, and speech where ``espeak-ng`` is installed."""
    return GENERATORS | ({"speech": speech} if shutil.which("espeak-ng") else {})


def examples(n_each: int, sr: int, seed: int, seconds: tuple[float, float] = (3.0, 30.0)) -> list[tuple[str, np.ndarray]]:
    """``n_each`` waveforms of every available kind, ``seconds`` long at random, drawn from ``seed``."""
    rng = np.random.default_rng(seed)
    return [(name, generate(rng, sr, float(rng.uniform(*seconds))))
            for name, generate in available().items() for _ in range(n_each)]
