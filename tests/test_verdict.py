"""The verdict rule and the one way probabilities are written (page, API, CLI table, CSV): no
rounding may contradict the words beside it, and the thresholds hold in floating point."""

from __future__ import annotations

import io
import re

import numpy as np
import pytest

from genrewiz import verdict
from genrewiz.output import TableLayout, write_rows
from genrewiz.results import Row

GENRES = ("rock", "blues")


def top(first: float, second: float) -> list[tuple[str, float]]:
    return list(zip(GENRES, (first, second)))


def read(text: str) -> float:
    """What a reader takes a written probability to be; ``over 99%``/``under 1%`` as their bound."""
    return {"over 99%": 0.995, "under 1%": 0.005}.get(text, float(text.rstrip("%")) / 100 if text[0].isdigit() else np.nan)


@pytest.mark.parametrize(
    "first, second",
    [(0.60, 0.45), (0.70, 0.55), (0.65, 0.50), (0.50, 0.35), (0.95, 0.80), (0.80, 0.65), (0.90, 0.75), (0.55, 0.40)],
)
def test_exactly_fifteen_points_ahead_is_sure(first, second):
    """0.60 - 0.45 computes as 0.1499...: still 15 points, not "less than 15" (in float64 and float32)."""
    for a, b in ((first, second), (float(np.float32(first)), float(np.float32(second)))):
        assert not verdict.is_unsure(top(a, b)), (a, b, a - b)
        assert verdict.verdict_text(top(a, b)) == "Most likely rock"


@pytest.mark.parametrize("first, second", [(0.60, 0.4501), (0.70, 0.5502), (0.4999, 0.2), (0.499, 0.1)])
def test_just_under_a_threshold_is_unsure(first, second):
    assert verdict.is_unsure(top(first, second))


def test_exactly_fifty_percent_is_not_low():
    assert not verdict.is_low(0.5) and not verdict.is_low(float(np.float32(0.5))) and verdict.is_low(0.4999)


def test_leaning_when_the_second_is_far_behind():
    assert verdict.verdict_text(top(0.45, 0.15)) == "Not sure, leaning rock"  # only weak: no toss-up between two
    assert verdict.verdict_text(top(0.45, 0.35)) == "Not sure: rock or blues?"  # weak and close
    assert verdict.verdict_text(top(0.55, 0.45)) == "Not sure: rock or blues?"  # close
    assert verdict.doubt_reason(top(0.45, 0.15)) == "the top genre is under 50%"


def test_percent_never_rounds_into_a_claim():
    assert [verdict.percent(p) for p in (0.9955, 1.0, 0.004, 0.0, 0.42, 0.4969, 0.4951, 0.5, 0.5049)] == [
        "over 99%", "over 99%", "under 1%", "under 1%", "42%", "49.7%", "49.5%", "50%", "50%"
    ]


def test_the_figures_beside_a_verdict_give_the_same_verdict():
    """Over many pairs near the thresholds, reading the written figures gives the rule's own answer."""
    rng = np.random.default_rng(0)
    pairs = [(0.4969, 0.2), (0.6054, 0.4556), (0.6046, 0.4544), (0.9996, 0.0003)]
    pairs += [(a, a - d) for a, d in zip(rng.uniform(0.3, 0.9, 3000), rng.uniform(0.13, 0.17, 3000)) if a - d > 0]
    pairs += [(a, b) for a, b in zip(rng.uniform(0.48, 0.52, 3000), rng.uniform(0.0, 0.3, 3000))]
    for first, second in pairs:
        shown = verdict.percents(top(first, second))
        seen = [read(text) for text in shown]
        assert "100%" not in shown and "0%" not in shown
        assert verdict.is_low(seen[0]) == verdict.is_low(first), (first, second, shown)
        assert verdict.is_close(*seen) == verdict.is_close(first, second), (first, second, shown)


def test_decimal_never_writes_a_certainty():
    assert [verdict.decimal(p) for p in (0.99996, 0.00004, 0.5, 0.12345, 1.0)] == ["0.99996", "0.00004", "0.5000", "0.1235", "1.0000"]


def test_cli_table_and_csv_write_probabilities_by_the_same_rule():
    row = Row(path="song.mp3", top=[("metal", 0.99996), ("rock", 0.00003), ("pop", 0.00001)], duration=30.0)
    line = TableLayout(path=10, genre=9, top=3).line(row)
    assert "100%" not in line and " 0%" not in line
    assert re.search(r"metal +over 99% +0:30 +rock under 1%, pop under 1%", line), line
    out = io.StringIO()
    write_rows([row], out, "csv", top=3)
    assert "song.mp3,ok,metal,0.99996,rock,0.00003,pop,0.00001,30.00," in out.getvalue()
