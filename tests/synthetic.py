"""Synthetic "genres" for tests: signals a spectrogram model can tell apart, made in milliseconds.

Each style differs in pitch, timbre and tempo, the cues real genres differ in, so a model
that learns them proves the features and the network can learn at all.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import soundfile as sf

STYLES: tuple[str, ...] = ("bass_pulse", "hihat", "pad", "chirp")
SONG = "song"
"""Not a style to learn but real music: seconds of a gallery clip (``examples/``, in the repository),
for tests whose files must be heard as music (the tagger writes no genre for a hiss or a sweep,
which is what the styles above are to the music detector)."""
_SONGS = sorted((Path(__file__).resolve().parents[1] / "examples").glob("*.ogg"))
_WRITE_BLOCK = 65_536


def synth_clip(style: str, seconds: float, sample_rate: int = 22_050, seed: int = 0) -> np.ndarray:
    """A mono float32 clip of one synthetic style, varied by ``seed`` (pitch, tempo, noise)."""
    if style == SONG:
        from genrewiz.audio import load_audio

        music = load_audio(_SONGS[seed % len(_SONGS)], sample_rate).samples
        music = np.resize(music, max(len(music), int((seconds + 5.0) * sample_rate)))
        return np.ascontiguousarray(music[int(5.0 * sample_rate) :][: int(seconds * sample_rate)], dtype=np.float32)
    rng = np.random.default_rng(seed)
    n = int(seconds * sample_rate)
    t = np.arange(n) / sample_rate
    if style == "bass_pulse":
        bpm = rng.uniform(70, 90)
        envelope = np.exp(-((t * bpm / 60) % 1.0) * 6)
        signal = envelope * np.sin(2 * np.pi * rng.uniform(50, 90) * t)
    elif style == "hihat":
        bpm = rng.uniform(150, 180)
        envelope = np.exp(-((t * bpm / 60 * 2) % 1.0) * 30)
        noise = rng.standard_normal(n)
        signal = envelope * np.diff(noise, prepend=0.0) * 0.5
    elif style == "pad":
        root = rng.uniform(200, 300)
        signal = sum(np.sin(2 * np.pi * root * ratio * t) / (i + 1) for i, ratio in enumerate((1, 1.25, 1.5, 2)))
    elif style == "chirp":
        rate = rng.uniform(0.5, 1.5)
        freq = 1500 + 1000 * np.sin(2 * np.pi * rate * t)
        signal = np.sin(2 * np.pi * np.cumsum(freq) / sample_rate)
    else:
        raise ValueError(f"unknown style {style!r}; choose from {STYLES}")
    signal = signal + 0.01 * rng.standard_normal(n)
    return (0.5 * signal / np.max(np.abs(signal))).astype(np.float32)


def write_clip(path: Path, style: str, seconds: float, sample_rate: int = 22_050, seed: int = 0) -> Path:
    """Write :func:`synth_clip` to ``path`` (format from the extension) and return the path."""
    path.parent.mkdir(parents=True, exist_ok=True)
    samples = synth_clip(style, seconds, sample_rate, seed)
    with sf.SoundFile(path, "w", sample_rate, channels=1) as f:
        for start in range(0, len(samples), _WRITE_BLOCK):  # libsndfile's Vorbis encoder crashes on huge writes
            f.write(samples[start : start + _WRITE_BLOCK])
    return path
