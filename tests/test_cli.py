"""The ``genrewiz`` CLI over a folder of good and bad files, through a real subprocess."""

from __future__ import annotations

import csv
import fcntl
import io
import json
import os
import pty
import re
import select
import struct
import subprocess
import sys
import tempfile
import termios
import time
from pathlib import Path

import pytest

from conftest import make_bad_inputs
from encoded import ENCODINGS, write_encoded
from genrewiz.audio import find_audio_files
from genrewiz.hub import BUNDLED_DIR
from synthetic import synth_clip, write_clip

GENRES = {"blues", "classical", "country", "disco", "hiphop", "jazz", "metal", "pop", "reggae", "rock"}


UNDO_DIR = Path(tempfile.gettempdir()) / f"genrewiz-test-undo-{os.getpid()}"
"""Where the tests' plain ``genrewiz tag`` runs keep their undo records (not the user's state folder)."""


def cli_env() -> dict[str, str]:
    """The environment of a test's CLI run: the bundled weights, offline, undo records in :data:`UNDO_DIR`."""
    return {**os.environ, "HF_HUB_OFFLINE": "1", "GENREWIZ_MODEL": str(BUNDLED_DIR), "GENREWIZ_UNDO_DIR": str(UNDO_DIR)}


def run_cli(*args: str, cwd: Path | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "genrewiz", *args], capture_output=True, text=True, env=cli_env(), timeout=timeout, cwd=cwd
    )


@pytest.fixture()
def library(tmp_path: Path) -> Path:
    """A music folder with nested good clips in several formats and a few broken files."""
    root = tmp_path / "library"
    write_clip(root / "a" / "pulse.wav", "bass_pulse", 8.0)
    write_clip(root / "a" / "deep" / "pad.flac", "pad", 31.0)
    write_clip(root / "b" / "chirp.ogg", "chirp", 3.0)
    write_clip(root / "b" / "hats.mp3", "hihat", 5.0)
    (root / "b" / "cover.jpg").write_bytes(b"\xff\xd8 not audio")
    bad = make_bad_inputs(tmp_path / "scratch")
    for case in ("not_audio", "silent", "too_short"):
        bad[case].rename(root / f"broken_{case}.wav")
    return root


def test_folder_scan_is_recursive_and_skips_non_audio(library):
    names = [p.name for p in find_audio_files([library])]
    assert sorted(names) == sorted(
        ["pulse.wav", "pad.flac", "chirp.ogg", "hats.mp3", "broken_not_audio.wav", "broken_silent.wav", "broken_too_short.wav"]
    )


def test_csv_reports_every_file_and_fails_when_some_fail(library, tmp_path):
    out = tmp_path / "tags.csv"
    done = run_cli("predict", str(library), "--format", "csv", "--top", "2", "--output", str(out), "--jobs", "2")
    assert done.returncode == 1, done.stderr
    assert "3 of 7 files could not be analysed" in done.stderr
    rows = {Path(r["path"]).name: r for r in csv.DictReader(out.open())}
    assert len(rows) == 7
    for name in ("pulse.wav", "pad.flac", "chirp.ogg", "hats.mp3"):
        row = rows[name]
        assert row["status"] == "ok" and row["error"] == ""
        assert row["genre_1"] in GENRES
        assert 0.0 <= float(row["confidence_2"]) <= float(row["confidence_1"]) <= 1.0
    assert float(rows["pad.flac"]["duration_s"]) == pytest.approx(31.0, abs=0.05)
    assert "silent" in rows["broken_silent.wav"]["error"]
    assert "too short" in rows["broken_too_short.wav"]["error"]
    assert rows["broken_not_audio.wav"]["status"] == "error" and rows["broken_not_audio.wav"]["genre_1"] == ""


def test_json_to_stdout_and_success_exit(library):
    done = run_cli("predict", str(library / "a"), str(library / "b" / "chirp.ogg"), "--format", "json", "--top", "5", "-q")
    assert done.returncode == 0, done.stderr
    results = json.loads(done.stdout)
    assert [Path(r["path"]).name for r in results] == ["pad.flac", "pulse.wav", "chirp.ogg"]
    for result in results:
        assert result["ok"] and result["error"] is None and len(result["top"]) == 5
        assert sum(t["confidence"] for t in result["top"]) <= 1.0 + 1e-3
        assert "windows" not in result


