"""Kill loops: ``tag_file`` killed (SIGKILL) at random moments of a save never leaves a damaged file.

Each format gets a large file (a minute of stereo at 44.1 kHz; the FLAC without padding and the
M4A with its ``moov`` first, the layouts that make an in-place save move the audio) and a child
process that tags it on cue. The parent kills the child at moments spread evenly (with random
jitter) over the measured length of a save, then checks that the file still decodes to exactly
its original samples, that mutagen reads its tags (old or new), and that nothing a folder scan
would pick up was left beside it. A kill that leaves a new temporary copy beside an untouched
file landed mid-save, between the copy and the rename: every format must have had one, so two
more kills are timed from the moment the copy appears (at once, and a random part of a save
later), which holds however loaded the machine is. Those leftovers are then removed as a later run removes them.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import mutagen
import mutagen.flac
import numpy as np
import pytest
import soundfile as sf

from genrewiz.audio import find_audio_files
from genrewiz.tags import STALE_AFTER_S, TEMP_SUFFIX, remove_stale_copies
from synthetic import SONG, synth_clip
from test_tags import decoded, make_m4a

KILLS_PER_FORMAT = 6
SECONDS = 60.0
_CHILD = """
import sys, time
from genrewiz.tags import tag_file
path = sys.argv[1]
print("ready", flush=True)
for n, line in enumerate(sys.stdin):
    start = time.perf_counter()
    tag_file(path, ("rock", "jazz")[n % 2], 0.9, overwrite=True, min_confidence=0.0)
    print(f"done {time.perf_counter() - start:.4f}", flush=True)
"""


def large_file(folder: Path, ext: str) -> Path:
    """About a minute of stereo music-like audio in ``ext``'s format, laid out as the riskiest real files are."""
    path = folder / f"big.{ext}"
    if ext == "m4a":
        return make_m4a(path, SECONDS, faststart=True)
    rate = 48_000 if ext == "opus" else 44_100
    stereo = np.stack([synth_clip(SONG, SECONDS, rate, seed=1), synth_clip("hihat", SECONDS, rate, seed=2)], axis=1)
    kwargs = {"format": "OGG", "subtype": "OPUS"} if ext == "opus" else {}
    with sf.SoundFile(path, "w", rate, channels=2, **kwargs) as file:
        for start in range(0, len(stereo), 65_536):  # libsndfile's Vorbis encoder crashes on huge writes
            file.write(stereo[start : start + 65_536])
    if ext == "flac":  # no padding block: mutagen then has to move the audio to grow the tags in place
        flac = mutagen.flac.FLAC(path)
        flac["TITLE"] = "Big"
        flac.save(padding=lambda info: 0)
        assert all(block.length == 0 for block in mutagen.flac.FLAC(path).metadata_blocks if isinstance(block, mutagen.flac.Padding))
    return path


class Tagger:
    """A child process that imports GenreWiz once, then tags the file each time it is told to."""

    def __init__(self, path: Path) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-c", _CHILD, str(path)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
        )
        assert self.process.stdout.readline() == "ready\n"

    def save(self) -> float:
        self.process.stdin.write("go\n")
        self.process.stdin.flush()
        return float(self.process.stdout.readline().split()[1])

    def kill_after(self, delay: float, once_copied: Path | None = None) -> None:
        """Start a save and SIGKILL it ``delay`` s later; with ``once_copied``, ``delay`` s after a new copy appears there."""
        copies = set(once_copied.glob(f".*{TEMP_SUFFIX}")) if once_copied else set()
        self.process.stdin.write("go\n")
        self.process.stdin.flush()
        deadline = time.monotonic() + 300
        while once_copied is not None and not set(once_copied.glob(f".*{TEMP_SUFFIX}")) - copies:
            assert time.monotonic() < deadline, "the save made no copy within 300 s"
            time.sleep(0.001)
        time.sleep(delay)
        os.kill(self.process.pid, signal.SIGKILL)
        self.process.wait()

    def close(self) -> None:
        self.process.stdin.close()
        self.process.wait(timeout=30)


@pytest.mark.parametrize("ext", ["wav", "aiff", "flac", "mp3", "ogg", "opus", "m4a"])
def test_a_kill_at_any_moment_of_a_save_leaves_the_old_or_the_new_file(tmp_path, ext):
    path = large_file(tmp_path, ext)
    samples = decoded(path)
    calibrate = Tagger(path)
    save_seconds = max(calibrate.save(), calibrate.save())
    calibrate.close()
    assert np.array_equal(decoded(path), samples)
    rng = random.Random(ext)
    outcomes = []
    # Kills spread over the save's measured length, then kills as soon as the copy appears
    # (and a random part of a save later): whatever the machine's load, those land mid-save.
    delays = [(kill + rng.uniform(0.2, 0.8)) / KILLS_PER_FORMAT * 1.2 * save_seconds for kill in range(KILLS_PER_FORMAT)]
    for kill, delay in enumerate([*delays, 0.0, rng.uniform(0.0, 0.3) * save_seconds]):
        before, copies_before = path.read_bytes(), set(tmp_path.iterdir())
        Tagger(path).kill_after(delay, once_copied=tmp_path if kill >= KILLS_PER_FORMAT else None)
        after = path.read_bytes()
        assert np.array_equal(decoded(path), samples), f"{ext}: the audio changed after a kill"
        assert mutagen.File(path) is not None
        new_copies = set(tmp_path.iterdir()) - copies_before
        outcomes.append("new" if after != before else "mid-save" if new_copies else "before the copy")
        leftovers = [p for p in tmp_path.iterdir() if p != path]
        assert all(p.name.startswith(".") and p.name.endswith(TEMP_SUFFIX) for p in leftovers), leftovers
        assert find_audio_files([tmp_path]) == [path]
    assert "mid-save" in outcomes, f"{ext}: no kill landed between the copy and the rename: {outcomes}"
    assert remove_stale_copies(tmp_path, now=time.time() + STALE_AFTER_S) and list(tmp_path.iterdir()) == [path]
