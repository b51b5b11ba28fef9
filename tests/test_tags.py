"""genrewiz.tags on real files of every taggable format: the genre lands where players read it, audio untouched."""

from __future__ import annotations

import csv
import io
import json
import struct
from pathlib import Path

import av
import mutagen
import numpy as np
import pytest
import soundfile as sf

from genrewiz.verdict import is_unsure
from genrewiz.tags import TagError, genre_tag, restore_file, tag_file
from synthetic import SONG, synth_clip, write_clip
from test_cli import run_cli

FORMATS = ("mp3", "flac", "ogg", "opus", "wav", "aiff")


def make_clip(folder: Path, ext: str) -> Path:
    """A 2 s clip in ``ext``'s format (Opus needs 48 kHz and an explicit subtype)."""
    if ext == "opus":
        path = folder / "clip.opus"
        sf.write(path, synth_clip(SONG, 2.0, 48_000), 48_000, format="OGG", subtype="OPUS")
        return path
    return write_clip(folder / f"clip.{ext}", SONG, 2.0)


def make_m4a(path: Path, seconds: float = 2.0, faststart: bool = False) -> Path:
    """A real AAC ``.m4a``; ``faststart`` puts the ``moov`` atom before the media, as iTunes and phones do."""
    samples = synth_clip(SONG, seconds, 44_100)
    options = {"movflags": "faststart"} if faststart else {}
    planar = np.ascontiguousarray(samples[None, :])
    with av.open(str(path), "w", format="mp4", options=options) as out:
        stream = out.add_stream("aac", rate=44_100, layout="mono")
        for start in range(0, planar.shape[1], 4096):
            frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(planar[:, start : start + 4096]), format="fltp", layout="mono")
            frame.sample_rate = 44_100
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
    return path


def decoded(path: Path) -> np.ndarray:
    """Every sample of ``path``, decoded the way GenreWiz checks a tagged copy (PyAV for m4a, else libsndfile)."""
    if path.suffix == ".m4a":
        with av.open(str(path)) as container:
            return np.concatenate([f.to_ndarray().ravel() for f in container.decode(audio=0)])
    return sf.read(path, dtype="float32")[0]


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


@pytest.mark.parametrize("faststart", [False, True], ids=["moov-last", "moov-first"])
def test_m4a_gets_the_itunes_genre_atom_and_its_audio_stays(tmp_path, faststart):
    path = make_m4a(tmp_path / "song.m4a", faststart=faststart)
    before = decoded(path)
    assert tag_file(path, "jazz", 0.75).action == "tagged"
    assert tag_fields(path) == (["Jazz"], ["0.7500"])
    assert np.array_equal(decoded(path), before)


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
    for confidence, runner_up in [(0.42, 0.38), (0.49, 0.1), (0.6, 0.5)]:  # what the app shows as "Not sure"
        doubt = tag_file(path, "rock", confidence, runner_up=runner_up)
        assert doubt.action == "uncertain" and doubt.describe().startswith("not tagged: not sure")
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
    au = write_clip(tmp_path / "clip.au", SONG, 2.0)
    with pytest.raises(TagError, match=r"clip\.au: cannot tag this format"):
        tag_file(au, "rock", 0.9)
    with pytest.raises(TagError, match=r"gone\.mp3: cannot read"):
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
    styles = {"wav": SONG, "flac": SONG, "ogg": SONG, "mp3": SONG}  # four gallery songs (seeds 0-3): four different scores
    clips = {ext: write_clip(root / f"song.{ext}", style, 3.0, seed=i) for i, (ext, style) in enumerate(styles.items())}
    labelled = write_clip(root / "labelled.flac", SONG, 3.0, seed=4)  # metal_chaos_god: a sure answer
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
    for path in clips.values():  # by default, what the app calls "Not sure" is not written
        top = [(g["label"], g["confidence"]) for g in planned[path.name]["top"]]
        assert planned[path.name]["tag"]["action"] == ("uncertain" if is_unsure(top) else "would tag")
        assert planned[path.name]["tag"]["genre"] == genre_tag(top[0][0])
    assert planned["labelled.flac"]["top"] == [], "a file with a genre is kept without being analysed"
    forced = run_cli("tag", str(root), "--dry-run", "--min-confidence", "0", "--format", "jsonl", "-q")
    planned = {Path(r["path"]).name: r for r in map(json.loads, forced.stdout.splitlines())}
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
    assert "4 analysed, 2 failed, 1 kept unanalysed (they had a genre)" in done.stderr

    table = run_cli("tag", str(labelled), "--overwrite")
    assert table.returncode == 0, table.stderr
    label = json.loads(run_cli("predict", str(labelled), "--format", "jsonl", "-q").stdout)["top"][0]["label"]
    header, row = table.stdout.splitlines()
    assert header.split() == ["FILE", "GENRE", "CONFIDENCE", "LENGTH", "ALSO", "TAG"]
    assert row.endswith(f"  tagged {genre_tag(label)} (was 'Shoegaze')")  # the last column
    assert tag_fields(labelled)[0] == [genre_tag(label)]
    assert np.array_equal(sf.read(labelled, dtype="float32")[0], samples[labelled])


