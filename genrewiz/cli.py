"""``genrewiz predict``: tag files or whole music folders from the command line.

Files are decoded (the slow part) in worker processes while one model, loaded once in the
main process, classifies them. A file that cannot be read becomes an error row; the run goes
on and the exit status is 1 when any file failed.

Rows are written and flushed as they come. SIGINT and SIGTERM stop the run the same way: the
workers are killed, the rows so far stay written (a JSON array is closed), and the exit status
is 128 + the signal. Workers also die with the main process however it ends (Linux
``PR_SET_PDEATHSIG``), so none is ever left behind.
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
import signal
import sys
import textwrap
from collections.abc import Callable, Generator, Iterable, Iterator, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from threadpoolctl import threadpool_limits
from tqdm import tqdm

from . import __version__
from .audio import DEFAULT_MAX_DURATION, SUPPORTED_EXTENSIONS, AudioError
from .features import FeatureConfig
from .predict import Analysis, GenreClassifier, Prediction, analyse

EXIT_OK, EXIT_SOME_FAILED, EXIT_USAGE = 0, 1, 2
EXIT_BROKEN_PIPE = 128 + signal.SIGPIPE
"""What a shell reports for a Unix tool whose reader went away (``genrewiz ... | head -1``)."""
FORMATS = ("table", "json", "jsonl", "csv")
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)
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

    @property
    def ok(self) -> bool:
        return self.error is None

    def to_json(self) -> dict:
        return {
            "path": self.path,
            "ok": self.ok,
            "duration_s": None if self.duration is None else round(self.duration, 2),
            "top": [{"label": label, "score": round(score, 4)} for label, score in self.top],
            "error": self.error,
        }


def find_audio_files(paths: Iterable[str | os.PathLike[str]]) -> list[Path]:
    """Expand folders recursively into their audio files (sorted); named files are kept as given.

    A named path that does not exist is kept too, so that it is reported as an error row.
    """
    found: list[Path] = []
    for path in map(Path, paths):
        if path.is_dir():
            found += sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in SUPPORTED_EXTENSIONS)
        else:
            found.append(path)
    return found


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
    try:
        return analyse(path, config, max_duration=max_duration)
    except AudioError as err:
        return str(err)


def predict_files(
    classifier: GenreClassifier, files: Sequence[Path], top: int, jobs: int, progress: bool = False
) -> Generator[Row, None, None]:
    """Yield a :class:`Row` per file, in order; decoding runs in ``jobs`` worker processes.

    At most ``2 * jobs`` decoded songs wait for the model at any time, so memory stays flat
    however large the library. The parallelism is across files, so every process keeps to one
    BLAS thread: more would only fight over the same cores (measured: 1.5x fewer files/s on 2).
    """
    with threadpool_limits(1):
        yield from _predict_files(classifier, files, top, jobs, progress)


def _predict_files(
    classifier: GenreClassifier, files: Sequence[Path], top: int, jobs: int, progress: bool
) -> Iterator[Row]:
    """:func:`predict_files` inside its thread limit."""

    def row(path: Path, result: Analysis | str) -> Row:
        if isinstance(result, str):
            return Row(str(path), [], error=result)
        try:
            prediction: Prediction = classifier.classify(result)
        except AudioError as err:
            return Row(str(path), [], error=str(err))
        return Row(str(path), prediction.top(top), duration=prediction.duration)

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


def write_rows(rows: Iterable[Row], out: TextIO, fmt: str, top: int) -> int:
    """Write rows as they arrive, each flushed at once, and return how many failed.

    Each row goes out in one write, so an interruption never leaves half of one. ``json`` is a
    single array (the layout of ``json.dump(indent=2)``) whose closing bracket is written even
    when the run is interrupted, so finished results are never lost; ``jsonl`` is one object
    per line, readable while the run goes on.

    Raises:
        OutputError: writing to ``out`` failed.
    """
    emit = _emitter(out)
    failures = written = 0
    if fmt == "csv":
        ranks = [f"{kind}_{i}" for i in range(1, top + 1) for kind in ("genre", "score")]
        emit(_csv_line(["path", "status", *ranks, "duration_s", "error"]))
    elif fmt == "json":
        emit("[")
    try:
        for row in rows:
            failures += not row.ok
            emit(_format_row(row, fmt, top, first=written == 0))
            written += 1
    finally:
        if fmt == "json":
            emit("\n]\n" if written else "]\n")
    return failures


def _emitter(out: TextIO) -> Callable[[str], None]:
    """``emit(text)``: write and flush ``text``, raising :class:`OutputError` when that fails."""

    def emit(text: str) -> None:
        try:
            out.write(text)
            out.flush()
        except OSError as err:
            raise OutputError(err) from err

    return emit


def _format_row(row: Row, fmt: str, top: int, first: bool) -> str:
    """One row as ``fmt`` writes it, separators and line end included."""
    if fmt == "json":
        return ("\n" if first else ",\n") + textwrap.indent(json.dumps(row.to_json(), indent=2), "  ")
    if fmt == "jsonl":
        return json.dumps(row.to_json()) + "\n"
    if fmt == "csv":
        cells = [cell for label, score in row.top for cell in (label, f"{score:.4f}")]
        cells += [""] * (2 * top - len(cells))
        duration = "" if row.duration is None else f"{row.duration:.2f}"
        return _csv_line([row.path, "ok" if row.ok else "error", *cells, duration, row.error or ""])
    verdict = "  ".join(f"{label} {score:.0%}" for label, score in row.top) if row.ok else f"ERROR: {_printable(row.error or '')}"
    return f"{_printable(row.path)}\t{verdict}\n"


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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="genrewiz", description="Music genre classification (GTZAN genres).")
    parser.add_argument("--version", action="version", version=f"genrewiz {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)
    predict = commands.add_parser("predict", help="classify audio files or folders (recursive)")
    predict.add_argument("paths", nargs="+", help="audio files and/or folders")
    predict.add_argument("--top", type=int, default=3, help="how many genres to report per file (default 3)")
    predict.add_argument(
        "--format", choices=FORMATS, default="table", help="output format (jsonl: one JSON object per line, as it goes)"
    )
    predict.add_argument("--output", "-o", type=Path, help="write results here instead of standard output")
    predict.add_argument("--model", help="Hub repo id or checkpoint folder (default: $GENREWIZ_MODEL or the GenreWiz repo)")
    predict.add_argument("--jobs", "-j", type=int, default=os.cpu_count() or 1, help="decoding worker processes")
    predict.add_argument(
        "--max-duration", type=float, default=DEFAULT_MAX_DURATION, help="seconds analysed per file (default 600)"
    )
    predict.add_argument("--quiet", "-q", action="store_true", help="no progress bar or log lines")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``genrewiz`` console script and ``python -m genrewiz``."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.top < 1:
        parser.error("--top must be at least 1")
    if args.jobs < 1:
        parser.error("--jobs must be at least 1")
    if args.max_duration <= 0:
        parser.error("--max-duration must be positive")
    logging.basicConfig(level=logging.WARNING if args.quiet else logging.INFO, format="%(message)s")
    files = find_audio_files(args.paths)
    if not files:
        print("genrewiz: no audio files found in " + ", ".join(args.paths), file=sys.stderr)
        return EXIT_USAGE
    try:
        out = _open_output(args.output)
    except OSError as err:
        print(f"genrewiz: cannot write to {args.output}: {err.strerror or err}", file=sys.stderr)
        return EXIT_USAGE
    previous = {sig: signal.signal(sig, _raise_interrupted) for sig in STOP_SIGNALS}
    try:
        return _run(args, files, out)
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
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        if out is not sys.stdout:
            with contextlib.suppress(OSError):
                out.close()


def _run(args: argparse.Namespace, files: list[Path], out: TextIO) -> int:
    """Load the model, classify ``files`` into ``out`` and return the exit status."""
    try:
        classifier = GenreClassifier.from_pretrained(args.model, max_duration=args.max_duration)
    except (OSError, ValueError, RuntimeError) as err:
        print(f"genrewiz: cannot load model: {err}", file=sys.stderr)
        return EXIT_USAGE
    except Interrupted:
        write_rows((), out, args.format, args.top)  # even a run stopped this early leaves well-formed output
        raise
    top = min(args.top, len(classifier.labels))
    rows = predict_files(classifier, files, top, min(args.jobs, len(files)), progress=not args.quiet and len(files) > 1)
    try:
        failures = write_rows(rows, out, args.format, top)
    finally:
        rows.close()  # stops the decoding workers when writing ended early
    if failures:
        print(f"genrewiz: {failures} of {len(files)} files could not be analysed", file=sys.stderr)
    return EXIT_SOME_FAILED if failures else EXIT_OK


def _open_output(path: Path | None) -> TextIO:
    """Where the results go, opened before the model loads so that a bad path fails at once.

    File names that are not valid UTF-8 are written back as the bytes they were.
    """
    if path is None:
        if isinstance(sys.stdout, io.TextIOWrapper):
            sys.stdout.reconfigure(errors="surrogateescape")
        return sys.stdout
    return open(path, "w", encoding="utf-8", errors="surrogateescape")


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
