"""``genrewiz predict`` and ``genrewiz tag``: classify files or whole music folders from the command line.

Files are decoded (the slow part) in worker processes while one model, loaded once in the
main process, classifies them. A file that cannot be read becomes an error row; the run goes
on and the exit status is 1 when any file failed.

Rows are written and flushed as they come. SIGINT and SIGTERM stop the run the same way: the
workers are killed, the rows so far stay written (a JSON array is closed), and the exit status
is 128 + the signal. Workers also die with the main process however it ends (Linux
``PR_SET_PDEATHSIG``), so none is ever left behind.

``genrewiz tag`` runs the same predictions and writes each file's top genre into its own tags
(:mod:`genrewiz.tags`). Every JSON row carries the file's size and mtime, so ``--resume`` can
skip the files a killed ``--format jsonl`` run already wrote; a summary (files, failures,
genres, files/s) ends the run on stderr. ``predict --ray`` hands the work to Ray Data instead
(:mod:`genrewiz.distributed`). Both modules are imported only when used.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import ctypes
import io
import json
import logging
import multiprocessing
import os
import re
import signal
import sys
import textwrap
import time
from collections import Counter
from collections.abc import Callable, Generator, Iterable, Iterator, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

from threadpoolctl import threadpool_limits
from tqdm import tqdm

from . import __version__
from .audio import DEFAULT_MAX_DURATION, SUPPORTED_EXTENSIONS, AudioError
from .checkpoint import MODEL_THREADS
from .features import FeatureConfig
from .predict import Analysis, GenreClassifier, Prediction, analyse
from .results import top_json, windows_json
from .verdict import CLOSE_MARGIN, UNSURE_BELOW

if TYPE_CHECKING:
    from .tags import TagResult

EXIT_OK, EXIT_SOME_FAILED, EXIT_USAGE = 0, 1, 2
EXIT_BROKEN_PIPE = 128 + signal.SIGPIPE
"""What a shell reports for a Unix tool whose reader went away (``genrewiz ... | head -1``)."""
FORMATS = ("table", "json", "jsonl", "csv")
RAY_FORMATS = ("parquet", "jsonl")
"""What ``predict --ray`` writes: a folder of files, one per block of results."""
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)
MAX_PATH_WIDTH = 60
"""Widest the table's file column is laid out for; a longer path is shown whole and pushes its row."""
_PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