def test_tag_csv_has_a_tag_column(tmp_path):
    clip = write_clip(tmp_path / "clip.flac", SONG, 3.0)
    done = run_cli("tag", str(clip), "--dry-run", "--min-confidence", "0", "--format", "csv", "-q")
    assert done.returncode == 0, done.stderr
    row = next(csv.DictReader(io.StringIO(done.stdout)))
    assert row["status"] == "ok" and row["tag"] == f"would tag {genre_tag(row['genre_1'])}"
    bad = run_cli("tag", str(clip), "--min-confidence", "1.5")
    assert bad.returncode == 2 and "genrewiz tag: error: argument --min-confidence: must be between 0 and 1" in bad.stderr


# --- files that must be refused, and left exactly as they were ---------------------------------


def wav_bytes(tmp_path: Path) -> bytes:
    return write_clip(tmp_path / "source.wav", SONG, 3.0).read_bytes()


def wav_with_riff_size_under_the_file(tmp_path: Path) -> bytes:
    """A recording whose RIFF size says the file ends earlier than it does (junk after it)."""
    data = bytearray(wav_bytes(tmp_path) + bytes(275))
    return bytes(data)


def truncated_wav(tmp_path: Path) -> bytes:
    """A recording cut off mid-stream: its header still claims the whole length."""
    data = wav_bytes(tmp_path)
    return data[: len(data) - 10_001]


def streamed_wav(tmp_path: Path) -> bytes:
    """What ``ffmpeg ... -f wav -`` writes to a pipe: RIFF and data sizes 0xFFFFFFFF."""
    data = bytearray(wav_bytes(tmp_path))
    data[4:8] = b"\xff\xff\xff\xff"
    at = data.index(b"data")
    data[at + 4 : at + 8] = b"\xff\xff\xff\xff"
    return bytes(data)


@pytest.mark.parametrize(
    ("make", "reason"),
    [
        (wav_with_riff_size_under_the_file, "header's sizes do not match the file"),
        (truncated_wav, "header's sizes do not match the file"),
        (streamed_wav, "a streamed WAV"),
    ],
    ids=["riff-size-under-file", "truncated", "streamed"],
)
def test_inconsistent_wavs_are_refused_untouched(tmp_path, make, reason):
    path = tmp_path / "rec.wav"
    path.write_bytes(make(tmp_path))
    original = path.read_bytes()
    with pytest.raises(TagError, match=reason):
        tag_file(path, "rock", 0.9)
    assert path.read_bytes() == original
    assert sorted(p.name for p in tmp_path.iterdir()) == ["rec.wav", "source.wav"]  # no copy left behind


def test_streamed_wav_is_an_error_row_through_the_cli_and_resume_goes_on(tmp_path):
    root = tmp_path / "library"
    root.mkdir()
    (root / "streamed.wav").write_bytes(streamed_wav(tmp_path))
    write_clip(root / "good.flac", SONG, 3.0)
    original = (root / "streamed.wav").read_bytes()
    out = tmp_path / "rows.jsonl"
    for attempt in ("first", "resume"):
        args = ["tag", str(root), "--format", "jsonl", "--output", str(out), "--min-confidence", "0", "-q"]
        done = run_cli(*args, *(["--resume"] if attempt == "resume" else []))
        assert "Traceback" not in done.stderr, done.stderr
        assert (root / "streamed.wav").read_bytes() == original
    rows = [row for row in map(json.loads, out.read_text().splitlines()) if not row.get("pending")]
    streamed = [r for r in rows if r["path"].endswith("streamed.wav")]
    assert streamed and all("a streamed WAV" in r["error"] for r in streamed)
    assert [r["tag"]["action"] for r in rows if r["path"].endswith("good.flac")] == ["tagged"]


