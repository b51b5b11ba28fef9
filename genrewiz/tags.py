"""Write GenreWiz's answer into an audio file's own tags, with mutagen, without ever risking the audio.

The top genre goes into the field players read (ID3 ``TCON`` for MP3, WAV and AIFF; the Vorbis
comment ``GENRE`` for FLAC, Ogg Vorbis and Opus; ``©gen`` for MP4/M4A) and the confidence into
a GenreWiz field of the same tag (``TXXX:GENREWIZ_CONFIDENCE``, ``GENREWIZ_CONFIDENCE``,
``----:com.genrewiz:confidence``), so a later run or another tool can tell where it came from.
With ``own_fields_only`` the genre goes into GenreWiz's own genre field instead
(``TXXX:GENREWIZ_GENRE``, ``GENREWIZ_GENRE``, ``----:com.genrewiz:genre``) and the standard
field is never touched.

A file is never edited in place, because mutagen rewrites tags in place and a kill in the
middle of that leaves a file that no longer decodes: the tags are written into a copy in the
same folder, the copy must decode to exactly the samples of the original, it is flushed to
disk, and only then renamed over the original (one atomic step). A kill at any moment leaves
either the old file or the new one, plus at worst a hidden ``*.genrewiz-tmp`` copy that no
folder scan picks up and that :func:`remove_stale_copies` deletes on a later run. Containers
whose own sizes do not add up (a truncated WAV, a streamed one with 0xFFFFFFFF sizes) are
refused before anything is written, and so are symbolic links (renaming would replace the link,
not tag its target), files the user may not write, and anything but a regular file (a FIFO or
a device is never opened for reading: it could block or never end).

A genre in a tag GenreWiz does not write (a WAV's ``LIST/INFO`` ``IGNR``, an APEv2 ``Genre``)
counts as the file's genre: such a file is kept, and ``overwrite`` refuses it rather than
leave two conflicting genres in it.

Imported by ``genrewiz tag`` only, so ``predict`` and the app never need mutagen.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import shutil
import stat
import struct
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Literal

import av
import mutagen
import soundfile as sf
from mutagen.apev2 import APEv2
from mutagen.id3 import ID3, TCON, TXXX
from mutagen.mp4 import AtomDataType, MP4FreeForm, MP4Tags
from mutagen._vorbis import VCommentDict  # FLAC's, Ogg Vorbis's and Opus's tag type (mutagen is pinned)

from .audio import FFMPEG_EXTENSIONS, _quiet_decoder, file_kind  # the decoder keeps libmpg123's notes off the terminal
from .verdict import doubt_reason, is_music, is_unsure

CONFIDENCE_FIELD = "GENREWIZ_CONFIDENCE"
"""The confidence's field name in ID3 (a ``TXXX`` description) and Vorbis comments."""
GENRE_FIELD = "GENREWIZ_GENRE"
"""GenreWiz's own genre field (``own_fields_only``), named like :data:`CONFIDENCE_FIELD`."""
MP4_CONFIDENCE_FIELD = "----:com.genrewiz:confidence"
"""The confidence's freeform atom in MP4 tags (reverse-DNS, as iTunes-style tools expect)."""
MP4_GENRE_FIELD = "----:com.genrewiz:genre"
TEMP_SUFFIX = ".genrewiz-tmp"
"""Ends the name of the copy being tagged: no audio extension, so no folder scan reads it."""
_MP4_GENRE, _MP4_GENRE_ID = "\xa9gen", "gnre"
_DISPLAY_NAMES = {"hiphop": "Hip-Hop"}
"""Model labels whose usual tag spelling is not just the capitalised label (ID3v1 genre names)."""
_STREAMED_SIZE = 0xFFFFFFFF
STALE_AFTER_S = 60.0
"""Age (since its last change) from which a temporary copy no process holds is a killed run's leftover."""

Action = Literal["tagged", "would tag", "kept", "uncertain", "not music", "restored", "would restore"]
Field = Literal["genre", "genrewiz"]
"""Where the genre goes: the standard genre field, or GenreWiz's own (``own_fields_only``)."""


