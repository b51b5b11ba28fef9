"""Write GenreWiz's answer into an audio file's own tags, with mutagen.

The top genre goes into the field players read (ID3 ``TCON`` for MP3, WAV and AIFF; the Vorbis
comment ``GENRE`` for FLAC, Ogg Vorbis and Opus; ``©gen`` for MP4/M4A) and the confidence into
a GenreWiz field of the same tag (``TXXX:GENREWIZ_CONFIDENCE``, ``GENREWIZ_CONFIDENCE``,
``----:com.genrewiz:confidence``), so a later run or another tool can tell where it came from.

Safe by default: a genre the file already has is kept unless ``overwrite``, an answer under
``min_confidence`` is not written, ``dry_run`` writes nothing, and mutagen rewrites only the
tag blocks, never the audio stream. Imported by ``genrewiz tag`` only, so ``predict`` and the
app never need mutagen.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import mutagen
from mutagen.id3 import ID3, TCON, TXXX
from mutagen.mp4 import AtomDataType, MP4FreeForm, MP4Tags
from mutagen._vorbis import VCommentDict  # FLAC's, Ogg Vorbis's and Opus's tag type (mutagen is pinned)

CONFIDENCE_FIELD = "GENREWIZ_CONFIDENCE"
"""The confidence's field name in ID3 (a ``TXXX`` description) and Vorbis comments."""
MP4_CONFIDENCE_FIELD = "----:com.genrewiz:confidence"
"""The confidence's freeform atom in MP4 tags (reverse-DNS, as iTunes-style tools expect)."""
_MP4_GENRE, _MP4_GENRE_ID = "\xa9gen", "gnre"
_DISPLAY_NAMES = {"hiphop": "Hip-Hop"}
"""Model labels whose usual tag spelling is not just the capitalised label (ID3v1 genre names)."""

Action = Literal["tagged", "would tag", "kept", "uncertain"]


class TagError(Exception):
    """A file whose tags cannot be read or written, with a one-line reason for the user."""


@dataclass(frozen=True)
class TagResult:
    """What tagging did (or, in a dry run, would do) to one file.

    ``action`` is ``tagged`` / ``would tag`` (the genre was / would be written), ``kept`` (the
    file has a genre of its own and ``overwrite`` is off) or ``uncertain`` (the confidence is
    under the threshold, nothing written). ``previous`` is the genre tag the file had.
    """

    action: Action
    genre: str
    confidence: float
    previous: str | None

    def describe(self) -> str:
        """One short human line, e.g. ``tagged Rock (was 'Pop')``."""
        was = f" (was {self.previous!r})" if self.previous else ""
        if self.action == "kept":
            if (self.previous or "").casefold() == self.genre.casefold():
                return f"kept {self.previous!r} (already the genre)"
            return f"kept {self.previous!r} (--overwrite replaces it with {self.genre})"
        if self.action == "uncertain":
            return f"not tagged: {self.genre} at {self.confidence:.0%} is under --min-confidence"
        return f"{self.action} {self.genre}{was}"

    def to_json(self) -> dict:
        return {"action": self.action, "genre": self.genre, "confidence": round(self.confidence, 4), "previous": self.previous}


def genre_tag(label: str) -> str:
    """The tag spelling of a model label: ``hiphop`` -> ``Hip-Hop``, ``rock`` -> ``Rock``."""
    return _DISPLAY_NAMES.get(label, label[:1].upper() + label[1:])


def tag_file(
    path: str | os.PathLike[str],
    label: str,
    confidence: float,
    *,
    overwrite: bool = False,
    min_confidence: float = 0.0,
    dry_run: bool = False,
) -> TagResult:
    """Write ``label`` (as :func:`genre_tag` spells it) and ``confidence`` into ``path``'s tags.

    Raises:
        TagError: the file cannot be read, its format cannot hold tags, or saving failed.
    """
    path = Path(path)
    audio = _open(path)
    previous = _genre_of(audio.tags)
    genre = genre_tag(label)
    if previous and not overwrite:
        return TagResult("kept", genre, confidence, previous)
    if confidence < min_confidence:
        return TagResult("uncertain", genre, confidence, previous)
    if dry_run:
        return TagResult("would tag", genre, confidence, previous)
    _set(audio.tags, genre, f"{confidence:.4f}")
    try:
        if isinstance(audio.tags, ID3):  # keep the file's ID3 version: v2.3-only players exist
            audio.save(v2_version=3 if audio.tags.version[1] == 3 else 4)
        else:
            audio.save()
    except (mutagen.MutagenError, OSError) as err:
        raise TagError(f"{path.name}: cannot write tags: {_reason(err)}") from err
    return TagResult("tagged", genre, confidence, previous)


def _open(path: Path) -> mutagen.FileType:
    """The file opened by mutagen with a tag block to edit (an empty one added if it has none)."""
    try:
        audio = mutagen.File(path)
    except (mutagen.MutagenError, OSError) as err:
        raise TagError(f"{path.name}: cannot read tags: {_reason(err)}") from err
    if audio is None:
        raise TagError(f"{path.name}: cannot tag this format ({path.suffix or 'no extension'}): mutagen does not support it")
    if audio.tags is None:
        try:
            audio.add_tags()
        except mutagen.MutagenError as err:
            raise TagError(f"{path.name}: cannot add tags: {_reason(err)}") from err
    if not isinstance(audio.tags, (ID3, VCommentDict, MP4Tags)):
        raise TagError(f"{path.name}: cannot tag {type(audio).__name__} files (GenreWiz writes ID3, Vorbis comments and MP4)")
    return audio


def _genre_of(tags: ID3 | VCommentDict | MP4Tags) -> str | None:
    """The first non-empty genre in ``tags``; ID3 numeric genres such as ``(17)`` read as names."""
    if isinstance(tags, ID3):
        values = [genre for frame in tags.getall("TCON") for genre in frame.genres]
    elif isinstance(tags, MP4Tags):
        values = list(tags.get(_MP4_GENRE, [])) or [str(g) for g in tags.get(_MP4_GENRE_ID, [])]
    else:
        values = list(tags.get("GENRE", []))
    return next((v.strip() for v in values if v.strip()), None)


def _set(tags: ID3 | VCommentDict | MP4Tags, genre: str, confidence: str) -> None:
    """Replace the genre (every value of it) and GenreWiz's confidence field in ``tags``."""
    if isinstance(tags, ID3):
        tags.setall("TCON", [TCON(encoding=3, text=[genre])])
        tags.setall(f"TXXX:{CONFIDENCE_FIELD}", [TXXX(encoding=3, desc=CONFIDENCE_FIELD, text=[confidence])])
    elif isinstance(tags, MP4Tags):
        tags.pop(_MP4_GENRE_ID, None)
        tags[_MP4_GENRE] = [genre]
        tags[MP4_CONFIDENCE_FIELD] = [MP4FreeForm(confidence.encode("utf-8"), dataformat=AtomDataType.UTF8)]
    else:
        tags["GENRE"] = [genre]
        tags[CONFIDENCE_FIELD] = [confidence]


def _reason(err: Exception) -> str:
    """The useful part of a mutagen or OS error (mutagen wraps OSError in its own type)."""
    cause = err.__context__ if isinstance(err, mutagen.MutagenError) and isinstance(err.__context__, OSError) else err
    if isinstance(cause, OSError) and cause.strerror:
        return cause.strerror
    return str(err) or type(err).__name__
