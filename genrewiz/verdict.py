"""When an answer is a doubt: the one "Not sure" rule the app's verdict and ``genrewiz tag`` share.

A top genre that is weak, or barely ahead of the second, is shown on the page as "Not sure:
jazz or blues?" and is not written into a file's tags by default: both read this rule, so the
page never calls an answer a doubt that the tagger writes as a fact.
"""

from __future__ import annotations

from collections.abc import Sequence

UNSURE_BELOW = 0.5
"""A top genre under this probability is a doubt, not an answer."""
CLOSE_MARGIN = 0.15
"""Nor is one whose lead over the second genre is under this: the model hesitates between the two."""
MUSIC_BELOW = 0.5
"""An input whose probability of being music (:attr:`genrewiz.predict.Prediction.music`) is under this gets no genre."""


def is_music(music: float | None) -> bool:
    """Whether an input with this music probability gets a genre at all (``None``: a model that cannot tell, so yes)."""
    return music is None or music >= MUSIC_BELOW


def is_unsure(top: Sequence[tuple[str, float]]) -> bool:
    """Whether ``top`` (best first; one entry or more) is a doubt by :data:`UNSURE_BELOW` and :data:`CLOSE_MARGIN`."""
    first = top[0][1] if top else 0.0
    second = top[1][1] if len(top) > 1 else 0.0
    return first < UNSURE_BELOW or first - second < CLOSE_MARGIN


def doubt_reason(top: Sequence[tuple[str, float]]) -> str:
    """Which half of the rule made ``top`` a doubt, in words: too low, too close, or both."""
    first = top[0][1] if top else 0.0
    second = top[1][1] if len(top) > 1 else 0.0
    low, close = first < UNSURE_BELOW, first - second < CLOSE_MARGIN
    if low and close:
        return f"the top genre is under {UNSURE_BELOW:.0%} and less than {CLOSE_MARGIN * 100:.0f} points ahead of the second"
    if low:
        return f"the top genre is under {UNSURE_BELOW:.0%}"
    return f"the top genre is less than {CLOSE_MARGIN * 100:.0f} points ahead of the second"