class TagError(Exception):
    """A file whose tags cannot be read or written, with a one-line reason for the user."""


BeforeRename = Callable[["TagResult", os.stat_result], None]
"""Called with the result and the tagged copy's status just before the copy replaces the file
(the CLI journals the pending row there, so that a kill right after the rename loses no undo record)."""


@dataclass(frozen=True)
class TagResult:
    """What tagging did (or, in a dry run, would do) to one file.

    ``action`` is ``tagged`` / ``would tag`` (the genre was / would be written), ``kept`` (the
    file has a genre of its own and ``overwrite`` is off; ``genre`` is ``None`` when the file
    was kept without being analysed), ``uncertain`` (not sure enough, nothing written: ``note``
    says why), ``not music`` (the input is not music, nothing written) or ``restored`` / ``would restore`` (``--restore`` put ``previous`` back).
    ``previous`` is the genre the file had in ``field``.
    """

    action: Action
    genre: str | None
    confidence: float | None
    previous: str | None
    field: Field = "genre"
    note: str | None = None

    def describe(self) -> str:
        """One short human line, e.g. ``tagged Rock (was 'Pop')``."""
        was = f" (was {self.previous!r})" if self.previous else ""
        if self.action == "kept":
            if self.genre is None:
                return f"kept {self.previous!r} (not analysed; --overwrite replaces it)"
            if (self.previous or "").casefold() == self.genre.casefold():
                return f"kept {self.previous!r} (already the genre)"
            return f"kept {self.previous!r} (--overwrite replaces it with {self.genre})"
        if self.action in ("uncertain", "not music"):
            return f"not tagged: {self.note}"
        if self.action in ("restored", "would restore"):
            return f"{self.action} {self.previous!r}" if self.previous else f"{self.action}: genre removed (it had none)"
        return f"{self.action} {self.genre}{was}"

    def to_json(self) -> dict:
        confidence = None if self.confidence is None else round(self.confidence, 4)
        return {"action": self.action, "genre": self.genre, "confidence": confidence, "previous": self.previous, "field": self.field}


def genre_tag(label: str) -> str:
    """The tag spelling of a model label: ``hiphop`` -> ``Hip-Hop``, ``rock`` -> ``Rock``."""
    return _DISPLAY_NAMES.get(label, label[:1].upper() + label[1:])


def existing_genre(path: str | os.PathLike[str], own_fields_only: bool = False) -> str | None:
    """The genre ``path`` already has in the field GenreWiz would write (cheap: tags only, no decoding).

    Also a genre only in a tag GenreWiz does not write (WAV ``LIST/INFO``, APEv2). Only a
    regular file is read: a FIFO or a device is refused before any read.

    Raises:
        TagError: the file's tags cannot be read.
    """
    path = Path(path)
    genre, elsewhere = _genres(path, "genrewiz" if own_fields_only else "genre")
    return genre or (elsewhere[0] if elsewhere else None)


