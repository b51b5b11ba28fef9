"""Log-mel features and fixed-size windows: the one feature pipeline for training and serving.

The settings live in a single frozen :class:`FeatureConfig` that is written into every
checkpoint's ``config.json``, so a model is always fed exactly what it was trained on.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from functools import lru_cache
from typing import Any, Literal, TypeVar

import numpy as np


_TAIL_TOLERANCE = 0.05
_AMIN = 1e-10  # librosa.power_to_db's floor on power before the log
_STFT_BLOCK = 256  # frames per FFT block: a few MB of float64 frames at a time, whatever the song length
_LEVEL_BLOCK_SECONDS = 0.4
_LEVEL_SILENCE_DB = -70.0
_LEVEL_RELATIVE_DB = -10.0


_S = TypeVar("_S", bound="_Stored")


class _Stored:
    """``to_dict``/``from_dict`` for a frozen settings dataclass, as ``config.json`` holds it."""

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form, as stored in ``config.json``."""
        return asdict(self)  # type: ignore[call-overload]

    @classmethod
    def from_dict(cls: type[_S], data: dict[str, Any]) -> _S:
        """Rebuild from :meth:`to_dict` output; unknown keys are an error, not silently dropped."""
        known = {f.name for f in fields(cls)}  # type: ignore[arg-type]
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown {cls.__name__} fields: {sorted(unknown)}")
        return cls(**data)


