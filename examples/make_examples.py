#!/usr/bin/env python3
"""Rebuild the example-clip gallery from freely licensed music shipped in Debian packages.

Every clip is described once, in :data:`CLIPS`. For each one the script reads the original
file(s) from the installed package, cuts the excerpt, down-mixes to mono, resamples to
22,050 Hz (the rate GenreWiz works at, which also keeps the files small), peak-normalises,
fades in and out, and writes OGG Vorbis (or MP3, chosen by the output's extension). It then
regenerates ``SOURCES.md`` from the same table, so the attributions never drift from the
clips, and checks that every file decodes and stays within the size and length limits.

Usage::

    python examples/make_examples.py            # needs the packages listed in SOURCES.md
    sudo python examples/make_examples.py --install   # apt-get installs what is missing

Decoding goes through GenreWiz's own loader (libsndfile and soxr): no ffmpeg.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf

from genrewiz.audio import load_audio

EXAMPLES_DIR = Path(__file__).resolve().parent
SOURCES_FILE = "SOURCES.md"
SAMPLE_RATE = 22_050
FADE_SECONDS = 0.5
PEAK_DBFS = -1.0
MAX_CLIP_SECONDS = 30.0
MAX_LONG_SECONDS = 180.0
MAX_CLIP_BYTES = 1_000_000
MAX_LONG_BYTES = 2_000_000
LONG_PREFIX = "long_"
WRITE_BLOCK_FRAMES = 65_536
"""libsndfile 1.2.2 crashes when a few million frames reach its Vorbis encoder in one call."""
CONTAINERS = {".ogg": ("OGG", "VORBIS"), ".mp3": ("MP3", "MPEG_LAYER_III")}
"""Output extension -> (libsndfile format, subtype)."""


@dataclass(frozen=True)
class Licence:
    """A licence the clips are redistributed under."""

    name: str
    url: str
    notice: str = ""
    """Text that must travel with every copy (permissive licences); empty when a link suffices."""


EXPAT_NOTICE = """\
Permission is hereby granted, free of charge, to any person obtaining a copy
of this software and associated documentation files (the "Software"), to deal
in the Software without restriction, including without limitation the rights
to use, copy, modify, merge, publish, distribute, sublicense, and/or sell
copies of the Software, and to permit persons to whom the Software is
furnished to do so, subject to the following conditions:

The above copyright notice and this permission notice shall be included in
all copies or substantial portions of the Software.

