"""Predictions as plain JSON data, in the one vocabulary the app's API and the CLI share.

A genre comes with its ``confidence`` (a probability), as Gradio's ``Label`` says it, and the
timeline is a list of windows, each with its start and end in seconds and every genre's
confidence, so that API and CLI users read the same fields.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .predict import Prediction

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
