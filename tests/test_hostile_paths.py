"""Hostile folders and outputs: FIFOs, links to devices, link loops, and outputs that are links to audio.

Each case runs the real CLI in a subprocess with a deadline (a FIFO that is opened blocks
forever) and a 2 GB address-space limit (a link to ``/dev/zero`` that is read never ends).
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
from pathlib import Path

import pytest

from genrewiz.audio import find_audio_files
from synthetic import SONG, write_clip
from test_cli import cli_env

MEMORY_LIMIT = 2 << 30


def run_bounded(*args: str) -> subprocess.CompletedProcess:
    """The CLI with a deadline and :data:`MEMORY_LIMIT` of address space."""

    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (MEMORY_LIMIT, MEMORY_LIMIT))

    return subprocess.run(
        [sys.executable, "-m", "genrewiz", *args], capture_output=True, text=True, env=cli_env(), timeout=180, preexec_fn=limit
    )


def rows_by_name(stdout: str) -> dict[str, dict]:
    return {Path(r["path"]).name: r for r in map(json.loads, stdout.splitlines()) if not r.get("pending")}


@pytest.fixture()
def hostile(tmp_path: Path) -> Path:
    """A folder with a good clip, a FIFO and links to endless devices, all named like audio."""
    root = tmp_path / "library"
    write_clip(root / "good.flac", SONG, 3.0)
    os.mkfifo(root / "pipe.mp3")
    (root / "zero.mp3").symlink_to("/dev/zero")
    (root / "noise.wav").symlink_to("/dev/urandom")
    return root


@pytest.mark.parametrize("command", [["predict"], ["tag", "--dry-run"], ["tag", "--min-confidence", "0"]])
def test_fifos_and_devices_are_error_rows_never_read(hostile, command):
    done = run_bounded(*command, str(hostile), "--format", "jsonl", "--jobs", "2")
    assert "Traceback" not in done.stderr, done.stderr
    assert done.returncode == 1, done.stderr
    rows = rows_by_name(done.stdout)
    assert rows["good.flac"]["ok"]
    assert "not a regular file (a FIFO)" in rows["pipe.mp3"]["error"]
    for name in ("zero.mp3", "noise.wav"):
        assert "not a regular file (a device)" in rows[name]["error"], rows[name]


def test_a_link_loop_with_output_is_an_error_row_and_the_run_goes_on(tmp_path):
    root = tmp_path / "library"
    write_clip(root / "good.wav", SONG, 3.0)
    (root / "a.mp3").symlink_to(root / "b.mp3")
    (root / "b.mp3").symlink_to(root / "a.mp3")
    for command in (["predict"], ["tag", "--min-confidence", "0"]):
        out = tmp_path / f"{command[0]}.jsonl"
        done = run_bounded(*command, str(root), "--format", "jsonl", "--output", str(out))
        assert "Traceback" not in done.stderr, done.stderr
        assert done.returncode == 1, done.stderr
        rows = rows_by_name(out.read_text())
        assert rows["good.wav"]["ok"]
        assert all("symbolic links" in rows[name]["error"] for name in ("a.mp3", "b.mp3")), rows


def test_an_output_that_links_to_audio_or_an_input_is_refused(tmp_path):
    root = tmp_path / "library"
    song = write_clip(root / "song.wav", SONG, 3.0)
    keep = write_clip(tmp_path / "elsewhere" / "keep.mp3", SONG, 3.0)
    originals = {path: path.read_bytes() for path in (song, keep)}
    (tmp_path / "rows.jsonl").symlink_to(keep)
    os.link(keep, tmp_path / "hard.jsonl")
    (tmp_path / "input.txt").symlink_to(song)
    os.link(song, tmp_path / "input_hard.txt")
    for name in ("rows.jsonl", "hard.jsonl", "input.txt", "input_hard.txt"):
        for extra in ([], ["--force"], ["--resume"]):
            done = run_bounded("predict", str(root), "--format", "jsonl", "--output", str(tmp_path / name), *extra)
            assert done.returncode == 2, (name, extra, done.stderr)
            assert "audio" in done.stderr or "one of the audio files" in done.stderr, done.stderr
    assert {path: path.read_bytes() for path in originals} == originals


@pytest.mark.parametrize(
    "content", ['{\n  "theme": "dark",\n  "volume": 7\n}\n', '{"theme": "dark"}\n'], ids=["pretty-json", "one-json-line"]
)
def test_resume_refuses_a_file_that_is_not_all_rows(tmp_path, content):
    write_clip(tmp_path / "library" / "song.wav", SONG, 3.0)
    settings = tmp_path / "settings.json"
    settings.write_text(content)
    done = run_bounded("predict", str(tmp_path / "library"), "--format", "jsonl", "--resume", "--output", str(settings))
    assert done.returncode == 2 and "not a GenreWiz --format jsonl file" in done.stderr, done.stderr
    assert settings.read_text() == content


def test_files_are_listed_in_natural_order(tmp_path):
    root = tmp_path / "library"
    for name in ("song_10.wav", "song_2.wav", "song_1.wav", "Disc 10/a.wav", "Disc 9/a.wav"):
        write_clip(root / name, SONG, 1.5)
    names = [p.relative_to(root).as_posix() for p in find_audio_files([root])]
    assert names == ["Disc 9/a.wav", "Disc 10/a.wav", "song_1.wav", "song_2.wav", "song_10.wav"]
    done = run_bounded("predict", str(root), "--format", "jsonl", "-q")
    assert [Path(r["path"]).relative_to(root).as_posix() for r in map(json.loads, done.stdout.splitlines())] == names