THE SOFTWARE IS PROVIDED "AS IS", WITHOUT WARRANTY OF ANY KIND, EXPRESS OR
IMPLIED, INCLUDING BUT NOT LIMITED TO THE WARRANTIES OF MERCHANTABILITY,
FITNESS FOR A PARTICULAR PURPOSE AND NONINFRINGEMENT. IN NO EVENT SHALL THE
AUTHORS OR COPYRIGHT HOLDERS BE LIABLE FOR ANY CLAIM, DAMAGES OR OTHER
LIABILITY, WHETHER IN AN ACTION OF CONTRACT, TORT OR OTHERWISE, ARISING FROM,
OUT OF OR IN CONNECTION WITH THE SOFTWARE OR THE USE OR OTHER DEALINGS IN
THE SOFTWARE."""

LICENCES = {
    "GPL-2.0+": Licence(
        "GPL-2.0-or-later", "https://www.gnu.org/licenses/old-licenses/gpl-2.0.html"
    ),
    "GPL-3.0+": Licence("GPL-3.0-or-later", "https://www.gnu.org/licenses/gpl-3.0.html"),
    "CC-BY-SA-3.0": Licence("CC BY-SA 3.0", "https://creativecommons.org/licenses/by-sa/3.0/"),
    "CC-BY-SA-3.0+|GPL-2.0+": Licence(
        "CC BY-SA 3.0 or later, or GPL-2.0-or-later (at your option)",
        "https://creativecommons.org/licenses/by-sa/3.0/",
    ),
    "Expat": Licence("Expat (MIT)", "https://opensource.org/license/mit", EXPAT_NOTICE),
}

WESNOTH_MUSIC = "/usr/share/games/wesnoth/1.16/data/core/music"
LINCITY_MUSIC = "/usr/share/games/lincity-ng/music/default"
FOF_SONGS = "/usr/share/games/fretsonfire/data/songs"


@dataclass(frozen=True)
class Clip:
    """One example clip: where it comes from, who made it, and what a listener would expect.

    ``sources`` holds one file, or several stems of the same song that are mixed together
    (Frets on Fire ships the lead guitar apart from the backing track). ``genre`` is the GTZAN
    label a listener would most likely pick; ``style`` says what that guess rests on. Clips
    whose name starts with ``long_`` may run to :data:`MAX_LONG_SECONDS`, the others to
    :data:`MAX_CLIP_SECONDS`. ``compression_level`` is libsndfile's encoder setting, from 0
    (best quality, largest) to 1 (smallest).
    """

    output: str
    package: str
    sources: tuple[str, ...]
    title: str
    author: str
    copyright: str
    licence: str
    start: float
    end: float
    genre: str
    style: str
    compression_level: float = 0.5

    def __post_init__(self) -> None:
        if Path(self.output).suffix not in CONTAINERS:
            raise ValueError(f"{self.output}: extension must be one of {sorted(CONTAINERS)}")
        if self.licence not in LICENCES:
            raise ValueError(f"{self.output}: unknown licence {self.licence!r}")
        if not 0 < self.duration <= self.max_seconds:
            raise ValueError(f"{self.output}: excerpt must last 0-{self.max_seconds:g} s")

    @property
    def duration(self) -> float:
        """Length of the excerpt in seconds."""
        return self.end - self.start

    @property
    def is_long(self) -> bool:
        """Whether this is a long excerpt meant for the genre timeline."""
        return self.output.startswith(LONG_PREFIX)

    @property
    def max_seconds(self) -> float:
        """The longest this clip may be."""
        return MAX_LONG_SECONDS if self.is_long else MAX_CLIP_SECONDS

    @property
    def max_bytes(self) -> int:
        """The largest this clip's file may be."""
        return MAX_LONG_BYTES if self.is_long else MAX_CLIP_BYTES


def _fof_stems(folder: str) -> tuple[str, str]:
    """The backing track and the guitar stem of a Frets on Fire song."""
    return (f"{FOF_SONGS}/{folder}/song.ogg", f"{FOF_SONGS}/{folder}/guitar.ogg")