def tag_file(
    path: str | os.PathLike[str],
    label: str,
    confidence: float,
    *,
    runner_up: float = 0.0,
    overwrite: bool = False,
    min_confidence: float | None = None,
    music: float | None = None,
    dry_run: bool = False,
    own_fields_only: bool = False,
    before_rename: BeforeRename | None = None,
) -> TagResult:
    """Write ``label`` (as :func:`genre_tag` spells it) and ``confidence`` into ``path``'s tags, safely.

    Sure enough means: at least ``min_confidence`` when given, else what the app calls sure
    (:func:`genrewiz.verdict.is_unsure` on ``confidence`` and the second genre's ``runner_up``).
    ``music``, the probability that the file is music at all, below
    :data:`genrewiz.verdict.MUSIC_BELOW` means no genre is written, whatever ``min_confidence``
    says. ``before_rename`` (see :data:`BeforeRename`) runs once the copy is verified, just
    before it replaces the file.

    Raises:
        TagError: the file cannot be read, its format cannot hold tags, its container is
            inconsistent, or saving failed; the file is then left exactly as it was.
    """
    path = Path(path)
    field: Field = "genrewiz" if own_fields_only else "genre"
    _check_taggable(path)
    previous, elsewhere = _genres(path, field)
    genre = genre_tag(label)
    if (previous or elsewhere) and not overwrite:
        return TagResult("kept", genre, confidence, previous or elsewhere[0], field)
    if elsewhere:
        raise TagError(
            f"{path.name}: not tagged: its genre {elsewhere[0]!r} is in {elsewhere[1]}, which GenreWiz does not rewrite, "
            "so the file would hold two genres; remove that one first, or use --own-fields"
        )
    if not is_music(music):
        note = f"it does not sound like music (music probability {music:.0%}), so it gets no genre"
        return TagResult("not music", genre, confidence, previous, field, note)
    if min_confidence is not None and confidence < min_confidence:
        note = f"{genre} at {confidence:.0%} is under --min-confidence {min_confidence:g}"
        return TagResult("uncertain", genre, confidence, previous, field, note)
    if min_confidence is None and is_unsure([(label, confidence), ("", runner_up)]):
        note = f"not sure ({doubt_reason([(label, confidence), ('', runner_up)])}); --min-confidence P tags it anyway"
        return TagResult("uncertain", genre, confidence, previous, field, note)
    if dry_run:
        return TagResult("would tag", genre, confidence, previous, field)
    result = TagResult("tagged", genre, confidence, previous, field)
    ready = None if before_rename is None else lambda copy: before_rename(result, copy)
    _save_safely(path, lambda tags: _set(tags, field, genre, f"{confidence:.4f}"), ready)
    return result


def restore_file(
    path: str | os.PathLike[str], written: str, previous: str | None, field: Field = "genre", dry_run: bool = False
) -> TagResult:
    """Undo :func:`tag_file`: put ``previous`` back (or remove the genre it added) and drop GenreWiz's fields.

    Only while the file still holds the genre GenreWiz ``written`` there: a genre changed since
    (by the user, another tool) is the user's and stays.

    Raises:
        TagError: the file cannot be read or saved, or its genre is no longer ``written``.
    """
    path = Path(path)
    _check_taggable(path)
    current = _genres(path, field)[0]
    if (current or "").casefold() != written.casefold():
        raise TagError(f"{path.name}: its genre is now {current!r}, not the {written!r} GenreWiz wrote: left as it is")
    if dry_run:
        return TagResult("would restore", written, None, previous, field)
    _save_safely(path, lambda tags: _unset(tags, field, previous))
    return TagResult("restored", written, None, previous, field)


