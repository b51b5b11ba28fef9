"""README's example outputs are the shipped model's, as ``examples/predict_examples.py --update`` writes them.

New weights make these fail until that one command has been run again.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "examples"))

import predict_examples  # noqa: E402

from genrewiz import GenreClassifier  # noqa: E402
from genrewiz.hub import bundled_source  # noqa: E402

README = (ROOT / "README.md").read_text(encoding="utf-8")


def block(name: str) -> str:
    """What README holds between ``<!-- name:start -->`` and ``<!-- name:end -->``."""
    start, end = f"<!-- {name}:start -->", f"<!-- {name}:end -->"
    assert start in README and end in README, f"README lost the markers of {name}"
    return README.split(start, 1)[1].split(end, 1)[0].strip("\n")


@pytest.fixture(scope="module")
def shipped(classifier) -> GenreClassifier:
    """The bundled model as ``genrewiz`` resolves it offline (README names the weights so)."""
    return GenreClassifier(classifier.model, bundled_source())


@pytest.mark.parametrize("name", ["page-verdict", "page-trust", "analyse-example"])
def test_readme_shows_what_the_page_and_api_say_now(shipped, name):
    assert block(name) == predict_examples.BLOCKS[name](shipped)


@pytest.mark.slow
def test_readme_shows_what_the_command_line_prints_now(shipped):
    assert block("cli-example") == predict_examples.cli_example(shipped)


def test_update_keeps_each_block_inline_or_on_lines_of_its_own():
    text = "a <!-- x:start -->old<!-- x:end --> b\n<!-- y:start -->\nold\n<!-- y:end -->\n"
    updated, missing = predict_examples.update(text, {"x": "new", "y": "new\nlines", "z": "?"})
    assert updated == "a <!-- x:start -->new<!-- x:end --> b\n<!-- y:start -->\nnew\nlines\n<!-- y:end -->\n"
    assert missing == ["z"]
