"""The app's pictures, the spectrogram and the genre timeline, drawn without a matplotlib Figure per request.

A Figure costs each request its layout, text and Agg rendering. Here the dB spectrogram becomes
colours through a 256-entry magma lookup table (taken from matplotlib once), the parts that
never change for a model (axes, Hz ticks, dB colour bar, labels) are drawn once into a cached
frame, and each request only pastes its pixels and writes its time ticks and title with PIL:
the same picture, at a fraction of the cost (README, Speed).
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import matplotlib
import numpy as np
from PIL import Image, ImageDraw, ImageFont

from .features import FeatureConfig, mel_frequencies

SPECTROGRAM_SIZE = (720, 300)
TIMELINE_SIZE = (720, 230)
"""Drawn for the width they are shown at: a phone fits them to about 350 CSS px, where the
:data:`TEXT_SIZE` text comes out near 10 px (a 1000 px picture made it 4-5 px); a desktop column
shows them at about their own size."""
MEL_TICKS_HZ = (0, 500, 1000, 2000, 4000, 8000, 16000)
_FONT_FILE = Path(matplotlib.get_data_path()) / "fonts" / "ttf" / "DejaVuSans.ttf"
TEXT_SIZE, _TICK_SIZE, _TITLE_SIZE = 20, 5, 20
PLOT_AREA = (100, 32, 600, 246)  # left, top, right, bottom of the spectrogram inside SPECTROGRAM_SIZE
COLOUR_BAR = (612, 628)
TIMELINE_AREA = (100, 12, 600, 176)  # same left and right as the spectrogram: the two time axes line up
_SUPERSAMPLE = 2  # the timeline's lines are drawn at twice the size and scaled down: smooth, as matplotlib's


@lru_cache(maxsize=1)
def magma() -> np.ndarray:
    """matplotlib's magma colour map as a ``(256, 3)`` uint8 lookup table."""
    return (matplotlib.colormaps["magma"](np.linspace(0.0, 1.0, 256))[:, :3] * 255 + 0.5).astype(np.uint8)


@lru_cache(maxsize=4)
def _font(size: int) -> ImageFont.FreeTypeFont:
    return ImageFont.truetype(str(_FONT_FILE), size)


def nice_ticks(end: float, most: int = 9) -> list[float]:
    """Round tick values from 0 to ``end``, at most ``most`` of them (1, 2, 2.5 or 5 times a power of ten apart)."""
    if end <= 0:
        return [0.0]
    magnitude = 10.0 ** np.floor(np.log10(end / most))
    step = next(m * magnitude for m in (1, 2, 2.5, 5, 10, 20) if end / (m * magnitude) < most)
    return [float(v) for v in np.arange(0.0, end + step * 1e-9, step)]


def _label(value: float) -> str:
    return f"{value:g}"


def _text(draw: ImageDraw.ImageDraw, xy: tuple[float, float], text: str, size: int, anchor: str, fill: str = "black") -> None:
    draw.text(xy, text, font=_font(size), fill=fill, anchor=anchor)


