"""The ``genrewiz`` CLI over a folder of good and bad files, through a real subprocess."""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from genrewiz.cli import find_audio_files
from genrewiz.hub import BUNDLED_DIR
from conftest import make_bad_inputs
from synthetic import write_clip


def run_cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "GENREWIZ_MODEL": str(BUNDLED_DIR)}
    return subprocess.run(
        [sys.executable, "-m", "genrewiz", *args], capture_output=True, text=True, env=env, timeout=300, cwd=cwd
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
        assert row["genre_1"] in {"blues", "classical", "country", "disco", "hiphop", "jazz", "metal", "pop", "reggae", "rock"}
        assert 0.0 <= float(row["score_2"]) <= float(row["score_1"]) <= 1.0
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
        assert sum(t["score"] for t in result["top"]) <= 1.0 + 1e-3


def test_table_output_serial_matches_parallel(library):
    serial = run_cli("predict", str(library), "--jobs", "1", "-q")
    parallel = run_cli("predict", str(library), "--jobs", "2", "-q")
    assert serial.returncode == parallel.returncode == 1
    assert serial.stdout == parallel.stdout
    lines = serial.stdout.strip().splitlines()
    assert len(lines) == 7 and sum("ERROR:" in line for line in lines) == 3


def test_missing_file_is_an_error_row(tmp_path):
    done = run_cli("predict", str(tmp_path / "nope.mp3"), "--format", "csv")
    assert done.returncode == 1
    row = next(csv.DictReader(io.StringIO(done.stdout)))
    assert row["status"] == "error" and "not found" in row["error"]


def test_usage_errors(tmp_path):
    (tmp_path / "empty").mkdir()
    nothing = run_cli("predict", str(tmp_path / "empty"))
    assert nothing.returncode == 2 and "no audio files found" in nothing.stderr
    bad_top = run_cli("predict", str(tmp_path), "--top", "0")
    assert bad_top.returncode == 2 and "--top" in bad_top.stderr
    bad_model = run_cli("predict", str(tmp_path), "--model", str(tmp_path / "missing-model"))
    assert bad_model.returncode == 2