@dataclass(frozen=True)
class FeatureConfig(_Stored):
    """Mel-spectrogram and windowing settings (defaults: the original PCRNN's 640x128 input).

    ``window_frames`` frames of ``hop_length`` samples make one model input: 640 x 1024 /
    22,050 Hz ≈ 29.7 s, one GTZAN clip. Songs are cut into windows every
    ``window_hop_frames`` frames (50 % overlap by default).

    ``scale`` is how mel power becomes model input: ``"db"`` is dB relative to the clip's peak,
    floored at ``-top_db`` and mapped to [-1, 1] (the from-scratch PCRNN); ``"logc"`` is
    ``log10(1 + 10000 * power)``, the compression musicnn was trained on (level-dependent, so
    the pretrained branch hears what it heard in training).

    ``level_db``, when set, scales each song so that its gated level (:func:`level`) is that
    many dB below full scale before the mel spectrogram: a quiet 1960s master and a loud modern
    one then reach a level-dependent ``logc`` model alike, so loudness cannot stand for genre.
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
    scale: Literal["db", "logc"] = "db"
    level_db: float | None = None

    def __post_init__(self) -> None:
        if min(self.sample_rate, self.n_fft, self.hop_length, self.n_mels) <= 0:
            raise ValueError("sample_rate, n_fft, hop_length and n_mels must be positive")
        if not 0 < self.window_hop_frames <= self.window_frames:
            raise ValueError("window_hop_frames must be in (0, window_frames]")
        if self.top_db <= 0:
            raise ValueError("top_db must be positive")
        if self.scale not in ("db", "logc"):
            raise ValueError(f"scale must be 'db' or 'logc', got {self.scale!r}")
        if self.level_db is not None and not -60.0 <= self.level_db <= 0.0:
            raise ValueError(f"level_db must be in [-60, 0] dB below full scale, got {self.level_db}")

    @property
    def frame_seconds(self) -> float:
        """Duration of one spectrogram frame (the hop) in seconds."""
        return self.hop_length / self.sample_rate

    @property
    def window_seconds(self) -> float:
        """Duration of one model input window in seconds."""
        return self.window_frames * self.frame_seconds



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


def mel_frequencies(n_mels: int, fmin: float, fmax: float) -> np.ndarray:
    """``n_mels`` frequencies (Hz) evenly spaced on the Slaney mel scale: ``librosa.mel_frequencies`` (htk=False)."""
    f_sp, min_log_hz, logstep = 200.0 / 3, 1000.0, np.log(6.4) / 27.0
    min_log_mel = min_log_hz / f_sp

    def hz_to_mel(hz: float) -> float:
        return min_log_mel + np.log(hz / min_log_hz) / logstep if hz >= min_log_hz else hz / f_sp

    mels = np.linspace(hz_to_mel(fmin), hz_to_mel(fmax), n_mels)
    hz = f_sp * mels
    log = mels >= min_log_mel
    hz[log] = min_log_hz * np.exp(logstep * (mels[log] - min_log_mel))
    return hz


@lru_cache(maxsize=8)
def mel_filterbank(sample_rate: int, n_fft: int, n_mels: int, fmin: float, fmax: float | None) -> np.ndarray:
    """Slaney-normalised triangular mel filters ``(n_mels, 1 + n_fft // 2)`` float32: ``librosa.filters.mel``.

    Written out in numpy so that computing a spectrogram never imports librosa and scipy
    (about 1.3 s, paid in every decoding worker of the CLI); ``tests/test_speed_equivalence.py``
    checks it against librosa.
    """
    fmax = float(sample_rate) / 2 if fmax is None else fmax
    weights = np.zeros((n_mels, 1 + n_fft // 2), dtype=np.float32)
    fftfreqs = np.fft.rfftfreq(n=n_fft, d=1.0 / sample_rate)
    mel_f = mel_frequencies(n_mels + 2, fmin, fmax)
    fdiff = np.diff(mel_f)
    ramps = np.subtract.outer(mel_f, fftfreqs)
    for i in range(n_mels):
        weights[i] = np.maximum(0, np.minimum(-ramps[i] / fdiff[i], ramps[i + 2] / fdiff[i + 1]))
    weights *= (2.0 / (mel_f[2 : n_mels + 2] - mel_f[:n_mels]))[:, np.newaxis]
    weights.setflags(write=False)
    return weights


def mel_power(waveform: np.ndarray, config: FeatureConfig) -> np.ndarray:
    """Mel power spectrogram ``(frames, n_mels)`` float32: ``librosa.feature.melspectrogram`` (power 2).

    Centred Hann-windowed frames over a zero-padded signal, FFT in float64 rounded to complex64
    as librosa rounds it, one block of frames at a time (only the float32 power is kept whole,
    half of what librosa's complex64 STFT holds).
    """
    y = np.ascontiguousarray(waveform, dtype=np.float32)
    n_fft, hop = config.n_fft, config.hop_length
    padded = np.pad(y, n_fft // 2)
    frames = np.lib.stride_tricks.sliding_window_view(padded, n_fft)[::hop]
    window = 0.5 + 0.5 * np.cos(np.linspace(-np.pi, np.pi, n_fft + 1))[:n_fft]  # periodic Hann, as scipy computes it
    basis = mel_filterbank(config.sample_rate, n_fft, config.n_mels, config.fmin, config.fmax)
    power = np.empty((len(frames), 1 + n_fft // 2), dtype=np.float32)
    for start in range(0, len(frames), _STFT_BLOCK):
        spectrum = np.fft.rfft(frames[start : start + _STFT_BLOCK] * window, axis=1).astype(np.complex64)
        power[start : start + _STFT_BLOCK] = np.abs(spectrum) ** 2
    return (basis @ power.T).T  # one (mels, frames) product over the whole song, as librosa's: the same sums


def power_to_db(power: np.ndarray, top_db: float) -> np.ndarray:
    """dB relative to the peak, floored at ``-top_db``: ``librosa.power_to_db(ref=np.max)``, same float32 steps."""
    log_spec = 10.0 * np.log10(np.maximum(_AMIN, power))
    log_spec -= 10.0 * np.log10(np.maximum(_AMIN, np.max(power)))
    return np.maximum(log_spec, log_spec.max() - top_db)


def level(waveform: np.ndarray, sample_rate: int) -> float | None:
    """A song's level in dB relative to full scale: its mean power over the 400-ms blocks that are heard.

    ITU-R BS.1770's two gates without its K-weighting: blocks under -70 dB are silence, then
    blocks more than 10 dB under the mean of the rest are pauses, so a quiet intro or a fade-out
    does not lower a song's level. ``None`` when nothing is above the silence gate.
    """
    y = np.asarray(waveform, dtype=np.float32)
    block = max(1, int(_LEVEL_BLOCK_SECONDS * sample_rate))
    n = max(1, len(y) // block)
    blocks = y[: n * block].reshape(n, -1)
    power = np.einsum("ij,ij->i", blocks, blocks).astype(np.float64) / blocks.shape[1]  # no squared copy of a long song
    heard = power[power > 10.0 ** (_LEVEL_SILENCE_DB / 10.0)]
    if heard.size == 0:
        return None
    heard = heard[heard > heard.mean() * 10.0 ** (_LEVEL_RELATIVE_DB / 10.0)]
    return float(10.0 * np.log10(heard.mean()))


def set_level(waveform: np.ndarray, sample_rate: int, level_db: float) -> np.ndarray:
    """``waveform`` scaled so that its :func:`level` is ``level_db``; unchanged when it is silence."""
    measured = level(waveform, sample_rate)
    if measured is None:
        return waveform
    return waveform * np.float32(10.0 ** ((level_db - measured) / 20.0))


def log_mel(waveform: np.ndarray, config: FeatureConfig) -> np.ndarray:
    """Log-compressed mel spectrogram ``(frames, n_mels)`` float32 on the config's ``scale``.

    ``"db"``: values in ``[-top_db, 0]`` dB, referenced to the clip's own peak so the level a
    song was mastered at does not matter. ``"logc"``: ``log10(1 + 10000 * power)``, computed in
    float32 (musicnn's own extractor casts to float16 first, which overflows on loud music).
    With ``config.level_db`` the song is first brought to that level (:func:`set_level`).
    """
    if config.level_db is not None:
        waveform = set_level(waveform, config.sample_rate, config.level_db)
    mel = mel_power(waveform, config)
    if config.scale == "logc":
        compressed = np.log10(np.float32(1.0) + np.float32(10_000.0) * mel)
    else:
        compressed = power_to_db(mel, config.top_db)
    return np.ascontiguousarray(compressed, dtype=np.float32)


def to_db(mel: np.ndarray, config: FeatureConfig) -> np.ndarray:
    """A :func:`log_mel` spectrogram as dB relative to its peak, in ``[-top_db, 0]``, for display.

    Lets every architecture's input be drawn on the same dB colour scale.
    """
    if config.scale == "db":
        return mel
    power = (np.power(np.float32(10.0), mel, dtype=np.float32) - np.float32(1.0)) / np.float32(10_000.0)
    return power_to_db(np.maximum(power, np.float32(0.0)), config.top_db).astype(np.float32)


def normalize(mel: np.ndarray, config: FeatureConfig) -> np.ndarray:
    """Scale :func:`log_mel` output to what the model reads.

    dB values map from ``[-top_db, 0]`` to ``[-1, 1]``; ``logc`` values pass as they are
    (musicnn normalises its input with its own batch-norm layer).
    """
    if config.scale == "logc":
        return mel.astype(np.float32, copy=False)
    return (mel * np.float32(2.0 / config.top_db) + np.float32(1.0)).astype(np.float32)


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


def loop_to_window(mel: np.ndarray, config: FeatureConfig) -> np.ndarray:
    """Repeat a spectrogram shorter than one window until it fills exactly one; longer ones pass as they are.

    Looping, not zero-padding: the model never saw silence-padded clips in training.
    """
    if len(mel) >= config.window_frames:
        return mel
    return np.tile(mel, (math.ceil(config.window_frames / len(mel)), 1))[: config.window_frames]


def make_windows(mel: np.ndarray, config: FeatureConfig) -> Windows:
    """Cut a ``(frames, n_mels)`` :func:`log_mel` spectrogram into normalised model windows.

    A spectrogram shorter than one window is looped (:func:`loop_to_window`) and flagged with
    ``padded=True``.
    """
    if mel.ndim != 2 or mel.shape[1] != config.n_mels or mel.shape[0] == 0:
        raise ValueError(f"expected a (frames, {config.n_mels}) spectrogram, got {mel.shape}")
    padded = mel.shape[0] < config.window_frames
    mel = loop_to_window(mel, config)
    starts = window_starts(mel.shape[0], config)
    norm = normalize(mel, config)
    data = np.stack([norm[s : s + config.window_frames] for s in starts])[:, None]
    return Windows(data=data, start_frames=starts, padded=padded)


@dataclass(frozen=True)
class AudioSetFeatures(_Stored):
    """The front end of the AudioSet tagger mn04_as (EfficientAT): its log-mel, as it was trained on it.

    Pre-emphasis, a centred STFT (``win_length``-sample symmetric Hann window in an ``n_fft``
    frame), power, a Kaldi-style mel filterbank from ``fmin`` to ``fmax``, ``ln(power +
    log_offset)``, then ``(x + norm_shift) / norm_scale``. A separate config from
    :class:`FeatureConfig` because every step differs; it is written into ``config.json`` the
    same way, so the ear is always fed what it heard in training.
    """

    sample_rate: int = 32_000
    n_fft: int = 1024
    win_length: int = 800
    hop_length: int = 320
    n_mels: int = 128
    fmin: float = 0.0
    fmax: float = 15_000.0
    preemphasis: float = 0.97
    log_offset: float = 1e-5
    norm_shift: float = 4.5
    norm_scale: float = 5.0
    patch_frames: int = 1000
    patches_per_window: int = 3

    def __post_init__(self) -> None:
        if min(self.sample_rate, self.n_fft, self.win_length, self.hop_length, self.n_mels, self.patch_frames,
               self.patches_per_window) <= 0:
            raise ValueError("sample_rate, n_fft, win_length, hop_length, n_mels, patch_frames and patches_per_window "
                             "must be positive")
        if self.win_length > self.n_fft:
            raise ValueError("win_length must not exceed n_fft")
        if not 0 <= self.fmin < self.fmax <= self.sample_rate / 2:
            raise ValueError("need 0 <= fmin < fmax <= sample_rate / 2")
        if self.log_offset <= 0 or self.norm_scale == 0:
            raise ValueError("log_offset must be positive and norm_scale non-zero")

    @property
    def frame_seconds(self) -> float:
        """Duration of one spectrogram frame (the hop) in seconds."""
        return self.hop_length / self.sample_rate



@lru_cache(maxsize=4)
def kaldi_mel_filterbank(sample_rate: int, n_fft: int, n_mels: int, fmin: float, fmax: float) -> np.ndarray:
    """Kaldi-style triangular mel filters ``(n_mels, 1 + n_fft // 2)`` float32 (``torchaudio.compliance.kaldi.get_mel_banks``).

    Triangles on the mel scale ``1127 ln(1 + f / 700)``, unnormalised, over the bins ``k *
    sample_rate / n_fft`` for ``k < n_fft // 2``; the Nyquist bin gets no weight. Computed in
    float32 step for step as torchaudio computes it: at a triangle's foot, a pure tone's peak
    bin times a weight rounded otherwise moves the log-mel by 4e-4 (a sine's bands).
    """
    f32 = np.float32
    low, high = 1127.0 * math.log1p(fmin / 700.0), 1127.0 * math.log1p(fmax / 700.0)
    delta = f32((high - low) / (n_mels + 1))
    band = np.arange(n_mels, dtype=f32)[:, None]
    left, centre, right = (f32(low) + (band + f32(k)) * delta for k in (0, 1, 2))
    hz = f32(sample_rate / n_fft) * np.arange(n_fft // 2, dtype=f32)
    mel = f32(1127.0) * np.log(f32(1.0) + hz / f32(700.0))
    up = (mel - left) / (centre - left)
    down = (right - mel) / (right - centre)
    weights = np.zeros((n_mels, 1 + n_fft // 2), dtype=f32)
    weights[:, : n_fft // 2] = np.maximum(f32(0.0), np.minimum(up, down))
    weights.setflags(write=False)
    return weights


def audioset_log_mel(waveform: np.ndarray, config: AudioSetFeatures = AudioSetFeatures()) -> np.ndarray:
    """The AudioSet tagger's normalised log-mel ``(frames, n_mels)`` float32 of a mono waveform at ``config.sample_rate``.

    Pre-emphasis ``y[n] = x[n + 1] - 0.97 x[n]`` drops one sample (10 s = 320,000 samples ->
    319,999 -> 1,000 frames), then a centred STFT over the reflect-padded signal, as
    ``torch.stft(center=True)`` computes it (the window zero-padded to ``n_fft`` in the middle
    of each frame only shifts its phase, so the short window's FFT gives the same power).
    Frames are transformed and mel-reduced one block at a time, so beyond the waveform only
    the ``(frames, n_mels)`` result is held whole, however long the song.
    """
    x = np.asarray(waveform, dtype=np.float32)
    if x.ndim != 1 or len(x) < 2:
        raise ValueError(f"expected a mono waveform of at least 2 samples, got shape {x.shape}")
    emphasised = x[1:] - np.float32(config.preemphasis) * x[:-1]
    half = config.n_fft // 2
    padded = np.pad(emphasised, half, mode="reflect")
    offset = (config.n_fft - config.win_length) // 2
    frames = np.lib.stride_tricks.sliding_window_view(padded, config.n_fft)[:: config.hop_length, offset : offset + config.win_length]
    window = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(config.win_length) / (config.win_length - 1))  # symmetric Hann
    basis = kaldi_mel_filterbank(config.sample_rate, config.n_fft, config.n_mels, config.fmin, config.fmax)
    mel = np.empty((len(frames), config.n_mels), dtype=np.float32)
    for start in range(0, len(frames), _STFT_BLOCK):
        spectrum = np.fft.rfft(frames[start : start + _STFT_BLOCK] * window, n=config.n_fft, axis=1)
        power = (spectrum.real**2 + spectrum.imag**2).astype(np.float32)
        mel[start : start + _STFT_BLOCK] = power @ basis.T
    log = np.log(mel + np.float32(config.log_offset))
    return ((log + np.float32(config.norm_shift)) / np.float32(config.norm_scale)).astype(np.float32)


def audioset_windows(
    mel: np.ndarray, starts_seconds: np.ndarray, window_seconds: float, config: AudioSetFeatures
) -> np.ndarray:
    """The AudioSet ear's ``(n, patches_per_window, patch_frames, n_mels)`` patches for windows starting at ``starts_seconds``.

    Each window of ``window_seconds`` (the model's, cut by :func:`make_windows` on the other
    front end) is heard as ``patches_per_window`` patches of ``patch_frames`` (10 s, what the ear was
    trained on) spread evenly over it, the first at its start and the last at its end. A
    spectrogram shorter than one window is looped, as :func:`loop_to_window` loops the other.
    """
    if mel.ndim != 2 or mel.shape[1] != config.n_mels or mel.shape[0] == 0:
        raise ValueError(f"expected a (frames, {config.n_mels}) spectrogram, got {mel.shape}")
    span = max(int(round(window_seconds / config.frame_seconds)), config.patch_frames)
    if len(mel) < span:
        mel = np.tile(mel, (math.ceil(span / len(mel)), 1))[:span]
    offsets = np.linspace(0, span - config.patch_frames, config.patches_per_window).round().astype(np.int64)
    firsts = np.minimum(np.round(np.asarray(starts_seconds) / config.frame_seconds).astype(np.int64), len(mel) - span)
    return np.stack([np.stack([mel[f + o : f + o + config.patch_frames] for o in offsets]) for f in firsts])
