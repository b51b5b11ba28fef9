"""Audio loading: any file libsndfile reads -> mono float32 at the model's sample rate.

Every problem with an input (missing, unreadable, empty, silent, too short) surfaces as one
exception type, :class:`AudioError`, whose message is fit to show a user as it is.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

DEFAULT_MAX_DURATION = 600.0
"""Seconds of a file analysed by default; the rest of a longer file is never read."""
DEFAULT_MIN_DURATION = 1.0
"""Clips shorter than this carry too little music to judge."""
SILENCE_PEAK = 1e-4
"""Peak amplitude (-80 dBFS) under which a clip counts as silent."""
SUPPORTED_EXTENSIONS = frozenset({".wav", ".flac", ".ogg", ".oga", ".opus", ".mp3", ".au", ".aiff", ".aif"})
"""Extensions searched for in folders; libsndfile decodes all of them (no ffmpeg needed)."""

_BLOCK_SECONDS = 30


class AudioError(ValueError):
    """An input that cannot be analysed, with a message meant for the user."""


@dataclass(frozen=True)
class Audio:
    """A mono waveform ready for feature extraction.

    ``source_duration`` is the length of the whole input; it exceeds :attr:`duration` when
    only the first ``max_duration`` seconds were read.
    """

    samples: np.ndarray
    sample_rate: int
    source_duration: float

    @property
    def duration(self) -> float:
        """Seconds of audio in :attr:`samples`."""
        return len(self.samples) / self.sample_rate


def load_audio(
    path: str | os.PathLike[str],
    sample_rate: int,
    max_duration: float = DEFAULT_MAX_DURATION,
    min_duration: float = DEFAULT_MIN_DURATION,
    offset: float = 0.0,
) -> Audio:
    """Read at most ``max_duration`` seconds of a file, from ``offset`` s, as mono float32 at ``sample_rate``.

    Stereo is averaged to mono and other rates are resampled with soxr. The file is read in
    blocks, so an hour-long recording costs no more memory than ``max_duration`` of it.

    Raises:
        AudioError: the path is missing or not a file, the format is unsupported or corrupt,
            or the audio is empty, silent or shorter than ``min_duration``.
    """
    path = Path(path)
    name = path.name
    if not path.exists():
        raise AudioError(f"{name}: file not found")
    if not path.is_file():
        raise AudioError(f"{name}: not a file")
    if path.stat().st_size == 0:
        raise AudioError(f"{name}: the file is empty")
    try:
        with sf.SoundFile(path) as f:
            source_sr = f.samplerate
            source_duration = f.frames / source_sr if f.frames > 0 else 0.0
            if offset > 0:
                f.seek(min(int(offset * source_sr), f.frames))
            samples = _read_mono(f, int(max_duration * source_sr))
    except (sf.SoundFileError, RuntimeError, EOFError, OSError) as err:
        ext = path.suffix.lower()
        if ext and ext not in SUPPORTED_EXTENSIONS:
            supported = ", ".join(sorted(e.lstrip(".") for e in SUPPORTED_EXTENSIONS))
            raise AudioError(f"{name}: unsupported format '{ext}' (supported: {supported})") from err
        reason = getattr(err, "error_string", None) or type(err).__name__  # never the server-side path
        raise AudioError(f"{name}: not a readable audio file (corrupt or unsupported: {reason})") from err
    source_duration = max(source_duration, len(samples) / source_sr)
    return _condition(samples, source_sr, sample_rate, source_duration, min_duration, name)


def prepare_waveform(
    samples: np.ndarray,
    source_rate: int,
    sample_rate: int,
    max_duration: float = DEFAULT_MAX_DURATION,
    min_duration: float = DEFAULT_MIN_DURATION,
    name: str = "audio",
) -> Audio:
    """Bring an in-memory waveform to the same state :func:`load_audio` returns.

    Accepts 1-D arrays, ``(samples, channels)`` as soundfile returns, or ``(channels, samples)``
    as librosa returns; integer PCM is scaled to [-1, 1].
    """
    array = np.asarray(samples)
    if array.ndim not in (1, 2) or array.size == 0:
        raise AudioError(f"{name}: expected a non-empty 1-D or 2-D waveform, got shape {array.shape}")
    if source_rate <= 0:
        raise AudioError(f"{name}: sample rate must be positive, got {source_rate}")
    if np.issubdtype(array.dtype, np.integer):
        array = array.astype(np.float32) / float(np.iinfo(array.dtype).max + 1)
    if array.ndim == 2:
        channel_axis = 0 if array.shape[0] < array.shape[1] and array.shape[0] <= 8 else 1
        array = array.mean(axis=channel_axis)
    source_duration = len(array) / source_rate
    array = array[: int(max_duration * source_rate)].astype(np.float32)
    return _condition(array, source_rate, sample_rate, source_duration, min_duration, name)


def _read_mono(f: sf.SoundFile, max_frames: int) -> np.ndarray:
    """Read up to ``max_frames`` frames block by block, averaging channels as it goes."""
    blocks = []
    remaining = max_frames
    block = _BLOCK_SECONDS * f.samplerate
    while remaining > 0:
        data = f.read(min(block, remaining), dtype="float32", always_2d=True)
        if len(data) == 0:
            break
        blocks.append(data.mean(axis=1))
        remaining -= len(data)
    return np.concatenate(blocks) if blocks else np.zeros(0, dtype=np.float32)


def _condition(
    samples: np.ndarray, source_rate: int, sample_rate: int, source_duration: float, min_duration: float, name: str
) -> Audio:
    """Check a mono waveform is usable and resample it to ``sample_rate``."""
    if len(samples) == 0:
        raise AudioError(f"{name}: contains no audio frames")
    if not np.all(np.isfinite(samples)):
        raise AudioError(f"{name}: contains invalid (NaN or infinite) samples")
    duration = len(samples) / source_rate
    if duration < min_duration:
        raise AudioError(f"{name}: too short to judge ({duration:.2f} s; at least {min_duration:g} s needed)")
    if float(np.max(np.abs(samples))) < SILENCE_PEAK:
        raise AudioError(f"{name}: the audio is silent")
    if source_rate != sample_rate:
        samples = soxr.resample(samples, source_rate, sample_rate, quality="HQ")
    return Audio(np.ascontiguousarray(samples, dtype=np.float32), sample_rate, source_duration)
