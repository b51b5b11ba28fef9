"""Log-mel features and fixed-size windows: the one feature pipeline for training and serving.

The settings live in a single frozen :class:`FeatureConfig` that is written into every
checkpoint's ``config.json``, so a model is always fed exactly what it was trained on.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from typing import Any

import librosa
import numpy as np


_TAIL_TOLERANCE = 0.05


@dataclass(frozen=True)
class FeatureConfig:
    """Mel-spectrogram and windowing settings (defaults: the original PCRNN's 640x128 input).

    ``window_frames`` frames of ``hop_length`` samples make one model input: 640 x 1024 /
    22,050 Hz ≈ 29.7 s, one GTZAN clip. Songs are cut into windows every
    ``window_hop_frames`` frames (50 % overlap by default).
    """

    sample_rate: int = 22_050
    n_fft: int = 2048
    hop_length: int = 1024
    n_mels: int = 128
    fmin: float = 0.0
    fmax: float | None = None
    top_db: float = 80.0
    window_frames: int = 640
    window_hop_frames: int = 320

    def __post_init__(self) -> None:
        if min(self.sample_rate, self.n_fft, self.hop_length, self.n_mels) <= 0:
            raise ValueError("sample_rate, n_fft, hop_length and n_mels must be positive")
        if not 0 < self.window_hop_frames <= self.window_frames:
            raise ValueError("window_hop_frames must be in (0, window_frames]")
        if self.top_db <= 0:
            raise ValueError("top_db must be positive")

    @property
    def frame_seconds(self) -> float:
        """Duration of one spectrogram frame (the hop) in seconds."""
        return self.hop_length / self.sample_rate

    @property
    def window_seconds(self) -> float:
        """Duration of one model input window in seconds."""
        return self.window_frames * self.frame_seconds

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form, as stored in ``config.json``."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> FeatureConfig:
        """Rebuild from :meth:`to_dict` output; unknown keys are an error, not silently dropped."""
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown FeatureConfig fields: {sorted(unknown)}")
        return cls(**data)


@dataclass(frozen=True)
class Windows:
    """Model-ready windows cut from one spectrogram.

    ``data`` is ``(n, 1, window_frames, n_mels)`` float32, normalised; ``start_frames`` gives
    each window's first frame; ``padded`` is true when the clip was shorter than one window
    and was looped to fill it.
    """

    data: np.ndarray
    start_frames: np.ndarray
    padded: bool


def log_mel(waveform: np.ndarray, config: FeatureConfig) -> np.ndarray:
    """Log-power mel spectrogram in dB, shape ``(frames, n_mels)``, values in ``[-top_db, 0]``.

    Referenced to the clip's own peak, so the level a song was mastered at does not matter.
    """
    mel = librosa.feature.melspectrogram(
        y=np.ascontiguousarray(waveform, dtype=np.float32),
        sr=config.sample_rate,
        n_fft=config.n_fft,
        hop_length=config.hop_length,
        n_mels=config.n_mels,
        fmin=config.fmin,
        fmax=config.fmax,
        power=2.0,
    )
    db = librosa.power_to_db(mel, ref=np.max, top_db=config.top_db)
    return np.ascontiguousarray(db.T, dtype=np.float32)


def normalize(mel_db: np.ndarray, config: FeatureConfig) -> np.ndarray:
    """Map dB values from ``[-top_db, 0]`` to ``[-1, 1]``, the range the model is trained on."""
    return (mel_db * np.float32(2.0 / config.top_db) + np.float32(1.0)).astype(np.float32)


def window_starts(n_frames: int, config: FeatureConfig) -> np.ndarray:
    """First frame of each window so that the windows cover the whole song.

    Windows step by ``window_hop_frames``; one more window is aligned to the end when the
    steps leave more than 5 % of a window uncovered, so the tail of a song is never dropped,
    while a 30 s clip (647 frames) stays one window instead of two near-identical ones.
    """
    last = max(n_frames - config.window_frames, 0)
    starts = list(range(0, last + 1, config.window_hop_frames))
    if last - starts[-1] > _TAIL_TOLERANCE * config.window_frames:
        starts.append(last)
    return np.asarray(starts, dtype=np.int64)


def loop_to_window(mel_db: np.ndarray, config: FeatureConfig) -> np.ndarray:
    """Repeat a spectrogram shorter than one window until it fills exactly one; longer ones pass as they are.

    Looping, not zero-padding: the model never saw silence-padded clips in training.
    """
    if len(mel_db) >= config.window_frames:
        return mel_db
    return np.tile(mel_db, (math.ceil(config.window_frames / len(mel_db)), 1))[: config.window_frames]


def make_windows(mel_db: np.ndarray, config: FeatureConfig) -> Windows:
    """Cut a ``(frames, n_mels)`` dB spectrogram into normalised model windows.

    A spectrogram shorter than one window is looped (:func:`loop_to_window`) and flagged with
    ``padded=True``.
    """
    if mel_db.ndim != 2 or mel_db.shape[1] != config.n_mels or mel_db.shape[0] == 0:
        raise ValueError(f"expected a (frames, {config.n_mels}) spectrogram, got {mel_db.shape}")
    padded = mel_db.shape[0] < config.window_frames
    mel_db = loop_to_window(mel_db, config)
    starts = window_starts(mel_db.shape[0], config)
    norm = normalize(mel_db, config)
    data = np.stack([norm[s : s + config.window_frames] for s in starts])[:, None]
    return Windows(data=data, start_frames=starts, padded=padded)
