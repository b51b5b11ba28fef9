"""Shared fixtures: a real (bundled) classifier and a corpus of inputs that must be refused."""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from genrewiz import GenreClassifier
from genrewiz.hub import BUNDLED_DIR
from synthetic import write_clip

GTZAN_MINI = Path(__file__).resolve().parents[1].parent / "shared" / "gtzan-mini"


@pytest.fixture(scope="session")
def classifier() -> GenreClassifier:
    """The checkpoint shipped in the package, loaded once for the whole session."""
    return GenreClassifier.from_pretrained(BUNDLED_DIR)


def make_bad_inputs(root: Path) -> dict[str, Path]:
    """Files and paths no analysis should accept, each named for what is wrong with it."""
    root.mkdir(parents=True, exist_ok=True)
    bad: dict[str, Path] = {}
    bad["not_audio"] = root / "notes.wav"
    bad["not_audio"].write_bytes(b"This is a text file, not a RIFF/WAVE stream.\n" * 20)
    good = write_clip(root / "good.wav", "pad", 5.0)
    bad["truncated"] = root / "truncated.wav"
    bad["truncated"].write_bytes(good.read_bytes()[:30])
    bad["empty"] = root / "empty.wav"
    bad["empty"].touch()
    bad["zero_frames"] = root / "zero_frames.wav"
    sf.write(bad["zero_frames"], np.zeros((0,), dtype=np.float32), 22_050)
    bad["silent"] = root / "silent.wav"
    sf.write(bad["silent"], np.zeros(22_050 * 5, dtype=np.float32), 22_050)
    bad["too_short"] = write_clip(root / "half_second.wav", "hihat", 0.5)
    bad["unsupported"] = root / "song.m4a"
    bad["unsupported"].write_bytes(struct.pack(">I", 24) + b"ftypM4A " + bytes(200))
    bad["directory"] = root / "a_folder.wav"
    bad["directory"].mkdir(exist_ok=True)
    bad["missing"] = root / "does_not_exist.mp3"
    good.unlink()
    return bad


@pytest.fixture()
def bad_inputs(tmp_path: Path) -> dict[str, Path]:
    return make_bad_inputs(tmp_path / "bad")