def remove_stale_copies(folder: str | os.PathLike[str], now: float | None = None) -> list[Path]:
    """Delete the temporary copies killed runs left in ``folder``, and return them.

    A leftover is named like GenreWiz's copies (``.NAME.XXXX.genrewiz-tmp``), is a regular
    file, has not changed for :data:`STALE_AFTER_S`, and no running save holds its lock (a save
    locks its copy for as long as it lives). Anything else is left alone, and so is what cannot
    be removed.
    """
    now = time.time() if now is None else now
    removed: list[Path] = []
    with contextlib.suppress(OSError), os.scandir(folder) as entries:
        for entry in entries:
            if not (entry.name.startswith(".") and entry.name.endswith(TEMP_SUFFIX)):
                continue
            with contextlib.suppress(OSError):
                info = entry.stat(follow_symlinks=False)
                if not stat.S_ISREG(info.st_mode) or now - info.st_mtime < STALE_AFTER_S:
                    continue
                fd = os.open(entry.path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # raises while a save holds it
                    os.unlink(entry.path)
                    removed.append(Path(entry.path))
                finally:
                    os.close(fd)
    return removed


def _open_regular(path: Path) -> BinaryIO:
    """``path`` opened for reading, refused unless it is a regular file (checked on the open file, so nothing can swap it).

    A FIFO would block the open and a device (``/dev/zero``) would never end, so the open does
    not wait and nothing is read before the check.

    Raises:
        TagError: not a regular file, or it cannot be opened.
    """
    try:
        file = open(path, "rb", opener=lambda name, flags: os.open(name, flags | os.O_NONBLOCK))
    except OSError as err:
        raise TagError(f"{path.name}: cannot read: {_reason(err)}") from err
    mode = os.fstat(file.fileno()).st_mode
    if not stat.S_ISREG(mode):
        file.close()
        raise TagError(f"{path.name}: not a regular file ({file_kind(mode)}): not read")
    return file


def _check_taggable(path: Path) -> None:
    """Refuse what must not be tagged by copy-and-rename: links, what is not a regular file, what
    the user may not write, and inconsistent containers."""
    if path.is_symlink():
        raise TagError(f"{path.name}: a symbolic link: not followed (tag the file it points to, in its own folder)")
    with _open_regular(path) as file:
        if not os.access(path, os.W_OK):
            raise TagError(f"{path.name}: not tagged: the file is read-only for you (its permissions say so)")
        try:
            head = file.read(12)
            size = os.fstat(file.fileno()).st_size
            if head[:4] == b"RIFF" and head[8:12] == b"WAVE":
                _check_iff(file, path.name, size, "<I", b"data", "WAV")
            elif head[:4] == b"FORM" and head[8:12] in (b"AIFF", b"AIFC"):
                _check_iff(file, path.name, size, ">I", b"SSND", "AIFF")
        except OSError as err:
            raise TagError(f"{path.name}: cannot read: {_reason(err)}") from err


def _check_iff(file: BinaryIO, name: str, size: int, fmt: str, audio_chunk: bytes, kind: str) -> None:
    """A RIFF (WAV) or IFF (AIFF) file whose header and chunk sizes add up to the file's size.

    A truncated recording (sizes larger than the file), one with bytes after its declared end,
    or a streamed one (sizes 0xFFFFFFFF, what ``ffmpeg ... -f wav -`` writes) would have tags
    written where a player reads audio, so it is refused with the reason.
    """
    file.seek(4)
    (declared,) = struct.unpack(fmt, file.read(4))
    if declared == _STREAMED_SIZE:
        raise TagError(f"{name}: not tagged: a streamed {kind} (its header gives no sizes); re-save it with a complete header first")
    if declared + 8 != size:
        raise TagError(
            f"{name}: not tagged: the {kind} header's sizes do not match the file "
            f"({declared + 8:,} bytes declared, {size:,} on disk: a truncated or damaged recording)"
        )
    offset = 12
    while offset + 8 <= size:
        file.seek(offset)
        chunk_id, (chunk,) = file.read(4), struct.unpack(fmt, file.read(4))
        if chunk == _STREAMED_SIZE and chunk_id == audio_chunk:
            raise TagError(f"{name}: not tagged: a streamed {kind} (its audio chunk gives no size); re-save it first")
        if offset + 8 + chunk > size:
            raise TagError(f"{name}: not tagged: the {kind} chunk {chunk_id.decode('latin-1')!r} runs past the end of the file")
        offset += 8 + chunk + (chunk & 1)


def _save_safely(
    path: Path,
    edit: Callable[[ID3 | VCommentDict | MP4Tags], None],
    before_rename: Callable[[os.stat_result], None] | None = None,
) -> None:
    """Apply ``edit`` to a copy of ``path``'s tags, verify the copy's audio, and rename it over ``path``.

    The copy keeps the original's permission bits and owner (a file whose owner cannot be kept
    is refused); its modification time is the time of tagging, since its content changed and
    backup and sync tools must see that. A hard link to the original keeps the untagged file.
    The original must be unchanged since it was copied: size, inode, and both the modification
    and the status-change time (a tagger that puts the modification time back still moves the
    latter). The copy is locked while it lives, so :func:`remove_stale_copies` never takes it.
    """
    temp: Path | None = None
    try:
        before = os.stat(path)
        reference = _audio_digest(path, path)
        fd, temp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=TEMP_SUFFIX)
        temp = Path(temp_name)
        with os.fdopen(fd, "wb") as copy, open(path, "rb") as original:
            fcntl.flock(copy.fileno(), fcntl.LOCK_EX)
            shutil.copyfileobj(original, copy, 1 << 20)
            copy.flush()
            audio = _open(temp, path)
            edit(audio.tags)
            _save(audio, path)
            if _audio_digest(temp, path) != reference:
                raise TagError(f"{path.name}: not tagged: with new tags the file would not decode to the same audio; it was left as it was")
            os.chmod(temp, before.st_mode & 0o7777)
            if (before.st_uid, before.st_gid) != (os.getuid(), os.getgid()):
                try:
                    os.chown(temp, before.st_uid, before.st_gid)
                except PermissionError as err:
                    raise TagError(f"{path.name}: not tagged: the tagged copy could not keep the file's owner") from err
            os.fsync(copy.fileno())
            now = os.stat(path)
            if _identity(now) != _identity(before):
                raise TagError(f"{path.name}: not tagged: the file changed while it was being tagged")
            if before_rename is not None:
                before_rename(os.stat(temp))
            os.replace(temp, path)
            temp = None
    except OSError as err:
        raise TagError(f"{path.name}: cannot write tags: {_reason(err)}") from err
    finally:
        if temp is not None:
            with contextlib.suppress(FileNotFoundError):
                temp.unlink()
    _fsync_folder(path.parent)


