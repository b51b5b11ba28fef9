"""genrewiz.tags on real files of every taggable format: the genre lands where players read it, audio untouched."""

from __future__ import annotations

import csv
import io
import json
import struct
from pathlib import Path

import mutagen
import numpy as np
import pytest
import soundfile as sf

from genrewiz.tags import TagError, genre_tag, tag_file
from synthetic import synth_clip, write_clip
from test_cli import run_cli

FORMATS = ("mp3", "flac", "ogg", "opus", "wav", "aiff")


def make_clip(folder: Path, ext: str) -> Path:
    """A 2 s clip in ``ext``'s format (Opus needs 48 kHz and an explicit subtype)."""
    if ext == "opus":
        path = folder / "clip.opus"
        sf.write(path, synth_clip("pad", 2.0, 48_000), 48_000, format="OGG", subtype="OPUS")
        return path
    return write_clip(folder / f"clip.{ext}", "pad", 2.0)


def make_m4a(path: Path, media: bytes) -> Path:
    """The smallest MP4 container mutagen accepts: ftyp, a moov with its mvhd, and ``media`` as mdat."""

    def atom(kind: bytes, payload: bytes) -> bytes:
        return struct.pack(">I", 8 + len(payload)) + kind + payload

    mvhd = atom(b"mvhd", bytes(4) + struct.pack(">IIII", 0, 0, 1000, 5000) + bytes(80))
    path.write_bytes(atom(b"ftyp", b"M4A \x00\x00\x02\x00M4A isom") + atom(b"moov", mvhd) + atom(b"mdat", media))
    return path


def tag_fields(path: Path) -> tuple[list[str], list[str]]:
    """(genre values, GenreWiz confidence values) as mutagen reads them back from the file."""
    tags = mutagen.File(path).tags
    if tags is None:  # a file never tagged (a WAV has no tag chunk until one is written)
        return [], []
    if isinstance(tags, mutagen.id3.ID3):
        genres = [g for frame in tags.getall("TCON") for g in frame.text]
        return genres, [str(t) for frame in tags.getall("TXXX:GENREWIZ_CONFIDENCE") for t in frame.text]
    if isinstance(tags, mutagen.mp4.MP4Tags):
        return list(tags.get("\xa9gen", [])), [bytes(v).decode() for v in tags.get("----:com.genrewiz:confidence", [])]
    return list(tags.get("GENRE", [])), list(tags.get("GENREWIZ_CONFIDENCE", []))


@pytest.mark.parametrize("ext", FORMATS)
def test_writes_genre_and_confidence_and_leaves_the_audio_alone(tmp_path, ext):
    path = make_clip(tmp_path, ext)
    before, rate = sf.read(path, dtype="float32")
    result = tag_file(path, "hiphop", 0.712345)
    assert (result.action, result.genre, result.previous) == ("tagged", "Hip-Hop", None)
    assert tag_fields(path) == (["Hip-Hop"], ["0.7123"])
    after, rate_after = sf.read(path, dtype="float32")
    assert rate_after == rate and np.array_equal(before, after)


def test_m4a_gets_the_itunes_genre_atom_and_its_media_bytes_stay(tmp_path):
    media = bytes(range(256)) * 16
    path = make_m4a(tmp_path / "song.m4a", media)
    assert tag_file(path, "jazz", 0.5).action == "tagged"
    assert tag_fields(path) == (["Jazz"], ["0.5000"])
    assert media in path.read_bytes()


