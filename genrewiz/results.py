"""Predictions as plain JSON data, in the one vocabulary the app's API, the CLI and Ray share.

A genre comes with its ``confidence`` (a probability), as Gradio's ``Label`` says it, and the
timeline is a list of windows, each with its start and end in seconds and every genre's
confidence, so that API and CLI users read the same fields. A :class:`Row` is one file's result
as ``genrewiz predict`` and ``genrewiz tag`` write it, and ``predict --ray`` stores it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import TYPE_CHECKING

from .verdict import is_music

if TYPE_CHECKING:
    from .predict import Prediction
    from .tags import TagResult

DIGITS = 4
"""Decimals kept: a confidence to 0.01 %, a time to 0.1 ms."""


def top_json(top: list[tuple[str, float]]) -> list[dict[str, str | float]]:
    """``[("rock", 0.71), ...]`` -> ``[{"label": "rock", "confidence": 0.71}, ...]``."""
    return [{"label": label, "confidence": round(confidence, DIGITS)} for label, confidence in top]


def windows_json(prediction: Prediction, window_seconds: float) -> list[dict[str, float | dict[str, float]]]:
    """The genre timeline: each window's ``start_s``, ``end_s`` and ``confidences`` for every genre."""
    return [
        {
            "start_s": round(float(start), DIGITS),
            "end_s": round(min(float(start) + window_seconds, prediction.duration), DIGITS),
            "confidences": {label: round(float(p), DIGITS) for label, p in zip(prediction.labels, probabilities)},
        }
        for start, probabilities in zip(prediction.window_starts, prediction.window_probabilities)
    ]


@dataclass(frozen=True)
class Row:
    """One output line: a file and either its top genres or the reason it failed."""

    path: str
    top: list[tuple[str, float]]
    duration: float | None = None
    error: str | None = None
    size: int | None = None
    mtime: float | None = None
    tag: TagResult | None = None
    windows: list[dict] | None = None
    music: float | None = None
    """The probability that the file is music (models with the AudioSet ear; ``None`` otherwise)."""

    @property
    def ok(self) -> bool:
        return self.error is None

    @property
    def is_music(self) -> bool:
        """Whether the file gets a genre at all (:func:`genrewiz.verdict.is_music`)."""
        return is_music(self.music)

    def to_json(self) -> dict:
        return {
            "path": self.path,
            "ok": self.ok,
            "duration_s": None if self.duration is None else round(self.duration, 2),
            "top": top_json(self.top),
            "music": None if self.music is None else round(self.music, DIGITS),
            "error": self.error,
            "size": self.size,
            "mtime": self.mtime,
            **({} if self.tag is None else {"tag": self.tag.to_json()}),
            **({} if self.windows is None else {"windows": self.windows}),
        }


def file_stat(path: str) -> tuple[int | None, float | None]:
    """A file's size and mtime, what ``--resume`` matches on besides the path; ``None`` for a missing file."""
    try:
        stat = os.stat(path)
    except OSError:
        return None, None
    return stat.st_size, stat.st_mtime