def _vertical_text(image: Image.Image, text: str, centre: tuple[int, int]) -> None:
    """``text`` rotated 90 degrees (read bottom to top) and centred on ``centre``, as an axis label."""
    box = _font(TEXT_SIZE).getbbox(text)
    label = Image.new("L", (box[2] + 2, box[3] + 2), 0)
    ImageDraw.Draw(label).text((1, 1), text, font=_font(TEXT_SIZE), fill=255)
    label = label.rotate(90, expand=True)
    position = (centre[0] - label.width // 2, centre[1] - label.height // 2)
    image.paste(Image.new("RGB", label.size, "black"), position, label)


@lru_cache(maxsize=8)
def _spectrogram_frame(n_mels: int, fmin: float, fmax: float, top_db: float) -> Image.Image:
    """Everything of the spectrogram picture that depends only on the model: Hz axis, colour bar, labels."""
    image = Image.new("RGB", SPECTROGRAM_SIZE, "white")
    draw = ImageDraw.Draw(image)
    left, top, right, bottom = PLOT_AREA
    centres = mel_frequencies(n_mels, fmin, fmax)
    ticks = [hz for hz in MEL_TICKS_HZ if centres[0] <= hz <= centres[-1]]
    for hz, position in zip(ticks, np.interp(ticks, centres, np.arange(n_mels) + 0.5)):
        y = bottom - position / n_mels * (bottom - top)
        draw.line([(left - _TICK_SIZE, y), (left, y)], fill="black")
        _text(draw, (left - _TICK_SIZE - 3, y), _label(hz), TEXT_SIZE, "rm")
    _vertical_text(image, "mel frequency (Hz)", (14, (top + bottom) // 2))
    _text(draw, ((left + right) / 2, SPECTROGRAM_SIZE[1] - 6), "time (s)", TEXT_SIZE, "md")
    bar_left, bar_right = COLOUR_BAR
    gradient = magma()[np.linspace(255, 0, bottom - top).astype(np.uint8)]
    image.paste(Image.fromarray(np.repeat(gradient[:, None], bar_right - bar_left, axis=1)), (bar_left, top))
    draw.rectangle([bar_left, top, bar_right, bottom], outline="black")
    step = 10 if top_db <= 100 else 20
    for db in np.arange(0.0, -top_db - 1e-9, -step):
        y = top + (-db / top_db) * (bottom - top)
        draw.line([(bar_right, y), (bar_right + _TICK_SIZE - 1, y)], fill="black")
        _text(draw, (bar_right + _TICK_SIZE + 2, y), f"{db:+.0f} dB", TEXT_SIZE, "lm")
    return image


def _colour(mel_db: np.ndarray, top_db: float, size: tuple[int, int]) -> Image.Image:
    """``(frames, n_mels)`` dB -> an RGB image of ``size``: time left to right, low frequencies at the bottom.

    Time is averaged into pixel columns (box filter) when there are more frames than columns,
    as matplotlib's antialiasing does, and repeated otherwise; mel bands are repeated.
    """
    width, height = size
    frames, n_mels = mel_db.shape
    bands = Image.fromarray(np.ascontiguousarray(mel_db.T[::-1], dtype=np.float32), mode="F")
    bands = bands.resize((width, n_mels), Image.Resampling.BOX if frames > width else Image.Resampling.NEAREST)
    levels = np.asarray(bands.resize((width, height), Image.Resampling.NEAREST))
    index = np.clip((levels + top_db) * (255.0 / top_db) + 0.5, 0, 255).astype(np.uint8)
    return Image.fromarray(magma()[index])


def spectrogram_pixels(mel_db: np.ndarray, config: FeatureConfig, title: str) -> np.ndarray:
    """A ``(frames, n_mels)`` dB spectrogram as :data:`SPECTROGRAM_SIZE` uint8 pixels: time (s) by mel frequency (Hz),
    a dB colour bar and ``title``, drawn as text (no markup)."""
    fmax = config.fmax or config.sample_rate / 2
    image = _spectrogram_frame(config.n_mels, config.fmin, fmax, config.top_db).copy()
    left, top, right, bottom = PLOT_AREA
    image.paste(_colour(mel_db, config.top_db, (right - left, bottom - top)), (left, top))
    draw = ImageDraw.Draw(image)
    draw.rectangle([left, top, right, bottom], outline="black")
    seconds = mel_db.shape[0] * config.frame_seconds
    for t in nice_ticks(seconds):
        x = left + t / seconds * (right - left)
        draw.line([(x, bottom), (x, bottom + _TICK_SIZE)], fill="black")
        _text(draw, (x, bottom + _TICK_SIZE + 2), _label(t), TEXT_SIZE, "mt")
    _text(draw, ((left + right) / 2, top - 6), title, _TITLE_SIZE, "md")
    return np.asarray(image)


def tab10() -> list[tuple[int, int, int]]:
    """matplotlib's default line colours (``tab10``) as RGB bytes, the timeline's colours in legend order."""
    return [tuple(int(255 * c + 0.5) for c in colour) for colour in matplotlib.colormaps["tab10"].colors]


def timeline_pixels(
    centres: np.ndarray, probabilities: dict[str, np.ndarray], duration: float, xlabel: str
) -> np.ndarray:
    """Genre probability (0-1) against time, one coloured line with dots per genre and a legend on the right.

    ``probabilities`` maps each genre, in legend order, to its probability at the window ``centres`` (s).
    """
    s = _SUPERSAMPLE
    image = Image.new("RGB", (TIMELINE_SIZE[0] * s, TIMELINE_SIZE[1] * s), "white")
    draw = ImageDraw.Draw(image)
    left, top, right, bottom = (v * s for v in TIMELINE_AREA)
    duration = max(duration, 1e-9)

    def x_of(t: float) -> float:
        return left + t / duration * (right - left)

    def y_of(p: float) -> float:
        return bottom - p * (bottom - top)

    grid = (235, 235, 235)
    for t in nice_ticks(duration):
        draw.line([(x_of(t), top), (x_of(t), bottom)], fill=grid, width=s)
    for p in np.linspace(0.0, 1.0, 6):
        draw.line([(left, y_of(p)), (right, y_of(p))], fill=grid, width=s)
    for (genre, values), colour in zip(probabilities.items(), tab10()):
        points = [(x_of(t), y_of(p)) for t, p in zip(centres, values)]
        if len(points) > 1:
            draw.line(points, fill=colour, width=2 * s, joint="curve")
        for x, y in points:
            draw.ellipse([x - 3 * s, y - 3 * s, x + 3 * s, y + 3 * s], fill=colour)
    draw.rectangle([left, top, right, bottom], outline="black", width=s)
    image = image.resize(TIMELINE_SIZE, Image.Resampling.LANCZOS)
    draw = ImageDraw.Draw(image)
    left, top, right, bottom = TIMELINE_AREA
    for t in nice_ticks(duration):
        x = left + t / duration * (right - left)
        draw.line([(x, bottom), (x, bottom + _TICK_SIZE)], fill="black")
        _text(draw, (x, bottom + _TICK_SIZE + 2), _label(t), TEXT_SIZE, "mt")
    for p in np.linspace(0.0, 1.0, 6):
        y = bottom - p * (bottom - top)
        draw.line([(left - _TICK_SIZE, y), (left, y)], fill="black")
        _text(draw, (left - _TICK_SIZE - 3, y), f"{p:.1f}", TEXT_SIZE, "rm")
    _vertical_text(image, "probability", (14, (top + bottom) // 2))
    _text(draw, ((left + right) / 2, TIMELINE_SIZE[1] - 6), xlabel, TEXT_SIZE, "md")
    middle = (top + bottom) / 2 - 12 * (len(probabilities) - 1)
    for i, (genre, colour) in enumerate(zip(probabilities, tab10())):
        y = middle + 24 * i
        draw.line([(right + 6, y), (right + 26, y)], fill=colour, width=2)
        draw.ellipse([right + 13, y - 3, right + 19, y + 3], fill=colour)
        _text(draw, (right + 32, y), genre, TEXT_SIZE, "lm")
    return np.asarray(image)