class Interrupted(KeyboardInterrupt):
    """SIGINT or SIGTERM reached the CLI: stop decoding, keep what was written."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


class OutputError(Exception):
    """The results could not be written (disk full, reader gone, ...): the run cannot go on."""

    def __init__(self, error: OSError) -> None:
        super().__init__(error.strerror or str(error))
        self.error = error


@dataclass(frozen=True)
class Row:
    """One output line: a file and either its top genres or the reason it failed."""

    path: str
    top: list[tuple[str, float]]
    duration: float | None = None
    error: str | None = None
    size: int | None = None
    mtime: float | None = None
    tag: TagResult | None = None
    windows: list[dict] | None = None

    @property
    def ok(self) -> bool:
        return self.error is None

    def to_json(self) -> dict:
        return {
            "path": self.path,
            "ok": self.ok,
            "duration_s": None if self.duration is None else round(self.duration, 2),
            "top": top_json(self.top),
            "error": self.error,
            "size": self.size,
            "mtime": self.mtime,
            **({} if self.tag is None else {"tag": self.tag.to_json()}),
            **({} if self.windows is None else {"windows": self.windows}),
        }


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
        """Width of the "also" column: ``top - 1`` entries like ``classical 100%``."""
        return max(0, (self.top - 1) * (self.genre + 7) - 2)

    def header(self, tags: bool = False) -> str:
        return self._line("FILE", "GENRE", "CONFIDENCE", "LENGTH", "ALSO", "TAG" if tags else None)

    def line(self, row: Row, tags: bool = False) -> str:
        path = _printable(row.path)
        if not row.ok:
            return f"{path.ljust(self.path)}  ERROR: {_printable(row.error or '')}\n"
        tag = (_printable(row.tag.describe()) if row.tag else "") if tags else None
        if not row.top:  # a file tagging kept or restored without analysing it
            return self._line(path, "", "", "", "", tag)
        (genre, confidence), others = row.top[0], row.top[1:]
        also = ", ".join(f"{label} {p:.0%}" for label, p in others)
        return self._line(path, genre, f"{confidence:.0%}", _length(row.duration), also, tag)

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


def find_audio_files(paths: Iterable[str | os.PathLike[str]]) -> list[Path]:
    """Expand folders recursively into their audio files (sorted); named files are kept as given.

    An entry that cannot be listed or looked at (a folder without read or search permission, a
    link to something unreadable) is kept as it is, so that it becomes an error row saying why
    instead of stopping the run or vanishing. Links to folders are not followed, so a scan never
    leaves the folders it was given nor loops.
    """
    found: list[Path] = []
    for path in map(Path, paths):
        if _is_dir(path):
            found += sorted(_walk(path))
        else:
            found.append(path)
    return found


def _is_dir(path: Path) -> bool:
    """``path.is_dir()``, false for what cannot be looked at (Python 3.11 raises there)."""
    try:
        return path.is_dir()
    except OSError:
        return False


def _walk(folder: Path) -> Iterator[Path]:
    """Audio files under ``folder``, and the entries that could not be read (see :func:`find_audio_files`)."""
    unreadable: list[Path] = []
    for parent, _, names in os.walk(folder, onerror=lambda err: unreadable.append(Path(err.filename))):
        for name in names:
            path = Path(parent, name)
            if path.suffix.lower() in SUPPORTED_EXTENSIONS:
                yield path
    yield from unreadable


def unreadable_reason(path: str | os.PathLike[str]) -> str | None:
    """Why ``path`` cannot even be opened (``Permission denied``, a folder, ...), or ``None``.

    The decoders would report such a file as corrupt; the user needs the real reason.
    """
    name = Path(path).name or os.fspath(path)
    try:
        if os.path.isdir(path):
            os.listdir(path)
            return f"{name}: a folder, not an audio file"
        with open(path, "rb"):
            return None
    except FileNotFoundError:
        return None  # the decoder says "file not found" itself
    except OSError as err:
        return f"{name}: cannot read: {err.strerror or err}"


def _init_worker(parent: int) -> None:
    """Set up a decoding worker: it dies with the main process and leaves signals to it.

    Ctrl-C reaches every process of the terminal's group; only the main process acts on it. A
    worker blocked on its task queue would otherwise outlive a main process that was killed.
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    with contextlib.suppress(AttributeError, OSError):  # prctl is Linux-only
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent:  # the main process was gone before prctl took effect
        os._exit(1)


def _stop_workers(pool: ProcessPoolExecutor) -> None:
    """Kill the pool's workers now instead of letting them finish their queued files."""
    pool.shutdown(wait=False, cancel_futures=True)
    # Python 3.14 has pool.terminate_workers(); before it the processes are only reachable here.
    for process in list((getattr(pool, "_processes", None) or {}).values()):
        process.kill()


def _analyse_or_error(path: Path, config: FeatureConfig, max_duration: float) -> Analysis | str:
    """Worker-side step: decode and compute the log-mel, or return the error message."""
    if (reason := unreadable_reason(path)) is not None:
        return reason
    try:
        return analyse(path, config, max_duration=max_duration)
    except AudioError as err:
        return str(err)
    except OSError as err:  # e.g. the file vanished or lost its permissions between the checks
        return f"{path.name}: cannot read: {err.strerror or err}"


