"""Where rows go and come back from: the table, CSV, JSON and JSON Lines writers, the summary,
the undo record of a tagging run, and the readers of a run's own JSON Lines (``--resume``,
``tag --restore``).

Rows are written and flushed one at a time, each in a single write, so that an interrupted run
leaves whole rows and a JSON array that is still closed. A JSON row carries its file's size
and mtime, so a later run can tell which files a killed ``--format jsonl`` run already wrote.
A tagging run's undo record (its ``--format jsonl`` output, else a file of its own under
:func:`undo_folder`) also holds a *pending* row (``"pending": true``) for each file, written to
disk just before the tagged copy replaces the file: a run killed between the two still says
what the file held.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import os
import textwrap
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

from tqdm import tqdm

from .results import Row, file_stat
from .verdict import decimal, percents

FORMATS = ("table", "json", "jsonl", "csv")
NOT_MUSIC = "not music"
"""What the table and the summary say in place of a genre for a file that does not sound like music."""
"""What :func:`write_rows` writes."""
MAX_PATH_WIDTH = 60
"""Widest the table's file column is laid out for; a longer path is shown whole and pushes its row."""


class OutputError(Exception):
    """The results could not be written (disk full, reader gone, ...): the run cannot go on."""

    def __init__(self, error: OSError) -> None:
        super().__init__(error.strerror or str(error))
        self.error = error


@dataclass(frozen=True)
class TableLayout:
    """Column widths fixed before the first row, so that ``--format table`` streams out aligned.

    Columns: file, genre, confidence, length, the other top genres ("also"), and for ``tag``
    what was done. An error row has its message after the file.
    """

    path: int = 40
    genre: int = 9
    top: int = 3

    @classmethod
    def for_run(cls, paths: Iterable[str | os.PathLike[str]], labels: Iterable[str], top: int) -> TableLayout:
        widths = [len(_printable(os.fspath(p))) for p in paths]
        return cls(min(max(widths, default=4), MAX_PATH_WIDTH), max(map(len, labels), default=5), top)

    @property
    def also(self) -> int:
        """Width of the "also" column: ``top - 1`` entries like ``classical under 1%``."""
        return max(0, (self.top - 1) * (self.genre + 11) - 2)

    def header(self, tags: bool = False) -> str:
        return self._line("FILE", "GENRE", "CONFIDENCE", "LENGTH", "ALSO", "TAG" if tags else None)

    def line(self, row: Row, tags: bool = False) -> str:
        path = _printable(row.path)
        if not row.ok:
            return f"{path.ljust(self.path)}  ERROR: {_printable(row.error or '')}\n"
        tag = (_printable(row.tag.describe()) if row.tag else "") if tags else None
        if not row.top:  # a file tagging kept or restored without analysing it
            return self._line(path, "", "", "", "", tag)
        shown = percents(row.top)  # as the page writes them: never "100%", never rounded across the verdict's lines
        also = ", ".join(f"{label} {text}" for (label, _), text in zip(row.top[1:], shown[1:]))
        if not row.is_music:  # the genres stay visible, but none is the file's
            heard = ", ".join(f"{label} {text}" for (label, _), text in zip(row.top, shown))
            return self._line(path, NOT_MUSIC, "", _length(row.duration), heard, tag)
        return self._line(path, row.top[0][0], shown[0], _length(row.duration), also, tag)

    def _line(self, path: str, genre: str, confidence: str, length: str, also: str, tag: str | None) -> str:
        cells = [path.ljust(self.path), genre.ljust(self.genre), confidence.rjust(len("CONFIDENCE")), length.rjust(6)]
        if self.top > 1:
            cells.append(also.ljust(self.also))
        if tag is not None:
            cells.append(tag)
        return "  ".join(cells).rstrip() + "\n"


def _length(seconds: float | None) -> str:
    """``75.3`` -> ``1:15``."""
    if seconds is None:
        return ""
    minutes, secs = divmod(round(seconds), 60)
    return f"{minutes}:{secs:02d}"


def write_rows(
    rows: Iterable[Row], out: TextIO, fmt: str, top: int, tags: bool = False, layout: TableLayout | None = None
) -> int:
    """Write rows as they arrive, each flushed at once, and return how many failed.

    Each row goes out in one write, so an interruption never leaves half of one. ``json`` is a
    single array (the layout of ``json.dump(indent=2)``) whose closing bracket is written even
    when the run is interrupted, so finished results are never lost; ``jsonl`` is one object
    per line, readable while the run goes on; ``table`` is a header and aligned columns laid
    out by ``layout``. ``tags`` adds what ``genrewiz tag`` did to each file (a CSV and a table
    column; JSON rows carry it when set).

    Raises:
        OutputError: writing to ``out`` failed.
    """
    emit = _emitter(out)
    layout = layout or TableLayout(top=top)
    failures = written = 0
    if fmt == "csv":
        ranks = [f"{kind}_{i}" for i in range(1, top + 1) for kind in ("genre", "confidence")]
        emit(_csv_line(["path", "status", *ranks, "duration_s", "music", "error", *(["tag"] if tags else [])]))
    elif fmt == "json":
        emit("[")
    elif fmt == "table":
        emit(layout.header(tags))
    try:
        for row in rows:
            failures += not row.ok
            emit(layout.line(row, tags) if fmt == "table" else _format_row(row, fmt, top, first=written == 0, tags=tags))
            written += 1
    finally:
        if fmt == "json":
            emit("\n]\n" if written else "]\n")
    return failures