CLIPS: tuple[Clip, ...] = (
    Clip(
        output="classical_dangerous_symphony.ogg",
        package="wesnoth-1.16-music",
        sources=(f"{WESNOTH_MUSIC}/the_dangerous_symphony.ogg",),
        title="The Dangerous Symphony",
        author="Gianmarco Leone",
        copyright="(C) 2008 Gianmarco Leone",
        licence="GPL-2.0+",
        start=25.0,
        end=55.0,
        genre="classical",
        style="orchestral game score (tagged 'Romantic Classical')",
    ),
    Clip(
        output="country_traveling_minstrels.mp3",
        package="wesnoth-1.16-music",
        sources=(f"{WESNOTH_MUSIC}/traveling_minstrels.ogg",),
        title="Traveling Minstrels",
        author="Mattias Westlund",
        copyright="(C) 2008 Mattias Westlund",
        licence="GPL-2.0+",
        start=80.0,
        end=110.0,
        genre="country",
        style="acoustic folk / minstrel dance; no folk class in GTZAN, country is the nearest",
    ),
    Clip(
        output="metal_chaos_god.ogg",
        package="fretsonfire-songs-muldjord",
        sources=_fof_stems("muldjord/chaos_god"),
        title="Chaos God",
        author="Muldjord (El Senator), www.muldjord.com",
        copyright="(c) 2009 El Senator <elsenator@gmail.com>",
        licence="CC-BY-SA-3.0",
        start=30.0,
        end=60.0,
        genre="metal",
        style="death metal band (tagged 'Death Metal'); guitar and backing stems mixed",
    ),
    Clip(
        output="rock_war_of_freedom.ogg",
        package="fretsonfire-songs-sectoid",
        sources=_fof_stems("sectoid/War of freedom"),
        title="War of freedom",
        author="Sectoid (Carlos Viola Iborra)",
        copyright="Copyright (c) 2006/2007 Carlos Viola Iborra <karuritosu@gmail.com>",
        licence="Expat",
        start=20.0,
        end=50.0,
        genre="rock",
        style="guitar-driven instrumental rock written for a guitar game; stems mixed",
    ),
    Clip(
        output="blues_city_blues.ogg",
        package="lincity-ng-data",
        sources=(f"{LINCITY_MUSIC}/02 - Robert van Herk - City Blues.ogg",),
        title="City Blues",
        author="Robert van Herk",
        copyright="Robert van Herk, LinCity-NG contributors",
        licence="GPL-2.0+",
        start=155.0,
        end=185.0,
        genre="blues",
        style="named a blues; relaxed, bass-heavy (jazz would not surprise)",
    ),
    Clip(
        output="disco_electro.ogg",
        package="pushover-data",
        sources=("/usr/share/pushover/themes/electro.ogg",),
        title="Electro (level theme)",
        author="Roberto Lorenz",
        copyright="2008-2018 Roberto Lorenz",
        licence="GPL-3.0+",
        start=50.0,
        end=80.0,
        genre="disco",
        style="electronic dance theme, steady 136 BPM pulse (disco/pop nearest)",
    ),
    Clip(
        output="reggae_caribbean.ogg",
        package="hyperrogue-music",
        sources=("/usr/share/hyperrogue/music/hr-savino-caribbean.ogg",),
        title="Caribbean",
        author="Will Savino (http://www.willsavino.net)",
        copyright="Will Savino",
        licence="CC-BY-SA-3.0",
        start=15.0,
        end=45.0,
        genre="reggae",
        style="Caribbean-flavoured game theme (reggae nearest)",
    ),
    Clip(
        output="pop_geiger_ghosts.ogg",
        package="warzone2100-music",
        sources=("/usr/share/games/warzone2100/music/albums/legacy_soundtrack/track16.opus",),
        title="Geiger Ghosts",
        author="LupusMechanicus",
        copyright="Copyright (C) 2019-2022 LupusMechanicus",
        licence="CC-BY-SA-3.0+|GPL-2.0+",
        start=150.0,
        end=180.0,
        genre="pop",
        style="synth-driven electronic, 125 BPM (no electronic class in GTZAN; pop/disco nearest)",
    ),
    Clip(
        output="long_rock_feelings.ogg",
        package="fretsonfire-songs-sectoid",
        sources=_fof_stems("sectoid/Feelings"),
        title="Feelings",
        author="Sectoid (Carlos Viola Iborra)",
        copyright="Copyright (c) 2006/2007 Carlos Viola Iborra <karuritosu@gmail.com>",
        licence="Expat",
        start=30.0,
        end=180.0,
        genre="rock",
        style="slower guitar rock (~96 BPM), 2.5 minutes for the genre timeline; stems mixed",
        compression_level=0.7,
    ),
)


def missing_packages(clips: Sequence[Clip]) -> list[str]:
    """The Debian packages the clips need that are not installed, sorted."""
    missing: set[str] = set()
    for package in {clip.package for clip in clips}:
        query = subprocess.run(
            ["dpkg-query", "--show", "--showformat=${Status}", package],
            capture_output=True,
            text=True,
            check=False,
        )
        if query.returncode != 0 or not query.stdout.endswith(" installed"):
            missing.add(package)
    return sorted(missing)


def install_command(packages: Sequence[str]) -> list[str]:
    """The apt-get command line that installs ``packages``."""
    return ["apt-get", "install", "--yes", "--no-install-recommends", *packages]