def predict_files(
    classifier: GenreClassifier, files: Sequence[Path], top: int, jobs: int, progress: bool = False, windows: bool = False
) -> Generator[Row, None, None]:
    """Yield a :class:`Row` per file, in order; decoding runs in ``jobs`` worker processes.

    At most ``2 * jobs`` decoded songs wait for the model at any time, so memory stays flat
    however large the library. The parallelism is across files, so every process keeps to one
    BLAS thread: more would only fight over the same cores (measured: 1.5x fewer files/s on 2).
    ``windows`` adds each file's genre timeline to its row.
    """
    with threadpool_limits(1):
        yield from _predict_files(classifier, files, top, jobs, progress, windows)


def _predict_files(
    classifier: GenreClassifier, files: Sequence[Path], top: int, jobs: int, progress: bool, windows: bool
) -> Iterator[Row]:
    """:func:`predict_files` inside its thread limit."""

    def row(path: Path, result: Analysis | str) -> Row:
        if isinstance(result, str):
            return Row(str(path), [], error=result)
        try:
            prediction: Prediction = classifier.classify(result)
        except AudioError as err:
            return Row(str(path), [], error=str(err))
        timeline = windows_json(prediction, classifier.config.window_seconds) if windows else None
        return Row(str(path), prediction.top(top), duration=prediction.duration, windows=timeline)

    bar = tqdm(total=len(files), unit="file", disable=not progress, file=sys.stderr)
    if jobs <= 1:
        for path in files:
            yield row(path, _analyse_or_error(path, classifier.config, classifier.max_duration))
            bar.update()
        bar.close()
        return
    # Forked workers start in milliseconds. They run only numpy/librosa code: torch's OpenMP
    # pool is not fork-safe, so nothing on the worker side may call into torch.
    pool = ProcessPoolExecutor(
        max_workers=jobs,
        mp_context=multiprocessing.get_context("fork"),
        initializer=_init_worker,
        initargs=(os.getpid(),),
    )
    finished = False
    try:
        pending: list[tuple[Path, Future]] = []
        for path in files:
            pending.append((path, pool.submit(_analyse_or_error, path, classifier.config, classifier.max_duration)))
            if len(pending) >= 2 * jobs:
                done_path, future = pending.pop(0)
                yield row(done_path, future.result())
                bar.update()
        for done_path, future in pending:
            yield row(done_path, future.result())
            bar.update()
        finished = True
    finally:
        if not finished:  # interrupted, or the reader of the rows stopped early
            _stop_workers(pool)
        pool.shutdown(wait=True, cancel_futures=True)
        bar.close()


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
        emit(_csv_line(["path", "status", *ranks, "duration_s", "error", *(["tag"] if tags else [])]))
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
    cells = [cell for label, confidence in row.top for cell in (label, f"{confidence:.4f}")]
    cells += [""] * (2 * top - len(cells))
    duration = "" if row.duration is None else f"{row.duration:.2f}"
    tag = [row.tag.describe() if row.tag else ""] if tags else []
    return _csv_line([row.path, "ok" if row.ok else "error", *cells, duration, row.error or "", *tag])


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


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """``--help`` shows each option's default, except where there is none to show (unset, off)."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        if action.default is None or action.default is False:
            return action.help
        return super()._get_help_string(action)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="genrewiz", description="Music genre classification (GTZAN genres).", formatter_class=_HelpFormatter
    )
    parser.add_argument("--version", action="version", version=f"genrewiz {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)
    predict = commands.add_parser(
        "predict", help="classify audio files or folders (recursive)", formatter_class=_HelpFormatter,
        description="Classify audio files, and folders searched recursively for "
        + ", ".join(sorted(e.lstrip(".") for e in SUPPORTED_EXTENSIONS)) + " files.",
    )
    predict.add_argument("paths", nargs="*", help="audio files and/or folders (with --ray also URIs: s3://..., gs://...)")
    _add_run_options(predict, formats=(*FORMATS, "parquet"))
    predict.set_defaults(ray_paths=[], command_parser=predict)
    predict.add_argument(
        "--ray",
        nargs="?",
        const="",
        action=_RayAddress,
        metavar="ADDRESS",
        help="run on Ray Data, on the cluster at ADDRESS (auto, HOST:PORT, ray://HOST:PORT; default: $RAY_ADDRESS, "
        "a cluster started here by `ray start`, else a new local instance); --output is then a new folder or URI",
    )
    predict.add_argument(
        "--actors",
        type=_at_least(1),
        help="with --ray: model replicas, each loading the checkpoint once (default: 1 to the cluster's CPUs, as needed)",
    )
    tag = commands.add_parser(
        "tag",
        help="classify and write each file's top genre into its own tags",
        description="Classify audio files and write the top genre into each file's genre tag, and the "
        "confidence into a GenreWiz field. Only tags change, never the audio.",
        formatter_class=_HelpFormatter,
    )
    tag.add_argument("paths", nargs="*", help="audio files and/or folders")
    _add_run_options(tag, formats=FORMATS)
    tag.set_defaults(ray=None, ray_paths=[], actors=None, command_parser=tag)
    tag.add_argument("--dry-run", "-n", action="store_true", help="show what would change, write nothing")
    tag.add_argument("--overwrite", action="store_true", help="replace genre tags the files already have (default: keep them, without analysing those files)")
    tag.add_argument(
        "--min-confidence",
        type=_probability,
        metavar="P",
        help="tag a file when its top genre's probability is at least P (default: only when the app would not say "
        f"'Not sure': top genre at least {UNSURE_BELOW * 100:.0f}%% and {CLOSE_MARGIN * 100:.0f} points ahead of the second)",
    )
    tag.add_argument(
        "--own-fields",
        action="store_true",
        help="write the genre into GenreWiz's own field (GENREWIZ_GENRE) beside the confidence, never the standard genre field",
    )
    tag.add_argument(
        "--restore",
        type=Path,
        metavar="ROWS",
        help="undo: put back the genres a run's --format jsonl ROWS replaced (where the files still hold GenreWiz's genre)",
    )
    return parser


def _at_least(minimum: int) -> Callable[[str], int]:
    """An argparse type: an integer of at least ``minimum`` (errors come from the subcommand's own parser)."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be at least {minimum}, not {value}")
        return value

    return parse


def _positive(text: str) -> float:
    """An argparse type: a number above 0."""
    value = _number(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be positive, not {text}")
    return value


def _probability(text: str) -> float:
    """An argparse type: a probability, 0 to 1."""
    value = _number(text)
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"must be between 0 and 1, not {text}")
    return value


def _number(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None


def _add_run_options(command: argparse.ArgumentParser, formats: Sequence[str]) -> None:
    """The options ``predict`` and ``tag`` share."""
    command.add_argument("--top", type=_at_least(1), default=3, help="how many genres to report per file")
    command.add_argument(
        "--format",
        choices=formats,
        help=f"output format (default: {'table; with --ray: parquet' if 'parquet' in formats else 'table'}); "
        "jsonl: one JSON object per line, as it goes",
    )
    command.add_argument("--output", "-o", type=Path, help="write results here instead of standard output")
    command.add_argument("--model", help="Hub repo id or checkpoint folder (default: $GENREWIZ_MODEL or the GenreWiz repo)")
    command.add_argument(
        "--windows",
        action="store_true",
        help="add each file's genre timeline to JSON and JSON Lines rows: per window, start_s, end_s and every genre's confidence",
    )
    command.add_argument("--jobs", "-j", type=_at_least(1), default=os.cpu_count() or 1, help="decoding worker processes (default: %(default)s, the CPU count)")
    command.add_argument("--max-duration", type=_positive, default=DEFAULT_MAX_DURATION, help="seconds analysed per file")
    command.add_argument(
        "--resume",
        action="store_true",
        help="skip the files already in --output (a --format jsonl file), matched by path, size and mtime, and append",
    )
    command.add_argument("--quiet", "-q", action="store_true", help="no progress bar, log lines or summary")


class _RayAddress(argparse.Action):
    """``--ray [ADDRESS]`` that does not swallow a path: a value that is no Ray address is the first path."""

    def __call__(self, parser, namespace, value, option_string=None) -> None:
        if value and not _is_ray_address(value):
            namespace.ray_paths = [value]
            value = ""
        setattr(namespace, self.dest, value)


def _is_ray_address(value: str) -> bool:
    """``auto``, ``local``, ``ray://...`` or ``HOST:PORT``: what ``ray.init(address=...)`` accepts."""
    return value in ("auto", "local") or value.startswith("ray://") or re.fullmatch(r"[\w.\-\[\]:]+:\d+", value) is not None


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``genrewiz`` console script and ``python -m genrewiz``.

    A stop signal is honoured wherever it lands, also while the run is already closing its
    output: one line and exit status 128 + the signal, never a traceback.
    """
    try:
        return _main(argv)
    except KeyboardInterrupt as stop:  # Interrupted, or a Ctrl-C after the handlers were given back
        with contextlib.suppress(KeyboardInterrupt, OSError):
            print("genrewiz: interrupted; the results so far were written", file=sys.stderr)
        return 128 + getattr(stop, "signum", signal.SIGINT)


def _main(argv: Sequence[str] | None) -> int:
    """:func:`main` inside its interrupt handling."""
    parser = build_parser()
    args = parser.parse_args(argv)
    args.paths = [*args.ray_paths, *args.paths]
    _check_args(args.command_parser, args)
    logging.basicConfig(level=logging.WARNING if args.quiet else logging.INFO, format="%(message)s")
    if args.ray is not None:
        return _run_ray(args)
    restoring = getattr(args, "restore", None) is not None
    files = [] if restoring else find_audio_files(args.paths)
    if not files and not restoring:
        print("genrewiz: no audio files found in " + ", ".join(args.paths), file=sys.stderr)
        return EXIT_USAGE
    if args.output is not None and args.output.resolve() in {path.resolve() for path in files}:
        args.command_parser.error(f"--output {args.output} is one of the audio files to analyse")
    summary = Summary()
    try:
        if args.resume:
            files, summary.skipped = _unfinished(files, args.output, tagging=args.command == "tag" and not args.dry_run)
        out = _open_output(args.output, append=args.resume)
    except OSError as err:
        print(f"genrewiz: cannot write to {args.output}: {err.strerror or err}", file=sys.stderr)
        return EXIT_USAGE
    if not files and not restoring:
        out.close()
        if not args.quiet:
            print(f"genrewiz: nothing to do: all {summary.skipped} files are already in {args.output}", file=sys.stderr)
        return EXIT_OK
    previous = {sig: signal.signal(sig, _raise_interrupted) for sig in STOP_SIGNALS}
    try:
        return _run_restore(args, out) if restoring else _run(args, files, out, summary)
    except Interrupted as stop:
        print("genrewiz: interrupted; the results so far were written", file=sys.stderr)
        return 128 + stop.signum
    except OutputError as failure:
        if isinstance(failure.error, BrokenPipeError):  # the reader has all it wanted, as `head` does
            if out is sys.stdout:
                _discard_stdout()
            return EXIT_BROKEN_PIPE
        print(f"genrewiz: cannot write results to {args.output or 'standard output'}: {failure}", file=sys.stderr)
        return EXIT_USAGE
    finally:
        if out is not sys.stdout:
            with contextlib.suppress(OSError):
                out.close()
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _check_args(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Refuse option values and combinations that cannot work, as usage errors of ``parser`` (exit 2)."""
    restore = getattr(args, "restore", None)
    if restore is not None:
        if args.paths:
            parser.error("--restore takes its files from the rows it is given: no paths with it")
        for option in ("overwrite", "min_confidence", "resume", "windows", "own_fields"):
            if getattr(args, option) not in (None, False):
                parser.error(f"--{option.replace('_', '-')} does not apply to --restore")
        if not restore.is_file():
            parser.error(f"--restore {restore}: no such file")
    elif not args.paths:
        parser.error("give at least one audio file or folder")
    missing = [path for path in args.paths if "://" not in path and not os.path.lexists(path)]
    if missing:
        parser.error("no such file or folder: " + ", ".join(os.path.abspath(path) for path in missing))
    args.format = args.format or ("parquet" if args.ray is not None else "table")
    if args.windows and args.format not in ("json", "jsonl"):
        parser.error("--windows needs --format json or jsonl")
    if args.output is not None and args.ray is None:
        _check_output(parser, args.output, args.resume)
    if args.ray is None:
        if args.format == "parquet":
            parser.error("--format parquet needs --ray")
        if args.actors is not None:
            parser.error("--actors needs --ray")
        if args.resume and (args.output is None or args.format != "jsonl"):
            parser.error("--resume needs --format jsonl and --output FILE")
        return
    if args.format not in RAY_FORMATS:
        parser.error("--ray writes --format parquet or jsonl")
    if args.windows:
        parser.error("--windows does not apply to --ray (its rows are the Parquet schema's)")
    if args.output is None:
        parser.error("--ray needs --output: a new folder or URI for the result files")
    if args.resume:
        parser.error("--resume does not apply to --ray (Ray retries failed tasks itself)")


def _check_output(parser: argparse.ArgumentParser, output: Path, resume: bool) -> None:
    """Refuse an ``--output`` that would overwrite or append to a user's audio, or to anything but our rows."""
    if output.suffix.lower() in SUPPORTED_EXTENSIONS:
        parser.error(f"--output {output} names an audio file: results are never written into one")
    if resume and output.is_file():
        with open(output, "rb") as existing:
            start = existing.read(1)
        if start not in (b"", b"{"):
            parser.error(f"--resume --output {output}: not a GenreWiz --format jsonl file; it was left untouched")


def _run(args: argparse.Namespace, files: list[Path], out: TextIO, summary: Summary) -> int:
    """Load the model, classify (and for ``tag``, tag) ``files`` into ``out`` and return the exit status."""
    try:
        classifier = GenreClassifier.from_pretrained(args.model, max_duration=args.max_duration, num_threads=MODEL_THREADS)
    except (OSError, ValueError, RuntimeError) as err:
        print(f"genrewiz: cannot load model: {err}", file=sys.stderr)
        return EXIT_USAGE
    except Interrupted:
        write_rows((), out, args.format, args.top)  # even a run stopped this early leaves well-formed output
        raise
    tagging = args.command == "tag"
    top = min(args.top, len(classifier.labels))
    kept = {} if not tagging or args.overwrite else _already_tagged(files, args.own_fields)
    todo = [path for path in files if path not in kept]
    progress = not args.quiet and len(todo) > 1 and sys.stderr.isatty()
    # Tagging needs the second genre too: the "Not sure" rule compares the first two.
    analysed_top = min(max(top, 2), len(classifier.labels)) if tagging else top
    predictions = predict_files(classifier, todo, analysed_top, max(1, min(args.jobs, len(todo))), progress, windows=args.windows)
    rows: Iterable[Row] = predictions
    if tagging:
        tagged = tag_rows(
            rows, overwrite=args.overwrite, min_confidence=args.min_confidence, dry_run=args.dry_run, own_fields=args.own_fields
        )
        rows = _in_order(files, kept, tagged, top)
    rows = summary.count(_with_file_stat(rows))
    try:
        layout = TableLayout.for_run(files, classifier.labels, top)
        failures = write_rows(rows, out, args.format, top, tags=tagging, layout=layout)
    except Interrupted:
        _report(summary, args)
        raise
    finally:
        predictions.close()  # stops the decoding workers when writing ended early
    if failures and not args.quiet:
        what = "analysed or tagged" if tagging else "analysed"
        print(f"genrewiz: {failures} of {len(files)} files could not be {what}", file=sys.stderr)
    _report(summary, args)
    return EXIT_SOME_FAILED if failures else EXIT_OK


def tag_rows(
    rows: Iterable[Row],
    overwrite: bool = False,
    min_confidence: float | None = None,
    dry_run: bool = False,
    own_fields: bool = False,
) -> Iterator[Row]:
    """Write each analysed file's top genre into its tags (:func:`genrewiz.tags.tag_file`).

    A file that cannot be tagged becomes an error row that keeps its genres; the run goes on.
    Each file's row arrives after its decoding finished, so no worker reads a file being tagged.
    """
    from .tags import TagError, tag_file

    for row in rows:
        if row.ok:
            label, confidence = row.top[0]
            runner_up = row.top[1][1] if len(row.top) > 1 else 0.0
            try:
                result = tag_file(
                    row.path,
                    label,
                    confidence,
                    runner_up=runner_up,
                    overwrite=overwrite,
                    min_confidence=min_confidence,
                    dry_run=dry_run,
                    own_fields_only=own_fields,
                )
                row = replace(row, tag=result)
            except TagError as err:
                row = replace(row, error=str(err))
        yield row


def _already_tagged(files: Sequence[Path], own_fields: bool) -> dict[Path, Row]:
    """The files that already have a genre, as their ``kept`` rows: they need no decoding at all.

    Reading tags costs a small read per file; a file whose tags cannot be read is left to the
    analysis and tagging, which report why.
    """
    from .tags import TagError, TagResult, existing_genre

    kept: dict[Path, Row] = {}
    for path in files:
        with contextlib.suppress(TagError):
            if (previous := existing_genre(path, own_fields)) is not None:
                result = TagResult("kept", None, None, previous, "genrewiz" if own_fields else "genre")
                kept[path] = Row(str(path), [], tag=result)
    return kept


def _in_order(files: Sequence[Path], kept: dict[Path, Row], rows: Iterable[Row], top: int) -> Iterator[Row]:
    """The rows of every file in ``files``' order: ``kept`` ones where they belong, ``rows`` cut to ``top`` genres."""
    analysed = iter(rows)
    for path in files:
        if path in kept:
            yield kept[path]
        else:
            row = next(analysed)
            yield replace(row, top=row.top[:top])


def _run_restore(args: argparse.Namespace, out: TextIO) -> int:
    """``tag --restore ROWS``: put back the genres a tagging run replaced, a row per file it had tagged."""
    from .tags import TagError, restore_file

    plans = _restore_plans(args.restore)

    def rows() -> Iterator[Row]:
        for path, (written, before, field_name) in plans.items():
            try:
                yield Row(path, [], tag=restore_file(path, written, before, field_name, dry_run=args.dry_run))
            except TagError as err:
                yield Row(path, [], error=str(err))

    failures = write_rows(_with_file_stat(rows()), out, args.format, 1, tags=True, layout=TableLayout.for_run(plans, [], 1))
    if failures and not args.quiet:
        print(f"genrewiz: {failures} of {len(plans)} files could not be restored", file=sys.stderr)
    return EXIT_SOME_FAILED if failures else EXIT_OK


def _restore_plans(rows_file: Path) -> dict[str, tuple[str, str | None, str]]:
    """Per tagged file in ``rows_file`` (JSON Lines): the genre GenreWiz wrote last, the one it first replaced, the field.

    A file tagged by several runs (``--overwrite``) gets back what it had before the first.
    """
    plans: dict[str, tuple[str, str | None, str]] = {}
    with open(rows_file, "rb") as lines:
        for line in lines:
            with contextlib.suppress(ValueError, KeyError, TypeError, AttributeError):
                row = json.loads(line.decode("utf-8", "surrogateescape"))
                tag = row["tag"]
                if row["ok"] and tag["action"] == "tagged":
                    first = plans.get(row["path"], (None, tag["previous"], None))[1]
                    plans[row["path"]] = (tag["genre"], first, tag.get("field", "genre"))
    return plans


@dataclass
class Summary:
    """The counts that end a run on stderr; constant memory (one counter per genre and tag action)."""

    started: float = field(default_factory=time.monotonic)
    files: int = 0
    failed: int = 0
    unanalysed: int = 0
    """Files ``tag`` kept without analysing them: they already had a genre."""
    skipped: int = 0
    genres: Counter[str] = field(default_factory=Counter)
    tags: Counter[str] = field(default_factory=Counter)

    def count(self, rows: Iterable[Row]) -> Iterator[Row]:
        """Pass ``rows`` through, counting them."""
        for row in rows:
            self.files += 1
            if row.ok and row.top:
                self.genres[row.top[0][0]] += 1
            elif row.ok:
                self.unanalysed += 1
            else:
                self.failed += 1
            if row.tag is not None:
                self.tags[row.tag.action] += 1
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


def _report(summary: Summary, args: argparse.Namespace) -> None:
    """Print the summary on stderr unless ``--quiet``."""
    if not args.quiet:
        for line in summary.lines(args.output):
            print(f"genrewiz: {line}", file=sys.stderr)


def _file_stat(path: str) -> tuple[int | None, float | None]:
    """A file's size and mtime, what ``--resume`` matches on besides the path; ``None`` for a missing file."""
    try:
        stat = os.stat(path)
    except OSError:
        return None, None
    return stat.st_size, stat.st_mtime


def _with_file_stat(rows: Iterable[Row]) -> Iterator[Row]:
    """Stamp each row with its file's size and mtime as the run leaves it (tagging changes both)."""
    for row in rows:
        size, mtime = _file_stat(row.path)
        yield replace(row, size=size, mtime=mtime)


def _unfinished(files: list[Path], output: Path, tagging: bool) -> tuple[list[Path], int]:
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
    todo = [path for path in files if hash((str(path), *_file_stat(str(path)))) not in done]
    return todo, len(files) - len(todo)


def _run_ray(args: argparse.Namespace) -> int:
    """``predict --ray``: the same rows, computed by Ray Data and written as files under ``--output``.

    Exit status 0 once every file has its row, error rows included (unlike the plain CLI's 1):
    a Ray job's status says whether the job ran, and the rows say which files failed.
    """
    try:
        from . import distributed
    except ImportError as err:
        print(f"genrewiz: --ray needs Ray Data ({err.name} is missing): pip install 'genrewiz[ray]'", file=sys.stderr)
        return EXIT_USAGE
    summary = Summary()
    try:
        counts = distributed.predict_to(
            args.paths,
            str(args.output),
            fmt=args.format,
            address=args.ray or None,
            model=args.model,
            top=args.top,
            max_duration=args.max_duration,
            actors=args.actors,
            quiet=args.quiet,
        )
    except (OSError, ValueError, RuntimeError) as err:
        print(f"genrewiz: {err}", file=sys.stderr)
        return EXIT_USAGE
    summary.files, summary.failed, summary.genres = counts.files, counts.failed, counts.genres
    if summary.failed and not args.quiet:
        print(f"genrewiz: {summary.failed} of {summary.files} files could not be analysed (rows with ok=false)", file=sys.stderr)
    _report(summary, args)
    # Every file has its row, error rows included: the job did its work, and `ray job submit`
    # must not mark it FAILED because a library holds a broken file.
    return EXIT_OK


def _open_output(path: Path | None, append: bool = False) -> TextIO:
    """Where the results go, opened before the model loads so that a bad path fails at once.

    File names that are not valid UTF-8 are written back as the bytes they were. ``append``
    adds to an existing file (``--resume``).
    """
    if path is None:
        if isinstance(sys.stdout, io.TextIOWrapper):
            sys.stdout.reconfigure(errors="surrogateescape")
        return sys.stdout
    return open(path, "a" if append else "w", encoding="utf-8", errors="surrogateescape")


def _raise_interrupted(signum: int, frame: object) -> None:
    """Turn the first SIGINT or SIGTERM into :class:`Interrupted`; later ones are ignored while the output is closed."""
    for sig in STOP_SIGNALS:
        signal.signal(sig, signal.SIG_IGN)
    raise Interrupted(signum)


def _discard_stdout() -> None:
    """Point standard output at /dev/null, so that the interpreter's final flush cannot fail again."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)