def _emitter(out: TextIO) -> Callable[[str], None]:
    """``emit(text)``: write and flush ``text``, raising :class:`OutputError` when that fails.

    A progress bar on the same terminal is cleared first and drawn again after, so that a row
    is never written into the middle of the bar's line.
    """

    def emit(text: str) -> None:
        try:
            with tqdm.external_write_mode(file=out):
                out.write(text)
                out.flush()
        except OSError as err:
            raise OutputError(err) from err

    return emit


def _format_row(row: Row, fmt: str, top: int, first: bool, tags: bool = False) -> str:
    """One row as ``json``, ``jsonl`` or ``csv`` writes it, separators and line end included."""
    if fmt == "json":
        return ("\n" if first else ",\n") + textwrap.indent(json.dumps(row.to_json(), indent=2), "  ")
    if fmt == "jsonl":
        return json.dumps(row.to_json()) + "\n"
    cells = [cell for label, confidence in row.top for cell in (label, decimal(confidence))]
    cells += [""] * (2 * top - len(cells))
    duration = "" if row.duration is None else f"{row.duration:.2f}"
    music = "" if row.music is None else f"{row.music:.4f}"
    tag = [row.tag.describe() if row.tag else ""] if tags else []
    return _csv_line([row.path, "ok" if row.ok else "error", *cells, duration, music, row.error or "", *tag])


def _csv_line(cells: list[str]) -> str:
    """One CSV record, quoted as the csv module quotes it."""
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\n").writerow(cells)
    return buffer.getvalue()


def _printable(text: str) -> str:
    """``text`` with control characters (escape sequences, tabs, newlines) shown as escapes.

    File names are the user's: in a terminal one must not move the cursor, recolour the
    screen or split a row in two.
    """
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in text)


@dataclass
class Summary:
    """The counts that end a run on stderr, for the CLI's rows and Ray's alike; constant memory
    (one counter per genre and tag action)."""

    started: float = field(default_factory=time.monotonic)
    files: int = 0
    failed: int = 0
    unanalysed: int = 0
    """Files ``tag`` kept without analysing them: they already had a genre."""
    skipped: int = 0
    genres: Counter[str] = field(default_factory=Counter)
    tags: Counter[str] = field(default_factory=Counter)

    def add(self, ok: bool, genre: str | None, tag_action: str | None = None) -> None:
        """Count one file: whether it succeeded, its top genre (``None``: not analysed) and what tagging did to it."""
        self.files += 1
        if not ok:
            self.failed += 1
        elif genre is None:
            self.unanalysed += 1
        else:
            self.genres[genre] += 1
        if tag_action is not None:
            self.tags[tag_action] += 1

    def count(self, rows: Iterable[Row]) -> Iterator[Row]:
        """Pass ``rows`` through, counting them."""
        for row in rows:
            genre = (row.top[0][0] if row.is_music else NOT_MUSIC) if row.ok and row.top else None
            self.add(row.ok, genre, None if row.tag is None else row.tag.action)
            yield row

    def lines(self, output: object) -> list[str]:
        """The report: files, failures, time and files/s, then skipped files, genres and tag actions."""
        elapsed = time.monotonic() - self.started
        lines = [
            f"{_files(self.files)} in {elapsed:.1f} s ({self.files / elapsed:.1f} files/s): "
            f"{self.files - self.failed - self.unanalysed} analysed, {self.failed} failed"
            + (f", {self.unanalysed} kept unanalysed (they had a genre)" if self.unanalysed else "")
        ]
        if self.skipped:
            lines.append(f"{_files(self.skipped)} skipped: already in {output}")
        if self.genres:
            lines.append("genres: " + ", ".join(f"{genre} {n}" for genre, n in self.genres.most_common()))
        if self.tags:
            lines.append("tags: " + ", ".join(f"{n} {action}" for action, n in self.tags.most_common()))
        return lines


def _files(count: int) -> str:
    return f"{count} file" if count == 1 else f"{count} files"


def unfinished(files: list[Path], output: Path, tagging: bool) -> tuple[list[Path], int]:
    """``files`` less those ``output`` (JSON Lines) already has a row for, and how many were skipped.

    A torn last line (the run was killed mid-write) is cut off so that appending keeps the file
    valid. When ``tagging``, a row counts only if the file's tags were dealt with: a dry run's
    or ``predict``'s rows do not stop ``tag --resume`` from writing the tags. Keys are hashes,
    so a million finished files cost tens of MB, not the rows themselves.
    """
    done: set[int] = set()
    with contextlib.suppress(FileNotFoundError), open(output, "r+b") as previous:
        end = 0
        for line in previous:
            if not line.endswith(b"\n"):
                break
            end += len(line)
            with contextlib.suppress(ValueError, KeyError, TypeError, AttributeError):
                row = json.loads(line.decode("utf-8", "surrogateescape"))
                if not tagging or not row["ok"] or row["tag"]["action"] != "would tag":
                    done.add(hash((row["path"], row["size"], row["mtime"])))
        previous.truncate(end)
    todo = [path for path in files if hash((str(path), *file_stat(str(path)))) not in done]
    return todo, len(files) - len(todo)