def test_table_output_serial_matches_parallel(library):
    serial = run_cli("predict", str(library), "--jobs", "1", "-q")
    parallel = run_cli("predict", str(library), "--jobs", "2", "-q")
    assert serial.returncode == parallel.returncode == 1
    assert serial.stdout == parallel.stdout
    header, *lines = serial.stdout.strip().splitlines()
    assert len(lines) == 7 and sum("ERROR:" in line for line in lines) == 3


PERCENT = r"(\d+(\.\d+)?%|over 99%|under 1%)"
"""A confidence as :func:`genrewiz.verdict.percent` writes it."""


def test_table_has_a_header_and_aligned_columns(library):
    done = run_cli("predict", ".", "--top", "3", "-q", cwd=library)
    header, *lines = done.stdout.rstrip("\n").split("\n")
    assert header.split() == ["FILE", "GENRE", "CONFIDENCE", "LENGTH", "ALSO"]
    columns = [header.index(name) for name in ("GENRE", "CONFIDENCE", "LENGTH", "ALSO")]
    for line in lines:
        if "ERROR:" in line:
            assert line.index("ERROR:") == columns[0]
            continue
        path, genre = line[: columns[0]].rstrip(), line[columns[0] : columns[1]].strip()
        assert (library / path).is_file() and genre in {*GENRES, "not music"}
        if genre == "not music":  # a synthetic hiss or sweep: no confidence, its closest genres under ALSO
            assert not line[columns[1] : columns[1] + len("CONFIDENCE")].strip()
            assert re.fullmatch(rf"(\w+ {PERCENT}, ){{2}}\w+ {PERCENT}", line[columns[3] :])
        else:
            assert re.fullmatch(rf" *{PERCENT}", line[columns[1] : columns[1] + len("CONFIDENCE")])  # right-aligned under its title
            assert re.fullmatch(rf"(\w+ {PERCENT}, )\w+ {PERCENT}", line[columns[3] :])
        assert re.fullmatch(r" *\d+:\d\d", line[columns[2] : columns[2] + len("LENGTH")])
    assert "pad.flac" in done.stdout and " 0:31 " in next(line for line in lines if "pad.flac" in line)


def test_help_shows_the_defaults():
    done = run_cli("predict", "--help")
    text = " ".join(done.stdout.split())
    assert done.returncode == 0
    assert "how many genres to report per file (default: 3)" in text
    assert "seconds analysed per file (default: 600.0)" in text
    assert "(default: None)" not in text and "(default: False)" not in text


def test_windows_add_the_timeline_to_json_rows(library, classifier, tmp_path):
    long_path = write_clip(tmp_path / "long.flac", "chirp", 75.0)
    done = run_cli("predict", str(long_path), str(library / "b" / "chirp.ogg"), "--format", "jsonl", "--windows", "-q")
    assert done.returncode == 0, done.stderr
    long, short = (json.loads(line) for line in done.stdout.splitlines())
    expected = classifier.predict(long_path)
    assert [w["start_s"] for w in long["windows"]] == pytest.approx(list(expected.window_starts), abs=1e-3)
    assert len(long["windows"]) >= 3
    for window, probabilities in zip(long["windows"], expected.window_probabilities):
        assert [window["confidences"][g] for g in expected.labels] == pytest.approx(list(probabilities), abs=1e-3)
    assert [w["start_s"] for w in short["windows"]] == [0.0] and short["windows"][0]["end_s"] == pytest.approx(3.0, abs=0.05)
    for row in (long, short):
        for window in row["windows"]:
            assert set(window["confidences"]) == GENRES and sum(window["confidences"].values()) == pytest.approx(1.0, abs=1e-3)
            assert window["start_s"] < window["end_s"] <= row["duration_s"] + 0.01
        mean = {g: sum(w["confidences"][g] for w in row["windows"]) / len(row["windows"]) for g in GENRES}
        assert row["top"][0]["label"] == max(mean, key=mean.get)  # the song's answer is the windows' mean
    refused = run_cli("predict", str(library), "--windows")
    assert refused.returncode == 2 and "--windows needs --format json or jsonl" in refused.stderr


