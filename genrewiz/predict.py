"""Whole-song prediction: file -> waveform -> log-mel -> windows -> model -> probabilities.

Load a :class:`GenreClassifier` once and call :meth:`GenreClassifier.predict` for each song.
Decoding (:func:`analyse`) is separate from classifying (:meth:`GenreClassifier.classify`) so
that the CLI can decode in worker processes while one model serves them all.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from .audio import DEFAULT_MAX_DURATION, AudioError, load_audio, prepare_waveform, resample
from .engine import PATCH_CHUNK, Engine, Progress, TorchEngine, load_engine
from .features import AudioSetFeatures, FeatureConfig, audioset_log_mel, audioset_windows, log_mel, make_windows
from .hub import ModelSource, resolve_source

if TYPE_CHECKING:
    from .model import PCRNN

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Analysis:
    """What the model needs from one song: its :func:`~genrewiz.features.log_mel` spectrogram and how much was read.

    ``ear_mel`` is the :func:`~genrewiz.features.audioset_log_mel` spectrogram the AudioSet ear
    reads, for a model that has one (``None`` otherwise).
    """

    mel: np.ndarray
    duration: float
    source_duration: float
    ear_mel: np.ndarray | None = None


@dataclass(frozen=True)
class Prediction:
    """Genre probabilities for a whole song, and per window for a timeline.

    ``probabilities`` is the mean of ``window_probabilities`` over the song's windows, which
    start at ``window_starts`` seconds. ``window_music`` is each window's probability of being
    music (models with the AudioSet ear); :attr:`music` sums it up for the song. ``mel`` is the
    ``(frames, n_mels)`` spectrogram the model saw, on its feature scale
    (:func:`genrewiz.features.to_db` draws it in dB); ``padded`` says the song was shorter than
    one window and was looped.
    """

    labels: tuple[str, ...]
    probabilities: np.ndarray
    window_probabilities: np.ndarray
    window_starts: np.ndarray
    mel: np.ndarray
    duration: float
    source_duration: float
    padded: bool
    window_music: np.ndarray | None = None

    @property
    def music(self) -> float | None:
        """The probability that the input is music at all (the mean over its windows); ``None`` for a model that cannot tell."""
        return None if self.window_music is None else float(self.window_music.mean())

    @property
    def truncated(self) -> bool:
        """Whether only the first part of a longer file was analysed."""
        return self.source_duration - self.duration > 0.5

    @property
    def genre(self) -> str:
        """The most likely genre."""
        return self.labels[int(np.argmax(self.probabilities))]

    def top(self, k: int = 5) -> list[tuple[str, float]]:
        """The ``k`` most likely genres with their probabilities, best first."""
        order = np.argsort(self.probabilities)[::-1][:k]
        return [(self.labels[i], float(self.probabilities[i])) for i in order]

    def as_dict(self) -> dict[str, float]:
        """``{genre: probability}`` for every label, the form ``gr.Label`` takes."""
        return {label: float(p) for label, p in zip(self.labels, self.probabilities)}


def decode_rate(config: FeatureConfig, ear: AudioSetFeatures | None = None) -> int:
    """The one rate a song is decoded at: the highest its front ends read (each resamples from it in memory)."""
    return config.sample_rate if ear is None else max(config.sample_rate, ear.sample_rate)


def analyse(
    audio: str | os.PathLike[str] | np.ndarray,
    config: FeatureConfig,
    sample_rate: int | None = None,
    max_duration: float = DEFAULT_MAX_DURATION,
    ear: AudioSetFeatures | None = None,
) -> Analysis:
    """Decode a file (or condition a waveform at ``sample_rate``) and compute its log-mel, and the AudioSet ear's with ``ear``.

    The song is decoded once, at :func:`decode_rate`, and resampled in memory to each front
    end's rate (:func:`genrewiz.audio.resample`); training's caches are computed the same way.

    Raises:
        AudioError: the input cannot be analysed (see :func:`genrewiz.audio.load_audio`).
    """
    if isinstance(audio, np.ndarray) and sample_rate is None:
        raise ValueError("sample_rate is required with a waveform array")
    rate = decode_rate(config, ear)
    if isinstance(audio, np.ndarray):
        clip = prepare_waveform(audio, sample_rate, rate, max_duration)
    else:
        clip = load_audio(audio, rate, max_duration)
    mel = log_mel(resample(clip.samples, rate, config.sample_rate), config)
    ear_mel = None if ear is None else audioset_log_mel(resample(clip.samples, rate, ear.sample_rate), ear)
    return Analysis(mel, clip.duration, clip.source_duration, ear_mel)


class GenreClassifier:
    """A loaded PCRNN and its feature settings, ready to classify any number of songs.

    :meth:`from_pretrained` serves a checkpoint through :func:`~genrewiz.engine.load_engine`:
    ONNX Runtime when its folder has a ``model.onnx`` exported from its weights (torch is then
    not even imported), PyTorch otherwise. ``engine`` says which; the classifier itself never
    asks.

    Example:
        >>> classifier = GenreClassifier.from_pretrained()          # doctest: +SKIP
        >>> classifier.predict("song.mp3").top(3)                   # doctest: +SKIP
        [('rock', 0.71), ('metal', 0.12), ('blues', 0.07)]
    """

    def __init__(
        self,
        model: PCRNN | None = None,
        source: ModelSource | None = None,
        max_duration: float = DEFAULT_MAX_DURATION,
        batch_size: int = 16,
        num_threads: int | None = 1,
        *,
        engine: Engine | None = None,
        patch_chunk: int = PATCH_CHUNK,
    ) -> None:
        """Wrap a loaded ``model`` (run in PyTorch), or an ``engine`` and its checkpoint's ``source``.

        ``num_threads`` is the intra-op thread count of whichever runs the model (for torch,
        process-wide). One is the default because serving overlaps work: the app runs several
        predictions at once and the CLI decodes in other processes, and on busy cores torch's
        spinning threads slow everything down. ``None`` leaves the library's own default (one
        thread per core). ``batch_size`` windows and (musicnn) ``patch_chunk`` patches go
        through the model at once: memory does not grow with a song's length.
        """
        if engine is None:
            if model is None:
                raise ValueError("GenreClassifier needs a model or an engine")
            import torch

            if num_threads is not None:
                torch.set_num_threads(num_threads)
            engine = TorchEngine(model, batch_size, patch_chunk)
        self._model = model
        self.engine = engine
        self.source = source
        self.max_duration = max_duration
        self.num_threads = num_threads

    @classmethod
    def from_pretrained(
        cls,
        source: str | os.PathLike[str] | None = None,
        *,
        cache_dir: str | Path | None = None,
        num_threads: int | None = 1,
        batch_size: int = 16,
        patch_chunk: int = PATCH_CHUNK,
        **kwargs,
    ) -> GenreClassifier:
        """Load weights from a Hub repo id, a local folder, or (by default) the resolved checkpoint."""
        resolved = resolve_source(source, cache_dir=cache_dir)
        engine = load_engine(resolved.directory, num_threads, batch_size, patch_chunk)
        logger.info("GenreWiz weights: %s (%s)", resolved.describe(), engine.description)
        return cls(source=resolved, engine=engine, num_threads=num_threads, **kwargs)

    @property
    def model(self) -> PCRNN:
        """The PCRNN in PyTorch: the one given, else loaded from the checkpoint on first use."""
        if self._model is None:
            if self.source is None:
                raise ValueError("no checkpoint folder to load the PyTorch model from")
            import torch

            from .model import PCRNN

            if self.num_threads is not None:
                torch.set_num_threads(self.num_threads)
            self._model = PCRNN.from_pretrained(self.source.directory)
        return self._model

    @property
    def config(self) -> FeatureConfig:
        """The feature settings the model was trained with."""
        return self.engine.config

    @property
    def audioset_config(self) -> AudioSetFeatures | None:
        """The AudioSet ear's front end, or ``None`` for a model without that ear."""
        return self.engine.audioset_config

    @property
    def labels(self) -> tuple[str, ...]:
        """Genre names in the model's output order."""
        return self.engine.labels

    def predict(
        self, audio: str | os.PathLike[str] | np.ndarray, sample_rate: int | None = None, progress: Progress | None = None
    ) -> Prediction:
        """Classify a whole song from a path, or from a waveform array with its ``sample_rate``.

        ``progress`` is called with the fraction of the model's work done, a few times per song.
        """
        analysis = analyse(audio, self.config, sample_rate, self.max_duration, self.audioset_config)
        return self.classify(analysis, progress=progress)

    def classify(self, analysis: Analysis, progress: Progress | None = None) -> Prediction:
        """Run the model over every window of an analysed song and average the probabilities.

        Raises:
            AudioError: the model's output is not finite (never returned as an answer).
        """
        windows = make_windows(analysis.mel, self.config)
        starts = windows.start_frames * self.config.frame_seconds
        ear = self.audioset_config
        if ear is not None and analysis.ear_mel is None:
            raise ValueError("this model has the AudioSet ear: analyse the song with its front end (analyse(..., ear=...))")
        ear_patches = None if ear is None else audioset_windows(analysis.ear_mel, starts, self.config.window_seconds, ear)
        outputs = self.engine.window_outputs(windows.data, progress, ear_patches)
        probs, music = outputs.probabilities, outputs.music
        if not np.all(np.isfinite(probs)) or (music is not None and not np.all(np.isfinite(music))):
            raise AudioError("the audio could not be analysed: the model produced invalid (non-finite) scores")
        return Prediction(
            labels=self.labels,
            probabilities=probs.mean(axis=0),
            window_probabilities=probs,
            window_starts=starts,
            mel=analysis.mel,
            duration=analysis.duration,
            source_duration=analysis.source_duration,
            padded=windows.padded,
            window_music=music,
        )
