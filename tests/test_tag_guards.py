"""Each of the tagger's safeguards, shown to hold on real files: remove one and its test fails.

A copy whose samples differ is refused, mode and owner are kept, a file changed while it was
being tagged (also with its modification time put back) is refused, files and folders the user
may not write are reported, a genre in WAV ``LIST/INFO`` or APEv2 counts, killed runs' leftovers
go, and an undo record survives a stop or a kill right after a rename.
"""

from __future__ import annotations

import fcntl
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import mutagen
import mutagen.apev2
import numpy as np
import pytest
import soundfile as sf

from genrewiz import tags
from genrewiz.tags import TEMP_SUFFIX, TagError, remove_stale_copies, tag_file
from synthetic import SONG, write_clip
from test_cli import UNDO_DIR, cli_env, run_cli
from test_cli_edges import run_cli_unprivileged
from test_tags import tag_fields


def temp_copy(folder: Path, path: Path) -> Path:
    """The copy ``tag_file`` is writing for ``path`` (there is exactly one while it runs)."""
    (copy,) = folder.glob(f".{path.name}.*{TEMP_SUFFIX}")
    return copy


def with_genre(path: Path, genre: str) -> Path:
    audio = mutagen.File(path)
    if audio.tags is None:
        audio.add_tags()
    if isinstance(audio.tags, mutagen.id3.ID3):
        audio.tags.add(mutagen.id3.TCON(encoding=3, text=[genre]))
    else:
        audio["GENRE"] = genre
    audio.save()
    return path