def test_a_folder_of_phone_and_browser_formats_is_analysed(tmp_path):
    """.m4a (AAC), .aac, .wma, .webm (Opus), .mka: found in folders and decoded, no "no audio files found"."""
    for i, ext in enumerate(sorted(ENCODINGS)):
        write_encoded(tmp_path / "phone" / f"clip{i}.{ext}", synth_clip("pad", 4.0, 48_000, seed=i), 48_000)
    done = run_cli("predict", str(tmp_path / "phone"), "--format", "jsonl", "-q", "--jobs", "1")
    assert done.returncode == 0, done.stderr
    rows = [json.loads(line) for line in done.stdout.splitlines()]
    assert sorted(Path(r["path"]).suffix for r in rows) == sorted(f".{ext}" for ext in ENCODINGS)
    assert all(r["ok"] and r["duration_s"] == pytest.approx(4.0, abs=0.1) for r in rows), rows


def screen_lines(raw: bytes) -> list[str]:
    """What a terminal shows for ``raw``: each line as left by its last carriage returns and overwrites."""
    shown = []
    for line in raw.decode(errors="replace").replace("\r\n", "\n").split("\n"):
        screen = ""
        for segment in line.split("\r"):
            screen = segment + screen[len(segment) :]
        shown.append(screen.rstrip())
    return shown


def test_progress_bar_never_breaks_a_row_on_a_terminal(library):
    """Rows on stdout and the bar on stderr share one terminal (a pty): every row is a line of its own."""
    main, secondary = pty.openpty()
    fcntl.ioctl(secondary, termios.TIOCSWINSZ, struct.pack("HHHH", 50, 200, 0, 0))  # a 200-column terminal
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "GENREWIZ_MODEL": str(BUNDLED_DIR)}
    process = subprocess.Popen(
        [sys.executable, "-m", "genrewiz", "predict", str(library), "--jobs", "1"], stdout=secondary, stderr=secondary, env=env
    )
    os.close(secondary)
    raw, deadline = b"", time.monotonic() + 300
    while True:
        assert select.select([main], [], [], max(0.0, deadline - time.monotonic()))[0], f"no output for 300 s: {raw[-500:]!r}"
        try:
            chunk = os.read(main, 65536)
        except OSError:  # the process closed the terminal
            break
        if not chunk:
            break
        raw += chunk
    assert process.wait(timeout=300) == 1
    os.close(main)
    assert b"7/7 [" in raw, raw  # the bar was drawn
    shown = screen_lines(raw)
    rows = [line for line in shown if line.startswith(str(library))]
    assert len(rows) == 7, shown
    for row in rows:
        assert "%|" not in row and "file/s" not in row, row


def test_a_mistyped_model_folder_is_an_error(tmp_path, library):
    (tmp_path / "runs" / "filtered").mkdir(parents=True)
    done = run_cli("predict", str(library / "a"), "--model", "runs/filtred", cwd=tmp_path)
    assert done.returncode == 2 and done.stdout == ""
    assert "genrewiz: cannot load model: model folder not found: runs/filtred" in done.stderr
    unreachable = run_cli("predict", str(library / "a"), "--model", "someone/not-cached", cwd=tmp_path)
    assert unreachable.returncode == 2 and "could not be fetched from the Hub" in unreachable.stderr


def test_missing_file_is_a_usage_error_naming_its_full_path(tmp_path):
    done = run_cli("predict", str(tmp_path / "nope.mp3"), "--format", "csv")
    assert done.returncode == 2 and done.stdout == ""
    assert f"no such file or folder: {tmp_path / 'nope.mp3'}" in done.stderr


def test_usage_errors(tmp_path):
    (tmp_path / "empty").mkdir()
    nothing = run_cli("predict", str(tmp_path / "empty"))
    assert nothing.returncode == 2 and "no audio files found" in nothing.stderr
    bad_top = run_cli("predict", str(tmp_path), "--top", "0")
    assert bad_top.returncode == 2 and "--top" in bad_top.stderr
    bad_model = run_cli("predict", str(tmp_path), "--model", str(tmp_path / "missing-model"))
    assert bad_model.returncode == 2
