"""The app's pictures drawn without matplotlib Figures: right colours in the right places, readable frame."""

from __future__ import annotations

import numpy as np
import pytest

from genrewiz.features import FeatureConfig
from genrewiz.musicnn import MUSICNN_FEATURES
from genrewiz.plots import (
    COLOUR_BAR,
    PLOT_AREA,
    SPECTROGRAM_SIZE,
    TIMELINE_AREA,
    TIMELINE_SIZE,
    magma,
    nice_ticks,
    spectrogram_pixels,
    timeline_pixels,
)

LEFT, TOP, RIGHT, BOTTOM = PLOT_AREA  # the plot area inside the SPECTROGRAM_SIZE picture
PHONE_WIDTH = 350
"""CSS pixels a phone (390 px wide) gives each figure: the page fits them to the screen."""


def test_magma_lookup_table_is_matplotlibs():
    import matplotlib

    table = magma()
    assert table.shape == (256, 3) and table.dtype == np.uint8
    np.testing.assert_array_equal(table[[0, 128, 255]], np.round(matplotlib.colormaps["magma"]([0, 128, 255])[:, :3] * 255))


@pytest.mark.parametrize("config", [FeatureConfig(), MUSICNN_FEATURES], ids=["scratch", "musicnn"])
def test_spectrogram_colours_follow_time_and_frequency(config):
    """Loud low bands in the first half, silence elsewhere: bright bottom-left, black everywhere else."""
    frames = 1200
    mel_db = np.full((frames, config.n_mels), -config.top_db, dtype=np.float32)
    mel_db[: frames // 2, : config.n_mels // 4] = 0.0
    pixels = spectrogram_pixels(mel_db, config, "a title with $ and <b>").astype(int)
    assert pixels.shape == (*SPECTROGRAM_SIZE[::-1], 3)
    bright, dark = magma()[255].astype(int), magma()[0].astype(int)
    bottom_left = pixels[BOTTOM - 20, LEFT + 20 : (LEFT + RIGHT) // 2 - 20]
    top_right = pixels[TOP + 20, (LEFT + RIGHT) // 2 + 20 : RIGHT - 20]
    bottom_right = pixels[BOTTOM - 20, (LEFT + RIGHT) // 2 + 20 : RIGHT - 20]
    assert (np.abs(bottom_left - bright).sum(axis=1) <= 3).all()
    assert (np.abs(top_right - dark).sum(axis=1) <= 3).all() and (np.abs(bottom_right - dark).sum(axis=1) <= 3).all()
    assert (pixels[2:TOP - 2, LEFT:RIGHT] < 128).any()  # the title is written above the plot
    assert (pixels[BOTTOM + 8 :, LEFT:RIGHT] < 128).any()  # time ticks and label below it
    assert (pixels[TOP:BOTTOM, :LEFT - 2] < 128).any()  # Hz ticks and label on the left
    colour_bar = pixels[TOP + 2 : BOTTOM - 2, (COLOUR_BAR[0] + COLOUR_BAR[1]) // 2]
    assert np.abs(colour_bar[0] - bright).sum() <= 30 and np.abs(colour_bar[-1] - dark).sum() <= 30


def test_short_and_long_spectrograms_fill_the_plot():
    config = MUSICNN_FEATURES
    for frames in (40, 37_500):  # under a second, and 10 minutes
        mel_db = np.zeros((frames, config.n_mels), dtype=np.float32)
        pixels = spectrogram_pixels(mel_db, config, "t").astype(int)
        assert (np.abs(pixels[TOP + 2 : BOTTOM - 1, LEFT + 2 : RIGHT - 1] - magma()[255]).sum(axis=2) <= 3).all()


def test_nice_ticks():
    assert nice_ticks(30.0) == [0, 5, 10, 15, 20, 25, 30]
    assert nice_ticks(150.0) == [0, 20, 40, 60, 80, 100, 120, 140]
    assert nice_ticks(600.0) == [0, 100, 200, 300, 400, 500, 600]
    assert nice_ticks(3.0) == [0, 0.5, 1, 1.5, 2, 2.5, 3]


def test_timeline_and_spectrogram_share_their_time_axis():
    """Same picture width and same plot edges: stacked at the same width, their time axes line up."""
    assert (TIMELINE_AREA[0], TIMELINE_AREA[2]) == (PLOT_AREA[0], PLOT_AREA[2])
    assert PLOT_AREA[2] < COLOUR_BAR[0]


def digit_height(pixels: np.ndarray) -> int:
    """Height in rows of the first line of dark ink (the tick labels' digits) in ``pixels``, from the top down."""
    inked = (pixels < 100).all(axis=2).any(axis=1)
    first = int(np.argmax(inked))
    return int(np.argmin(inked[first:])) if not inked[first:].all() else len(inked) - first


def test_figure_text_is_readable_on_a_phone():
    """Tick labels at least 6 CSS px tall when the page fits a figure to a phone (they were 3-4 px)."""
    config = MUSICNN_FEATURES
    spectrogram = spectrogram_pixels(np.zeros((1500, config.n_mels), dtype=np.float32), config, "t")
    time_labels = spectrogram[BOTTOM + 7 : BOTTOM + 40, LEFT + 30 : RIGHT - 30]
    timeline = timeline_pixels(np.array([15.0, 30.0]), {"rock": np.array([0.5, 0.6])}, 45.0, "time")
    time_labels_below_timeline = timeline[TIMELINE_AREA[3] + 7 : TIMELINE_AREA[3] + 40, TIMELINE_AREA[0] + 30 : TIMELINE_AREA[2] - 30]
    for strip, width in ((time_labels, SPECTROGRAM_SIZE[0]), (time_labels_below_timeline, TIMELINE_SIZE[0])):
        assert digit_height(strip) * PHONE_WIDTH / width >= 6, digit_height(strip)