def restore_plans(rows_file: Path) -> dict[str, tuple[str, str | None, str]]:
    """Per tagged file in ``rows_file`` (JSON Lines): the genre GenreWiz wrote last, the one it first replaced, the field.

    A file tagged by several runs (``--overwrite``) gets back what it had before the first. A
    pending row that no row of the same file follows (the run was killed around the rename)
    counts when the file is the tagged copy it describes (same size and mtime): the rename
    happened.
    """
    plans: dict[str, tuple[str, str | None, str]] = {}
    unconfirmed: dict[str, dict] = {}

    def plan(path: str, tag: dict) -> None:
        first = plans.get(path, (None, tag["previous"], None))[1]
        plans[path] = (tag["genre"], first, tag.get("field", "genre"))

    with open(rows_file, "rb") as lines:
        for line in lines:
            with contextlib.suppress(ValueError, KeyError, TypeError, AttributeError):
                row = json.loads(line.decode("utf-8", "surrogateescape"))
                if row.get("pending"):
                    unconfirmed[row["path"]] = row
                    continue
                unconfirmed.pop(row["path"], None)
                if row["ok"] and row["tag"]["action"] == "tagged":
                    plan(row["path"], row["tag"])
    for path, row in unconfirmed.items():
        if file_stat(path) == (row["size"], row["mtime"]):
            plan(path, row["tag"])
    return plans

UNDO_FOLDER_VAR = "GENREWIZ_UNDO_DIR"
"""Where plain ``genrewiz tag`` runs keep their undo records, if set."""


def undo_folder() -> Path:
    """Where a ``genrewiz tag`` run without a JSON Lines ``--output`` keeps its undo record:
    ``$GENREWIZ_UNDO_DIR``, else ``$XDG_STATE_HOME/genrewiz/undo`` (``~/.local/state/genrewiz/undo``)."""
    if folder := os.environ.get(UNDO_FOLDER_VAR):
        return Path(folder)
    state = os.environ.get("XDG_STATE_HOME") or os.path.join(os.path.expanduser("~"), ".local", "state")
    return Path(state, "genrewiz", "undo")


class Journal:
    """A tagging run's undo record: pending rows before each rename, and the tagged rows after.

    ``out`` is the record. When it is the run's own ``--format jsonl`` output (``own_rows``),
    its rows are written there anyway; otherwise :meth:`confirm` adds the tagged ones.
    """

    def __init__(self, out: TextIO, path: Path, own_rows: bool) -> None:
        self.out, self.path, self.own_rows = out, path, own_rows
        self.tagged = 0

    def pending(self, row: Row) -> None:
        """Write ``row`` as pending and put it on disk (``fsync``) before the file it describes changes.

        Raises:
            OutputError: the record cannot be written: the file is then not tagged.
        """
        try:
            self.out.write(json.dumps({**row.to_json(), "pending": True}) + "\n")
            self.out.flush()
            os.fsync(self.out.fileno())
        except OSError as err:
            raise OutputError(err) from err

    def confirm(self, rows: Iterable[Row]) -> Iterator[Row]:
        """Pass ``rows`` through, counting the tagged ones and adding them to a record of its own."""
        emit = None if self.own_rows else _emitter(self.out)
        for row in rows:
            if row.ok and row.tag is not None and row.tag.action == "tagged":
                self.tagged += 1
                if emit is not None:
                    emit(json.dumps(row.to_json()) + "\n")
            yield row


def open_undo_record(folder: Path | None = None) -> tuple[TextIO, Path]:
    """A new, empty undo record file in ``folder`` (default :func:`undo_folder`), named by the time.

    Raises:
        OSError: the folder cannot be made or written.
    """
    folder = folder or undo_folder()
    folder.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    for n in range(100):
        path = folder / f"tag-{stamp}{f'-{n}' if n else ''}.jsonl"
        with contextlib.suppress(FileExistsError):
            return open(path, "x", encoding="utf-8", errors="surrogateescape"), path
    raise FileExistsError(f"{folder}: too many undo records named tag-{stamp}")


def rows_problem(path: Path) -> str | None:
    """Why ``path`` is not a file of GenreWiz JSON Lines rows (every whole line one row), or ``None``.

    A last line without its line end (a run killed mid-write) is allowed; an empty file is.
    """
    with open(path, "rb") as lines:
        for number, line in enumerate(lines, 1):
            if not line.endswith(b"\n"):
                break
            try:
                row = json.loads(line.decode("utf-8", "surrogateescape"))
            except ValueError:
                return f"line {number} is not JSON"
            if not (isinstance(row, dict) and isinstance(row.get("path"), str) and "ok" in row):
                return f"line {number} is not a GenreWiz row (no path and ok)"
    return None