def read_mono(path: Path, start: float, end: float) -> np.ndarray:
    """Read ``start``-``end`` seconds of ``path``, down-mixed to mono at :data:`SAMPLE_RATE`."""
    audio = load_audio(path, SAMPLE_RATE, max_duration=end - start, offset=start)
    if audio.source_duration < end:
        raise ValueError(f"{path}: excerpt ends after the file ({audio.source_duration:.1f} s)")
    return audio.samples


def render(clip: Clip) -> np.ndarray:
    """The clip's waveform: stems mixed, mono, resampled, peak-normalised and faded."""
    stems = [read_mono(Path(source), clip.start, clip.end) for source in clip.sources]
    length = min(len(stem) for stem in stems)
    audio = np.sum([stem[:length] for stem in stems], axis=0)
    audio *= 10 ** (PEAK_DBFS / 20) / max(float(np.max(np.abs(audio))), 1e-9)
    fade = np.linspace(0.0, 1.0, round(FADE_SECONDS * SAMPLE_RATE), dtype=audio.dtype)
    audio[: len(fade)] *= fade
    audio[len(audio) - len(fade) :] *= fade[::-1]
    return audio


def write_clip(clip: Clip, audio: np.ndarray, path: Path) -> None:
    """Encode ``audio`` to ``path``, tagged with the title, author and licence."""
    container, subtype = CONTAINERS[path.suffix]
    with sf.SoundFile(
        path,
        "w",
        samplerate=SAMPLE_RATE,
        channels=1,
        format=container,
        subtype=subtype,
        compression_level=clip.compression_level,
    ) as f:
        f.title = clip.title
        f.artist = clip.author
        f.comment = (
            f"Excerpt {clip.start:g}-{clip.end:g} s from Debian package {clip.package}; "
            f"licence {LICENCES[clip.licence].name}; see SOURCES.md"
        )
        for first in range(0, len(audio), WRITE_BLOCK_FRAMES):
            f.write(audio[first : first + WRITE_BLOCK_FRAMES])


def _timestamp(seconds: float) -> str:
    """``m:ss`` for whole seconds, ``m:ss.s`` otherwise."""
    minutes, rest = divmod(seconds, 60)
    return f"{int(minutes)}:{rest:02.0f}" if rest == int(rest) else f"{int(minutes)}:{rest:04.1f}"