def test_a_copy_whose_samples_differ_is_refused_and_the_file_left_as_it_was(tmp_path):
    path = write_clip(tmp_path / "song.wav", SONG, 2.0)
    original = path.read_bytes()

    def edit_and_damage(tag_block):
        copy = temp_copy(tmp_path, path)
        with open(copy, "r+b") as file:  # a tag writer that damages audio: samples in the middle change
            file.seek(len(original) // 2)
            file.write(b"\x7f" * 64)
        tags._set(tag_block, "genre", "Rock", "0.9000")

    with pytest.raises(TagError, match="would not decode to the same audio"):
        tags._save_safely(path, edit_and_damage)
    assert path.read_bytes() == original
    assert [p.name for p in tmp_path.iterdir()] == ["song.wav"]


@pytest.mark.skipif(os.geteuid() != 0, reason="giving a file another owner needs root")
def test_mode_and_owner_are_kept(tmp_path):
    path = write_clip(tmp_path / "song.flac", SONG, 2.0)
    path.chmod(0o640)
    os.chown(path, 1234, 2345)
    tag_file(path, "rock", 0.9, min_confidence=0.0)
    after = path.stat()
    assert tag_fields(path)[0] == ["Rock"]
    assert (after.st_mode & 0o7777, after.st_uid, after.st_gid) == (0o640, 1234, 2345)


@pytest.mark.parametrize("change", ["grown", "same size, modification time put back"])
def test_a_file_changed_while_it_was_being_tagged_is_refused_and_the_change_kept(tmp_path, change):
    path = write_clip(tmp_path / "song.flac", SONG, 2.0)
    with_genre(path, "Shoegaze")
    before = path.stat()

    def edit_with_another_tool_at_work(tag_block):
        data = bytearray(path.read_bytes())
        if change == "grown":
            data += b"\0" * 10
        else:  # another tagger's same-size edit with "keep modification time" on
            at = data.index(b"Shoegaze")
            data[at : at + 8] = b"Dreampop"
        path.write_bytes(bytes(data))
        os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
        tags._set(tag_block, "genre", "Rock", "0.9000")

    with pytest.raises(TagError, match="changed while it was being tagged"):
        tags._save_safely(path, edit_with_another_tool_at_work)
    if change != "grown":
        assert tag_fields(path)[0] == ["Dreampop"], "the other tool's edit was overwritten"
    assert [p.name for p in tmp_path.iterdir()] == ["song.flac"]


def test_unwritable_files_and_folders_are_error_rows_and_the_run_goes_on(tmp_path):
    root = tmp_path / "library"
    good = write_clip(root / "good.flac", SONG, 3.0)
    locked_song = write_clip(root / "locked" / "song.flac", SONG, 3.0, seed=1)
    read_only = write_clip(root / "read_only.flac", SONG, 3.0, seed=2)
    read_only.chmod(0o444)
    (root / "locked").chmod(0o555)  # a folder no copy can be made in
    locked_bytes, read_only_bytes = locked_song.read_bytes(), read_only.read_bytes()
    try:
        done = run_cli_unprivileged("tag", str(root), "--min-confidence", "0", "--format", "jsonl", "--jobs", "1")
    finally:
        (root / "locked").chmod(0o755)
    assert "Traceback" not in done.stderr, done.stderr
    assert done.returncode == 1, done.stderr
    rows = {Path(r["path"]).name: r for r in map(json.loads, done.stdout.splitlines())}
    assert rows[good.name]["tag"]["action"] == "tagged" and tag_fields(good)[0]
    assert "cannot write tags: Permission denied" in rows["song.flac"]["error"]
    assert "read-only" in rows["read_only.flac"]["error"]
    assert locked_song.read_bytes() == locked_bytes and read_only.read_bytes() == read_only_bytes


def test_restore_into_a_read_only_folder_is_an_error_row(tmp_path):
    root = tmp_path / "library"
    song = write_clip(root / "song.flac", SONG, 3.0)
    rows = tmp_path / "rows.jsonl"
    assert run_cli("tag", str(root), "--min-confidence", "0", "--format", "jsonl", "--output", str(rows)).returncode == 0
    tagged = song.read_bytes()
    root.chmod(0o555)
    try:
        undo = run_cli_unprivileged("tag", "--restore", str(rows), "--format", "jsonl")
    finally:
        root.chmod(0o755)
    assert "Traceback" not in undo.stderr, undo.stderr
    assert undo.returncode == 1 and "Permission denied" in json.loads(undo.stdout)["error"]
    assert song.read_bytes() == tagged


# --- a genre GenreWiz does not write still counts --------------------------------------------


def wav_with_info_genre(path: Path, genre: bytes) -> Path:
    """A WAV whose only genre is in a ``LIST``/``INFO`` ``IGNR`` chunk, as Windows and many recorders write it."""
    write_clip(path, SONG, 2.0)
    text = genre + b"\0"
    text += b"\0" * (len(text) & 1)
    info = b"INFO" + b"IGNR" + len(text).to_bytes(4, "little") + text
    data = bytearray(path.read_bytes() + b"LIST" + len(info).to_bytes(4, "little") + info)
    data[4:8] = (len(data) - 8).to_bytes(4, "little")
    path.write_bytes(bytes(data))
    return path


def mp3_with_ape_genre(path: Path, genre: str) -> Path:
    write_clip(path, SONG, 2.0)
    ape = mutagen.apev2.APEv2()
    ape["Genre"] = genre
    ape.save(path)
    return path


@pytest.mark.parametrize("make", [wav_with_info_genre, mp3_with_ape_genre], ids=["wav-info-ignr", "apev2-genre"])
def test_a_genre_in_a_tag_genrewiz_does_not_write_counts(tmp_path, make):
    path = make(tmp_path / f"song.{'wav' if make is wav_with_info_genre else 'mp3'}", b"Shoegaze" if make is wav_with_info_genre else "Shoegaze")
    original = path.read_bytes()
    kept = tag_file(path, "rock", 0.9, min_confidence=0.0)
    assert (kept.action, kept.previous) == ("kept", "Shoegaze")
    with pytest.raises(TagError, match="two genres"):
        tag_file(path, "rock", 0.9, min_confidence=0.0, overwrite=True)
    assert path.read_bytes() == original
    dry = run_cli("tag", str(path), "--dry-run", "--format", "jsonl", "-q")
    row = json.loads(dry.stdout)
    assert row["tag"]["action"] == "kept" and row["tag"]["previous"] == "Shoegaze" and row["top"] == []


# --- what killed runs leave ----------------------------------------------------------------


def test_stale_copies_of_killed_runs_are_removed_and_live_ones_kept(tmp_path):
    root = tmp_path / "library"
    song = write_clip(root / "song.flac", SONG, 3.0)
    stale = root / f".song.flac.k1ll3d{TEMP_SUFFIX}"
    fresh = root / f".song.flac.fr3sh0{TEMP_SUFFIX}"
    locked = root / f".song.flac.l0ck3d{TEMP_SUFFIX}"
    other = root / ".song.flac.notes"
    for path in (stale, fresh, locked, other):
        path.write_bytes(song.read_bytes())
    long_ago = time.time() - 3600
    for path in (stale, locked, other):
        os.utime(path, (long_ago, long_ago))
    with open(locked, "rb") as held:  # a save in progress holds its copy's lock
        fcntl.flock(held.fileno(), fcntl.LOCK_EX)
        assert remove_stale_copies(root) == [stale]
    assert sorted(p.name for p in root.iterdir()) == sorted([song.name, fresh.name, locked.name, other.name])

    os.utime(fresh, (long_ago, long_ago))
    done = run_cli("tag", str(root), "--min-confidence", "0", "--format", "jsonl", "--output", str(tmp_path / "rows.jsonl"))
    assert done.returncode == 0, done.stderr
    assert "genrewiz: removed 2 temporary copies an interrupted tagging run left" in done.stderr
    assert sorted(p.name for p in root.iterdir()) == sorted([song.name, other.name])


# --- the undo record survives stops and kills around the rename -----------------------------

STOP_AFTER_RENAME = """
import os, signal, sys
from genrewiz import cli

target, signum = sys.argv[1], int(sys.argv[2])
rename = os.replace

def replace_then_stop(source, destination, *args, **kwargs):
    rename(source, destination, *args, **kwargs)
    if os.fspath(destination).endswith(target):
        os.kill(os.getpid(), signum)  # the stop lands right after the tagged copy replaced the file

os.replace = replace_then_stop
sys.exit(cli.main(sys.argv[3:]))
"""


def stop_after_rename(target: Path, signum: int, *args: str) -> subprocess.CompletedProcess:
    command = [sys.executable, "-c", STOP_AFTER_RENAME, target.name, str(int(signum)), *args]
    return subprocess.run(command, capture_output=True, text=True, env=cli_env(), timeout=300)


@pytest.fixture()
def labelled_library(tmp_path: Path) -> tuple[Path, list[Path]]:
    root = tmp_path / "library"
    songs = [with_genre(write_clip(root / f"song_{i}.flac", style, 3.0, seed=i), f"Mine {i}") for i, style in enumerate([SONG, SONG, SONG])]
    return root, songs


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_stop_right_after_a_rename_still_writes_that_files_row(labelled_library, tmp_path, signum):
    root, songs = labelled_library
    rows = tmp_path / "rows.jsonl"
    args = ["tag", str(root), "--overwrite", "--min-confidence", "0", "--format", "jsonl", "--output", str(rows), "--jobs", "1"]
    done = stop_after_rename(songs[1], signum, *args)
    assert done.returncode == 128 + signum, done.stderr
    final = [r for r in map(json.loads, rows.read_text().splitlines()) if not r.get("pending")]
    assert [Path(r["path"]).name for r in final] == ["song_0.flac", "song_1.flac"]
    assert final[1]["tag"] | {"confidence": None} == {
        "action": "tagged", "genre": tag_fields(songs[1])[0][0], "confidence": None, "previous": "Mine 1", "field": "genre"
    }


def test_a_kill_right_after_a_rename_loses_no_undo_record(labelled_library, tmp_path):
    root, songs = labelled_library
    rows = tmp_path / "rows.jsonl"
    args = ["tag", str(root), "--overwrite", "--min-confidence", "0", "--format", "jsonl", "--output", str(rows), "--jobs", "1"]
    done = stop_after_rename(songs[1], signal.SIGKILL, *args)
    assert done.returncode == -signal.SIGKILL
    written = tag_fields(songs[1])[0]
    assert written != ["Mine 1"], "the kill should land after song_1 was tagged"

    resumed = run_cli(*args[:-2], "--resume")  # the killed file is done: GenreWiz's genre is never taken for the user's
    assert resumed.returncode == 0, resumed.stderr
    entries = list(map(json.loads, rows.read_text().splitlines()))
    assert all(e["tag"]["previous"] == f"Mine {Path(e['path']).stem[-1]}" for e in entries), entries
    undo = run_cli("tag", "--restore", str(rows))
    assert undo.returncode == 0, undo.stderr
    assert "genrewiz: restored 3 of 3 files" in undo.stderr
    assert [tag_fields(song)[0] for song in songs] == [["Mine 0"], ["Mine 1"], ["Mine 2"]]


def test_a_plain_tag_run_keeps_an_undo_record_even_when_killed(labelled_library):
    root, songs = labelled_library
    before = set(UNDO_DIR.glob("*.jsonl")) if UNDO_DIR.is_dir() else set()
    done = stop_after_rename(songs[0], signal.SIGKILL, "tag", str(root), "--overwrite", "--min-confidence", "0", "--jobs", "1")
    assert done.returncode == -signal.SIGKILL
    (record,) = set(UNDO_DIR.glob("*.jsonl")) - before
    assert tag_fields(songs[0])[0] != ["Mine 0"]
    finished = run_cli("tag", str(songs[1]), "--overwrite", "--min-confidence", "0")
    assert finished.returncode == 0, finished.stderr
    named = next(line for line in finished.stderr.splitlines() if "undo record:" in line)
    record_2 = Path(named.split("undo record: ", 1)[1].split(" (", 1)[0])
    assert record_2.is_file() and f"genrewiz tag --restore {record_2}" in named
    for path in (record, record_2):
        assert run_cli("tag", "--restore", str(path), "-q").returncode == 0
    assert [tag_fields(song)[0] for song in songs[:2]] == [["Mine 0"], ["Mine 1"]]
    assert "genrewiz tag --restore" in " ".join(run_cli("tag", "--help").stdout.split())


def test_the_undo_record_is_never_overwritten_and_restore_says_what_it_did(labelled_library, tmp_path):
    root, songs = labelled_library
    rows = tmp_path / "rows.jsonl"
    args = ["tag", str(root), "--overwrite", "--min-confidence", "0", "--format", "jsonl", "--output", str(rows)]
    assert run_cli(*args).returncode == 0
    record = rows.read_bytes()
    again = run_cli(*args)
    assert again.returncode == 2 and "exists" in again.stderr and "--resume" in again.stderr and "--force" in again.stderr
    assert rows.read_bytes() == record

    undo = run_cli("tag", "--restore", str(rows), "--dry-run")
    assert undo.returncode == 0 and "genrewiz: would restore 3 of 3 files" in undo.stderr
    assert run_cli("tag", "--restore", str(rows)).returncode == 0
    kept = tmp_path / "kept.jsonl"
    assert run_cli("tag", str(root), "--format", "jsonl", "--output", str(kept)).returncode == 0  # all kept: nothing tagged
    nothing = run_cli("tag", "--restore", str(kept))
    assert nothing.returncode == 1 and "nothing to restore" in nothing.stderr
    table = tmp_path / "rows.csv"
    assert run_cli("tag", str(root), "--dry-run", "--format", "csv", "--output", str(table)).returncode == 0
    not_rows = run_cli("tag", "--restore", str(table))
    assert not_rows.returncode == 2 and "not an undo record" in not_rows.stderr and "line 1 is not JSON" in not_rows.stderr
    forced = run_cli(*args, "--force")
    assert forced.returncode == 0, forced.stderr
