"""The verdict and how probabilities are written: one rule for the page, the API, ``genrewiz tag``,
the CLI's table and every CSV.

A top genre that is weak, or barely ahead of the second, is a doubt: the page says "Not sure:
jazz or blues?" (or "Not sure, leaning jazz" when only weak, the second far behind) and the
tagger does not write it into a file by default. Probabilities are written so that rounding never
contradicts that rule: never "100%" or "0%", never "50%" for a top genre under 50 %, never two
figures 15 points apart beside "less than 15 points ahead". Every function takes probabilities
(best first), so a new kind of answer is one more function here.
"""

from __future__ import annotations

from collections.abc import Sequence

UNSURE_BELOW = 0.5
"""A top genre under this probability is a doubt, not an answer."""
CLOSE_MARGIN = 0.15
"""Nor is one whose lead over the second genre is under this: the model hesitates between the two."""
TOLERANCE = 1e-6
"""How far under a threshold still counts as on it. Probabilities are float32 and their difference
is rounded: 0.70 - 0.55 computes as 0.1499999..., which is 15 points, not "less than 15"."""
_MOST_DECIMALS = 3


def _top_two(top: Sequence[tuple[str, float]]) -> tuple[float, float]:
    return (top[0][1] if top else 0.0), (top[1][1] if len(top) > 1 else 0.0)


def is_low(first: float) -> bool:
    """Whether a top genre at ``first`` is under :data:`UNSURE_BELOW`."""
    return first < UNSURE_BELOW - TOLERANCE


def is_close(first: float, second: float) -> bool:
    """Whether ``first`` is less than :data:`CLOSE_MARGIN` ahead of ``second``."""
    return first - second < CLOSE_MARGIN - TOLERANCE


MUSIC_BELOW = 0.5
"""An input whose probability of being music (:attr:`genrewiz.predict.Prediction.music`) is under this gets no genre."""


NOT_MUSIC = "This doesn't sound like music"
"""The verdict, in place of a genre, for an input under :data:`MUSIC_BELOW`."""
SHORT_BELOW = 5.0
"""Seconds under which a clip is too short to judge well: the verdict says so."""


def is_music(music: float | None) -> bool:
    """Whether an input with this music probability gets a genre at all (``None``: a model that cannot tell, so yes)."""
    return music is None or music >= MUSIC_BELOW


def song_verdict(top: Sequence[tuple[str, float]], music: float | None = None, seconds: float | None = None) -> str:
    """The verdict of a whole input: :data:`NOT_MUSIC`, else :func:`verdict_text`, prefixed for a clip under :data:`SHORT_BELOW`.

    ``Short clip (3 s): Most likely jazz``: a few seconds are little to go on, and the verdict
    itself says so rather than leaving it to the details.
    """
    text = verdict_text(top) if is_music(music) else NOT_MUSIC
    if seconds is not None and seconds < SHORT_BELOW:
        return f"Short clip ({seconds:.0f} s): {text[0].lower()}{text[1:]}"
    return text


def is_unsure(top: Sequence[tuple[str, float]]) -> bool:
    """Whether ``top`` (best first; one entry or more) is a doubt by :data:`UNSURE_BELOW` and :data:`CLOSE_MARGIN`."""
    first, second = _top_two(top)
    return is_low(first) or is_close(first, second)


def is_leaning(top: Sequence[tuple[str, float]]) -> bool:
    """A doubt only because the top genre is weak: the second is far behind, so it is no toss-up between two."""
    first, second = _top_two(top)
    return is_low(first) and not is_close(first, second)


def verdict_text(top: Sequence[tuple[str, float]]) -> str:
    """``Most likely jazz``, ``Not sure: jazz or blues?`` or, when :func:`is_leaning`, ``Not sure, leaning jazz``."""
    first = top[0][0] if top else ""
    second = top[1][0] if len(top) > 1 else ""
    if not is_unsure(top):
        return f"Most likely {first}"
    return f"Not sure, leaning {first}" if is_leaning(top) else f"Not sure: {first} or {second}?"


def doubt_reason(top: Sequence[tuple[str, float]]) -> str:
    """Which half of the rule made ``top`` a doubt, in words: too low, too close, or both."""
    first, second = _top_two(top)
    low, close = is_low(first), is_close(first, second)
    if low and close:
        return f"the top genre is under {UNSURE_BELOW:.0%} and less than {CLOSE_MARGIN * 100:.0f} points ahead of the second"
    if low:
        return f"the top genre is under {UNSURE_BELOW:.0%}"
    return f"the top genre is less than {CLOSE_MARGIN * 100:.0f} points ahead of the second"


def _written(p: float, decimals: int) -> str | None:
    """``p`` as a percentage with ``decimals``, or ``None`` when it would round to 0 or 100 (see :func:`percent`)."""
    if p >= 0.995 or p < 0.005:
        return None
    return f"{p * 100:.{decimals}f}%"


def _extreme(p: float) -> str:
    return "over 99%" if p >= 0.995 else "under 1%"


def _read(text: str | None, p: float) -> float:
    """The probability a reader takes ``text`` (as :func:`_written` makes it) to say."""
    return p if text is None else float(text[:-1]) / 100


def percent(p: float) -> str:
    """One probability as every output writes it: a whole percentage, never rounded into a claim.

    0.9955 (and 1.0) is ``over 99%``, 0.003 (and 0.0) ``under 1%``: both true, where "100%" and
    "0%" would claim a certainty the model does not have. A top genre is never rounded up to
    the 50 % the verdict starts at: 0.4969 is ``49.7%``.
    """
    for decimals in range(_MOST_DECIMALS + 1):
        text = _written(p, decimals)
        if text is None:
            return _extreme(p)
        if is_low(_read(text, p)) == is_low(p):
            return text
    return f"under {UNSURE_BELOW:.0%}"


def percents(top: Sequence[tuple[str, float]]) -> list[str]:
    """The probabilities of ``top`` (best first) written for one display, as the verdict reads them.

    Each is :func:`percent`, but the first two get as many decimals as it takes for the figures
    a reader sees to give the same verdict: 0.6054 and 0.4556 are ``60.5%`` and ``45.6%`` beside
    "less than 15 points ahead", not 61 % and 46 %.
    """
    texts = [percent(p) for _, p in top]
    if len(top) < 2:
        return texts
    first, second = _top_two(top)
    for decimals in range(_MOST_DECIMALS + 1):
        for second_decimals in sorted({0, decimals}):
            pair = [_written(first, decimals), _written(second, second_decimals)]
            shown = [_read(pair[0], first), _read(pair[1], second)]
            if is_low(shown[0]) == is_low(first) and is_close(*shown) == is_close(first, second):
                texts[:2] = [text or _extreme(p) for text, p in zip(pair, (first, second))]
                return texts
    return texts


def decimal(p: float, digits: int = 4) -> str:
    """A probability for a CSV: ``digits`` decimals, or more where those would round it to 0 or 1 (``0.99996``)."""
    for places in range(digits, 10):
        text = f"{p:.{places}f}"
        if (0.0 < p < 1.0) is (0.0 < float(text) < 1.0):
            return text
    return repr(float(p))