def _identity(info: os.stat_result) -> tuple[int, int, int, int, int]:
    """What tells a file changed: device, inode, size, and the modification and status-change times."""
    return info.st_dev, info.st_ino, info.st_size, info.st_mtime_ns, info.st_ctime_ns


def _save(audio: mutagen.FileType, path: Path) -> None:
    """``audio.save()`` keeping an ID3 tag's version (v2.3-only players exist)."""
    try:
        if isinstance(audio.tags, ID3):
            audio.save(v2_version=3 if audio.tags.version[1] == 3 else 4)
        else:
            audio.save()
    except OSError:
        raise
    except Exception as err:  # mutagen raises assorted errors (struct.error, ...) on odd files
        raise TagError(f"{path.name}: cannot write tags: {_reason(err)}") from err


def _fsync_folder(folder: Path) -> None:
    """Make the rename itself durable (a crash right after it must not bring the old name back)."""
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _audio_digest(path: Path, original: Path) -> tuple[int, int, int, str]:
    """(rate, channels, frames, SHA-256 of every decoded sample) of ``path``, decoded as ``original``'s format is.

    Raises:
        TagError: the audio does not decode, so there is nothing to check a copy against.
    """
    digest, frames = hashlib.sha256(), 0
    try:
        with _quiet_decoder():
            if original.suffix.lower() in FFMPEG_EXTENSIONS:
                with open(path, "rb") as raw, av.open(raw, mode="r") as container:
                    stream = container.streams.audio[0]
                    rate, channels = stream.rate, stream.channels
                    for frame in container.decode(stream):
                        data = frame.to_ndarray()
                        digest.update(data.tobytes())
                        frames += frame.samples
            else:
                with sf.SoundFile(os.fsencode(path)) as file:
                    rate, channels = file.samplerate, file.channels
                    for block in file.blocks(1 << 16, dtype="float32"):
                        digest.update(block.tobytes())
                        frames += len(block)
    except (sf.SoundFileError, av.FFmpegError, OSError, RuntimeError, IndexError, EOFError) as err:
        raise TagError(f"{original.name}: not tagged: its audio could not be decoded to check the tagged copy ({_reason(err)})") from err
    return rate, channels, frames, digest.hexdigest()