def sources_markdown(clips: Sequence[Clip]) -> str:
    """The text of ``SOURCES.md``: how to rebuild, then each clip's provenance and licence."""
    packages = " ".join(sorted({clip.package for clip in clips}))
    lines = [
        "# Example clips: sources and licences",
        "",
        "<!-- Generated by examples/make_examples.py from its CLIPS table; do not edit. -->",
        "",
        "These clips are short excerpts of freely licensed music shipped in Debian packages. "
        "They are redistributed under the licences of their originals, listed below with the "
        "authors. Each excerpt was cut from the original, down-mixed to mono, resampled to "
        f"{SAMPLE_RATE:,} Hz, peak-normalised to {PEAK_DBFS:g} dBFS and given a "
        f"{FADE_SECONDS:g} s fade in and out; where the original comes as separate stems (the "
        "Frets on Fire songs), the stems were mixed together. The complete originals are in the "
        "Debian packages named below.",
        "",
        "To rebuild the clips and this file:",
        "",
        "```sh",
        f"sudo apt-get install --no-install-recommends {packages}",
        "python examples/make_examples.py",
        "```",
        "",
        "(`python examples/make_examples.py --install`, run as root, installs missing packages "
        "itself.)",
        "",
        "*Expected genre* is the GTZAN label a listener would most likely give the excerpt, "
        "judged from the title, the package and the track's tags and tempo; it is a guess, not "
        "ground truth, and GTZAN has no class for some of these styles.",
        "",
        "| File | Expected genre | Length | Title | Author | Licence |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for clip in clips:
        lines.append(
            f"| `{clip.output}` | {clip.genre} | {_timestamp(clip.duration)} | {clip.title} "
            f"| {clip.author} | {LICENCES[clip.licence].name} |"
        )
    for clip in clips:
        licence = LICENCES[clip.licence]
        originals = ", ".join(f"`{source}`" for source in clip.sources)
        lines += [
            "",
            f"## `{clip.output}`",
            "",
            f"- Track: *{clip.title}* by {clip.author}",
            f"- Copyright: {clip.copyright}",
            f"- Licence: [{licence.name}]({licence.url})"
            + (" (notice below)" if licence.notice else ""),
            f"- Debian package: `{clip.package}`",
            f"- Original file{'s (stems, mixed)' if len(clip.sources) > 1 else ''}: {originals}",
            f"- Excerpt: {_timestamp(clip.start)} to {_timestamp(clip.end)} "
            f"({clip.duration:g} s)",
            f"- Expected genre: **{clip.genre}**: {clip.style}",
        ]
    for key, licence in LICENCES.items():
        holders = sorted({clip.copyright for clip in clips if clip.licence == key})
        if licence.notice and holders:
            lines += ["", f"## {licence.name} notice", "", "```text", *holders, ""]
            lines += [licence.notice, "```"]
    return "\n".join(lines) + "\n"


def check(clip: Clip, path: Path) -> list[str]:
    """Problems with a written clip: it must decode, last as specified and stay small."""
    problems: list[str] = []
    try:
        audio, samplerate = sf.read(path, dtype="float32", always_2d=True)
    except sf.LibsndfileError as err:
        return [f"does not decode: {err}"]
    duration = len(audio) / samplerate
    if abs(duration - clip.duration) > 0.1:
        problems.append(f"lasts {duration:.2f} s, expected {clip.duration:g} s")
    if samplerate != SAMPLE_RATE or audio.shape[1] != 1:
        problems.append(f"is {samplerate} Hz, {audio.shape[1]} ch; not {SAMPLE_RATE} Hz mono")
    size = path.stat().st_size
    if size > clip.max_bytes:
        problems.append(f"is {size:,} bytes, limit {clip.max_bytes:,}")
    return problems


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--install",
        action="store_true",
        help="apt-get install the Debian packages that are missing (needs root)",
    )
    parser.add_argument(
        "--output-dir",
        type=Path,
        default=EXAMPLES_DIR,
        help=f"where the clips and {SOURCES_FILE} go (default: %(default)s)",
    )
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """Build every clip and ``SOURCES.md``, check them, print a summary; 0 on success."""
    args = parse_args(argv)
    missing = missing_packages(CLIPS)
    if missing and args.install:
        subprocess.run(install_command(missing), check=True)
    elif missing:
        print("Missing Debian packages; install them with:", file=sys.stderr)
        print("  sudo " + " ".join(install_command(missing)), file=sys.stderr)
        print("or rerun as root with --install.", file=sys.stderr)
        return 1

    args.output_dir.mkdir(parents=True, exist_ok=True)
    failures = 0
    print(f"{'file':34} {'genre':9} {'length':>7} {'size':>10}")
    for clip in CLIPS:
        path = args.output_dir / clip.output
        write_clip(clip, render(clip), path)
        problems = check(clip, path)
        failures += bool(problems)
        size = path.stat().st_size
        print(f"{clip.output:34} {clip.genre:9} {clip.duration:6.1f}s {size / 1000:8.1f} kB")
        for problem in problems:
            print(f"  ! {problem}", file=sys.stderr)

    (args.output_dir / SOURCES_FILE).write_text(sources_markdown(CLIPS), encoding="utf-8")
    total = sum((args.output_dir / clip.output).stat().st_size for clip in CLIPS)
    print(f"{len(CLIPS)} clips, {total / 1e6:.2f} MB in {args.output_dir}; wrote {SOURCES_FILE}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
