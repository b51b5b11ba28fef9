"""The example gallery: clips within their limits, attributed, and readable by GenreWiz."""

from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

import pytest
import soundfile as sf

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"
sys.path.insert(0, str(EXAMPLES))
from make_examples import CLIPS, LICENCES  # noqa: E402
from predict_examples import table  # noqa: E402


@pytest.mark.parametrize("clip", CLIPS, ids=lambda c: c.output)
def test_clip_is_small_short_and_attributed(clip):
    path = EXAMPLES / clip.output
    info = sf.info(path)
    assert info.duration <= (180.5 if clip.output.startswith("long_") else 30.5)
    assert path.stat().st_size < (2_000_000 if clip.output.startswith("long_") else 1_000_000)
    sources = (EXAMPLES / "SOURCES.md").read_text()
    assert clip.output in sources and LICENCES[clip.licence].name in sources and clip.author in sources


def test_gallery_has_a_long_clip_and_several_genres():
    assert 6 <= len(CLIPS) <= 10
    assert any(c.output.startswith("long_") and c.duration >= 120 for c in CLIPS)
    assert len({c.genre for c in CLIPS}) >= 6


def test_readme_table_lists_every_clip_with_three_genres(classifier):
    text = table(classifier)
    rows = [line for line in text.splitlines() if line.startswith("| `")]
    assert [row.split("`")[1] for row in rows] == [c.output for c in CLIPS]
    for row in rows:
        assert row.count("%") == 3
    readme = (ROOT / "README.md").read_text()
    assert "<!-- examples-table:start -->" in readme and "<!-- examples-table:end -->" in readme


def test_the_cli_tags_the_whole_gallery():
    done = subprocess.run(
        [sys.executable, "-m", "genrewiz", "predict", str(EXAMPLES), "--format", "csv", "-q", "--model", str(ROOT / "genrewiz" / "weights")],
        capture_output=True, text=True, timeout=300,
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.strip().splitlines()
    assert len(lines) == 1 + len(CLIPS) and all(",ok," in line for line in lines[1:])
    rows = list(csv.DictReader(lines))
    assert float(next(r for r in rows if "long_" in r["path"])["duration_s"]) > 120
    assert all(float(r["music"]) >= 0.5 for r in rows), "every gallery clip is music"