def _genres(path: Path, field: Field) -> tuple[str | None, tuple[str, str] | None]:
    """The genre in ``field`` of ``path``'s tags, and (for the standard field) a genre found
    only in a tag GenreWiz does not write, with where it is: ``("Shoegaze", "WAV LIST/INFO IGNR")``."""
    with _open_regular(path) as file:
        audio = _open(path, path, file)
        genre = _genre_of(audio.tags, field)
        if genre is not None or field != "genre":
            return genre, None
        return None, _foreign_genre(file)


def _foreign_genre(file: BinaryIO) -> tuple[str, str] | None:
    """A genre in a WAV's ``LIST/INFO`` ``IGNR`` or in an APEv2 ``Genre``, with where it was found."""
    file.seek(0)
    head = file.read(12)
    if head[:4] == b"RIFF" and head[8:12] == b"WAVE":
        if (genre := _riff_info_genre(file)) is not None:
            return genre, "the WAV's LIST/INFO chunk (IGNR)"
    file.seek(0)
    try:
        ape = APEv2(file)
    except Exception:  # mutagen raises assorted errors; no readable APEv2 tag means no genre there
        return None
    item = ape.get("Genre")
    genre = None if item is None else next((v.strip() for v in str(item).split("\0") if v.strip()), None)
    return None if genre is None else (genre, "an APEv2 tag (Genre)")


def _riff_info_genre(file: BinaryIO) -> str | None:
    """The ``IGNR`` text of a WAV's top-level ``LIST``/``INFO`` chunk, if it has one."""
    size = os.fstat(file.fileno()).st_size
    offset = 12
    while offset + 8 <= size:
        file.seek(offset)
        chunk_id, (length,) = file.read(4), struct.unpack("<I", file.read(4))
        if chunk_id == b"LIST" and file.read(4) == b"INFO":
            end, inner = min(offset + 8 + length, size), offset + 12
            while inner + 8 <= end:
                file.seek(inner)
                sub_id, (sub_length,) = file.read(4), struct.unpack("<I", file.read(4))
                if sub_id == b"IGNR":
                    text = file.read(min(sub_length, 1024)).split(b"\0")[0].strip()
                    return text.decode("utf-8", "replace") or None
                inner += 8 + sub_length + (sub_length & 1)
        offset += 8 + length + (length & 1)
    return None


def _open(path: Path, original: Path, file: BinaryIO | None = None) -> mutagen.FileType:
    """``path`` opened by mutagen as ``original``'s type, with a tag block to edit (an empty one added if it has none).

    ``file``: ``path`` already opened by :func:`_open_regular`, read from instead of the path.
    """
    try:
        if file is not None:
            file.seek(0)
            audio = mutagen.File(file)
        elif path == original:
            with _open_regular(path) as opened:
                return _open(path, original, opened)
        else:
            audio = type(mutagen.File(original))(path)
    except OSError as err:
        raise TagError(f"{original.name}: cannot read tags: {_reason(err)}") from err
    except TagError:
        raise
    except Exception as err:  # mutagen raises assorted errors (struct.error, ...) on odd files
        raise TagError(f"{original.name}: cannot read tags: {_reason(err)}") from err
    if audio is None:
        ext = original.suffix or "no extension"
        raise TagError(f"{original.name}: cannot tag this format ({ext}): mutagen does not support it")
    if audio.tags is None:
        try:
            audio.add_tags()
        except mutagen.MutagenError as err:
            raise TagError(f"{original.name}: cannot add tags: {_reason(err)}") from err
    if not isinstance(audio.tags, (ID3, VCommentDict, MP4Tags)):
        raise TagError(f"{original.name}: cannot tag {type(audio).__name__} files (GenreWiz writes ID3, Vorbis comments and MP4)")
    if isinstance(audio.tags, ID3) and audio.tags.version[:2] == (2, 2):
        raise TagError(
            f"{original.name}: not tagged: its tag is ID3v2.2, which mutagen can only rewrite as v2.3 or v2.4, "
            "and GenreWiz keeps a file's tag version"
        )
    return audio