def test_id3v22_symlinks_and_resume_output_on_audio_are_refused(tmp_path):
    old = make_clip(tmp_path, "mp3")
    tags = mutagen.id3.ID3()
    tags.add(mutagen.id3.TIT2(encoding=0, text=["Old"]))
    tags.save(old, v2_version=3)
    data = bytearray(old.read_bytes())
    # mutagen writes v2.3 or v2.4 only; an ID3v2.2 tag with one TT2 frame, by hand:
    frame = b"TT2" + (4).to_bytes(3, "big") + b"\x00Old"
    header = b"ID3\x02\x00\x00" + bytes([0, 0, (len(frame) >> 7) & 0x7F, len(frame) & 0x7F])
    size = 10 + int.from_bytes(bytes(data[6:10]), "big")  # syncsafe, small enough here
    old.write_bytes(header + frame + bytes(data[size:]))
    assert mutagen.id3.ID3(old).version[:2] == (2, 2)
    before = old.read_bytes()
    with pytest.raises(TagError, match="ID3v2.2"):
        tag_file(old, "rock", 0.9)
    assert old.read_bytes() == before

    outside = tmp_path / "outside"
    outside.mkdir()
    target = make_clip(outside, "flac")
    library = tmp_path / "library"
    library.mkdir()
    (library / "link.flac").symlink_to(target)
    target_bytes = target.read_bytes()
    with pytest.raises(TagError, match="symbolic link"):
        tag_file(library / "link.flac", "rock", 0.9)
    assert target.read_bytes() == target_bytes and (library / "link.flac").is_symlink()

    song = make_clip(library, "wav")
    song_bytes = song.read_bytes()
    refused = run_cli("tag", str(library), "--format", "jsonl", "--resume", "--output", str(song))
    assert refused.returncode == 2 and "audio file" in refused.stderr, refused.stderr
    assert song.read_bytes() == song_bytes


def test_own_fields_only_leaves_the_standard_genre_and_restore_undoes_tagging(tmp_path):
    labelled = make_clip(tmp_path, "flac")
    audio = mutagen.File(labelled)
    audio["GENRE"] = "Shoegaze"
    audio["TITLE"] = "Song"
    audio.save()
    own = tag_file(labelled, "rock", 0.9, own_fields_only=True)
    assert (own.action, own.field, own.previous) == ("tagged", "genrewiz", None)
    tags = mutagen.File(labelled).tags
    assert tags["GENRE"] == ["Shoegaze"] and tags["GENREWIZ_GENRE"] == ["Rock"] and tags["GENREWIZ_CONFIDENCE"] == ["0.9000"]

    plain = make_clip(tmp_path / "plain", "mp3")
    samples = decoded(plain)
    row = tag_file(plain, "jazz", 0.8)
    assert tag_fields(plain) == (["Jazz"], ["0.8000"])
    restored = restore_file(plain, "Jazz", row.previous)
    assert restored.action == "restored" and tag_fields(plain) == ([], [])
    assert np.array_equal(decoded(plain), samples)
    tag_file(plain, "jazz", 0.8)
    edited = mutagen.File(plain)
    edited.tags.setall("TCON", [mutagen.id3.TCON(encoding=3, text=["Bebop"])])
    edited.save()
    with pytest.raises(TagError, match="its genre is now 'Bebop'"):
        restore_file(plain, "Jazz", None)


def test_restore_command_puts_previous_genres_back(tmp_path):
    root = tmp_path / "library"
    labelled = write_clip(root / "labelled.flac", SONG, 3.0, seed=1)
    audio = mutagen.File(labelled)
    audio["GENRE"] = "Shoegaze"
    audio.save()
    fresh = write_clip(root / "fresh.ogg", SONG, 3.0, seed=2)
    rows = tmp_path / "rows.jsonl"
    done = run_cli("tag", str(root), "--overwrite", "--min-confidence", "0", "--format", "jsonl", "--output", str(rows), "-q")
    assert done.returncode == 0, done.stderr
    assert tag_fields(labelled)[0] != ["Shoegaze"] and tag_fields(fresh)[0]
    undo = run_cli("tag", "--restore", str(rows), "--format", "jsonl", "-q")
    assert undo.returncode == 0, undo.stderr
    actions = {Path(r["path"]).name: r["tag"]["action"] for r in map(json.loads, undo.stdout.splitlines())}
    assert actions == {"labelled.flac": "restored", "fresh.ogg": "restored"}
    assert tag_fields(labelled) == (["Shoegaze"], []) and tag_fields(fresh) == ([], [])