@pytest.mark.parametrize("ext", ["mp3", "flac"])
def test_existing_genre_is_kept_unless_overwrite(tmp_path, ext):
    path = make_clip(tmp_path, ext)
    audio = mutagen.File(path, easy=True)
    if audio.tags is None:
        audio.add_tags()
    audio["genre"] = "Shoegaze"
    audio.save()

    kept = tag_file(path, "rock", 0.9)
    assert kept.action == "kept" and kept.previous == "Shoegaze" and "--overwrite" in kept.describe()
    assert tag_fields(path) == (["Shoegaze"], [])

    replaced = tag_file(path, "rock", 0.9, overwrite=True)
    assert replaced.action == "tagged" and replaced.previous == "Shoegaze"
    assert tag_fields(path) == (["Rock"], ["0.9000"])
    assert tag_file(path, "rock", 0.8).describe() == "kept 'Rock' (already the genre)"


def test_id3_numeric_genre_counts_as_a_genre(tmp_path):
    path = make_clip(tmp_path, "mp3")
    tags = mutagen.id3.ID3()
    tags.add(mutagen.id3.TCON(encoding=3, text=["(17)"]))
    tags.save(path)
    assert tag_file(path, "jazz", 0.9).previous == "Rock"


def test_dry_run_and_min_confidence_write_nothing(tmp_path):
    path = make_clip(tmp_path, "flac")
    original = path.read_bytes()
    assert tag_file(path, "metal", 0.8, dry_run=True).action == "would tag"
    uncertain = tag_file(path, "metal", 0.3, min_confidence=0.5)
    assert uncertain.action == "uncertain" and "--min-confidence" in uncertain.describe()
    assert path.read_bytes() == original


def test_id3_version_of_the_file_is_kept(tmp_path):
    path = make_clip(tmp_path, "mp3")
    tags = mutagen.id3.ID3()
    tags.add(mutagen.id3.TIT2(encoding=3, text=["Title"]))
    tags.save(path, v2_version=3)
    tag_file(path, "pop", 0.6)
    tags = mutagen.id3.ID3(path)
    assert tags.version[:2] == (2, 3) and str(tags["TIT2"]) == "Title" and str(tags["TCON"]) == "Pop"


def test_untaggable_files_raise_tag_error(tmp_path):
    au = write_clip(tmp_path / "clip.au", "pad", 2.0)
    with pytest.raises(TagError, match=r"clip\.au: cannot tag this format"):
        tag_file(au, "rock", 0.9)
    with pytest.raises(TagError, match=r"gone\.mp3: cannot read tags"):
        tag_file(tmp_path / "gone.mp3", "rock", 0.9)
    garbage = tmp_path / "garbage.flac"
    garbage.write_bytes(b"fLaC" + bytes(40))
    with pytest.raises(TagError, match=r"garbage\.flac: cannot read tags"):
        tag_file(garbage, "rock", 0.9)


def test_genre_tag_spelling():
    assert [genre_tag(g) for g in ("hiphop", "rock", "classical")] == ["Hip-Hop", "Rock", "Classical"]


# --- genrewiz tag, through the CLI -------------------------------------------------------------