def _genre_of(tags: ID3 | VCommentDict | MP4Tags, field: Field) -> str | None:
    """The first non-empty genre in ``field``; ID3 numeric genres such as ``(17)`` read as names."""
    if isinstance(tags, ID3):
        if field == "genrewiz":
            values = [str(t) for frame in tags.getall(f"TXXX:{GENRE_FIELD}") for t in frame.text]
        else:
            values = [genre for frame in tags.getall("TCON") for genre in frame.genres]
    elif isinstance(tags, MP4Tags):
        if field == "genrewiz":
            values = [bytes(v).decode("utf-8", "replace") for v in tags.get(MP4_GENRE_FIELD, [])]
        else:
            values = list(tags.get(_MP4_GENRE, [])) or [str(g) for g in tags.get(_MP4_GENRE_ID, [])]
    else:
        values = list(tags.get(GENRE_FIELD if field == "genrewiz" else "GENRE", []))
    return next((v.strip() for v in values if v.strip()), None)


def _set(tags: ID3 | VCommentDict | MP4Tags, field: Field, genre: str, confidence: str) -> None:
    """Replace the genre in ``field`` (every value of it) and GenreWiz's confidence field in ``tags``."""
    if isinstance(tags, ID3):
        if field == "genrewiz":
            tags.setall(f"TXXX:{GENRE_FIELD}", [TXXX(encoding=3, desc=GENRE_FIELD, text=[genre])])
        else:
            tags.setall("TCON", [TCON(encoding=3, text=[genre])])
        tags.setall(f"TXXX:{CONFIDENCE_FIELD}", [TXXX(encoding=3, desc=CONFIDENCE_FIELD, text=[confidence])])
    elif isinstance(tags, MP4Tags):
        if field == "genrewiz":
            tags[MP4_GENRE_FIELD] = [MP4FreeForm(genre.encode("utf-8"), dataformat=AtomDataType.UTF8)]
        else:
            tags.pop(_MP4_GENRE_ID, None)
            tags[_MP4_GENRE] = [genre]
        tags[MP4_CONFIDENCE_FIELD] = [MP4FreeForm(confidence.encode("utf-8"), dataformat=AtomDataType.UTF8)]
    else:
        tags[GENRE_FIELD if field == "genrewiz" else "GENRE"] = [genre]
        tags[CONFIDENCE_FIELD] = [confidence]


def _unset(tags: ID3 | VCommentDict | MP4Tags, field: Field, previous: str | None) -> None:
    """Put ``previous`` back into ``field`` (remove the field when it is ``None``) and drop GenreWiz's fields."""
    if isinstance(tags, ID3):
        tags.delall(f"TXXX:{CONFIDENCE_FIELD}")
        tags.delall(f"TXXX:{GENRE_FIELD}" if field == "genrewiz" else "TCON")
        if previous is not None and field == "genre":
            tags.add(TCON(encoding=3, text=[previous]))
        elif previous is not None:
            tags.add(TXXX(encoding=3, desc=GENRE_FIELD, text=[previous]))
    elif isinstance(tags, MP4Tags):
        tags.pop(MP4_CONFIDENCE_FIELD, None)
        key = MP4_GENRE_FIELD if field == "genrewiz" else _MP4_GENRE
        tags.pop(key, None)
        if previous is not None:
            tags[key] = [MP4FreeForm(previous.encode("utf-8"), dataformat=AtomDataType.UTF8)] if field == "genrewiz" else [previous]
    else:
        key = GENRE_FIELD if field == "genrewiz" else "GENRE"
        for name in (CONFIDENCE_FIELD, key):
            if name in tags:
                del tags[name]
        if previous is not None:
            tags[key] = [previous]


def _reason(err: BaseException) -> str:
    """The useful part of a mutagen or OS error (mutagen wraps OSError in its own type)."""
    cause = err.__context__ if isinstance(err, mutagen.MutagenError) and isinstance(err.__context__, OSError) else err
    if isinstance(cause, OSError) and cause.strerror:
        return cause.strerror
    return str(err) or type(err).__name__