def test_tag_command_writes_tags_keeps_audio_and_goes_on_past_untaggable_files(tmp_path):
    root = tmp_path / "library"
    styles = {"wav": "bass_pulse", "flac": "pad", "ogg": "chirp", "mp3": "hihat"}
    clips = {ext: write_clip(root / f"song.{ext}", style, 3.0, seed=i) for i, (ext, style) in enumerate(styles.items())}
    labelled = write_clip(root / "labelled.flac", "pad", 3.0, seed=9)
    audio = mutagen.File(labelled)
    audio["GENRE"] = "Shoegaze"
    audio.save()
    untaggable = write_clip(root / "sun.au", "chirp", 3.0)  # libsndfile decodes it, mutagen cannot tag it
    (root / "broken.wav").write_bytes(b"not audio" * 50)
    samples = {path: sf.read(path, dtype="float32")[0] for path in [*clips.values(), labelled]}
    files_before = {path: path.read_bytes() for path in root.iterdir()}

    dry = run_cli("tag", str(root), "--dry-run", "--format", "jsonl", "-q")
    assert dry.returncode == 1, dry.stderr
    assert {path: path.read_bytes() for path in root.iterdir()} == files_before  # a dry run writes nothing
    planned = {Path(r["path"]).name: r for r in map(json.loads, dry.stdout.splitlines())}
    assert {n for n, r in planned.items() if r["ok"]} == {"song.wav", "song.flac", "song.ogg", "song.mp3", "labelled.flac"}
    assert planned["labelled.flac"]["tag"]["action"] == "kept" and planned["labelled.flac"]["tag"]["previous"] == "Shoegaze"
    assert all(planned[p.name]["tag"]["action"] == "would tag" for p in clips.values())
    assert "cannot tag this format" in planned["sun.au"]["error"] and planned["sun.au"]["top"]
    assert "not a readable audio file" in planned["broken.wav"]["error"]

    # A threshold between the scores: files under it stay untagged, files over it are tagged.
    scores = sorted(planned[p.name]["top"][0]["confidence"] for p in clips.values())
    threshold = (scores[1] + scores[2]) / 2
    assert scores[1] < threshold < scores[2], "the clips' top scores should differ"
    done = run_cli("tag", str(root), "--min-confidence", f"{threshold:.6f}", "--format", "jsonl")
    assert done.returncode == 1, done.stderr
    rows = {Path(r["path"]).name: r for r in map(json.loads, done.stdout.splitlines())}
    for path in clips.values():
        label, score = rows[path.name]["top"][0]["label"], rows[path.name]["top"][0]["confidence"]
        assert score == planned[path.name]["top"][0]["confidence"]
        if score > threshold:
            assert rows[path.name]["tag"]["action"] == "tagged"
            assert tag_fields(path) == ([genre_tag(label)], [f"{score:.4f}"])
        else:
            assert rows[path.name]["tag"]["action"] == "uncertain" and tag_fields(path) == ([], [])
        after, _ = sf.read(path, dtype="float32")
        assert np.array_equal(after, samples[path]), f"{path.name}: the audio changed"
    assert rows["song.wav"]["size"] == clips["wav"].stat().st_size  # the row describes the file as tagged
    assert tag_fields(labelled)[0] == ["Shoegaze"]
    assert untaggable.read_bytes() == files_before[untaggable]
    assert "2 of 7 files could not be analysed or tagged" in done.stderr
    tags_line = next(line for line in done.stderr.splitlines() if line.startswith("genrewiz: tags: "))
    counts = {action: int(n) for n, action in (part.split(" ", 1) for part in tags_line.split(": ", 2)[2].split(", "))}
    assert counts == {"tagged": 2, "uncertain": 2, "kept": 1}

    table = run_cli("tag", str(labelled), "--overwrite")
    assert table.returncode == 0, table.stderr
    label = json.loads(run_cli("predict", str(labelled), "--format", "jsonl", "-q").stdout)["top"][0]["label"]
    header, row = table.stdout.splitlines()
    assert header.split() == ["FILE", "GENRE", "CONFIDENCE", "LENGTH", "ALSO", "TAG"]
    assert row.endswith(f"  tagged {genre_tag(label)} (was 'Shoegaze')")  # the last column
    assert tag_fields(labelled)[0] == [genre_tag(label)]
    assert np.array_equal(sf.read(labelled, dtype="float32")[0], samples[labelled])


def test_tag_csv_has_a_tag_column(tmp_path):
    clip = write_clip(tmp_path / "clip.flac", "pad", 3.0)
    done = run_cli("tag", str(clip), "--dry-run", "--format", "csv", "-q")
    assert done.returncode == 0, done.stderr
    row = next(csv.DictReader(io.StringIO(done.stdout)))
    assert row["status"] == "ok" and row["tag"] == f"would tag {genre_tag(row['genre_1'])}"
    bad = run_cli("tag", str(clip), "--min-confidence", "1.5")
    assert bad.returncode == 2 and "--min-confidence must be between 0 and 1" in bad.stderr
