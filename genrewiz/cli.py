"""``genrewiz predict``: tag files or whole music folders from the command line.

Files are decoded (the slow part) in worker processes while one model, loaded once in the
main process, classifies them. A file that cannot be read becomes an error row; the run goes
on and the exit status is 1 when any file failed.
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import multiprocessing
import os
import sys
from collections.abc import Iterable, Iterator, Sequence
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

EXIT_OK, EXIT_SOME_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130


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


def _analyse_or_error(path: Path, config: FeatureConfig, max_duration: float) -> Analysis | str:
    """Worker-side step: decode and compute the log-mel, or return the error message."""
    try:
        return analyse(path, config, max_duration=max_duration)
    except AudioError as err:
        return str(err)


def predict_files(
    classifier: GenreClassifier, files: Sequence[Path], top: int, jobs: int, progress: bool = False
) -> Iterator[Row]:
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
        prediction: Prediction = classifier.classify(result)
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
    with ProcessPoolExecutor(max_workers=jobs, mp_context=multiprocessing.get_context("fork")) as pool:
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
    bar.close()


def write_rows(rows: Iterable[Row], out: TextIO, fmt: str, top: int) -> int:
    """Write rows as they arrive and return how many failed.

    Table and CSV lines are flushed one by one; JSON is a single array, written even when the
    run is interrupted, so finished results are never lost.
    """
    failures = 0
    collected: list[dict] = []
    writer = csv.writer(out, lineterminator="\n")
    if fmt == "csv":
        ranks = [f"{kind}_{i}" for i in range(1, top + 1) for kind in ("genre", "score")]
        writer.writerow(["path", "status", *ranks, "duration_s", "error"])
    try:
        for row in rows:
            failures += not row.ok
            if fmt == "json":
                collected.append(row.to_json())
            elif fmt == "csv":
                cells = [cell for label, score in row.top for cell in (label, f"{score:.4f}")]
                cells += [""] * (2 * top - len(cells))
                duration = "" if row.duration is None else f"{row.duration:.2f}"
                writer.writerow([row.path, "ok" if row.ok else "error", *cells, duration, row.error or ""])
            else:
                verdict = "  ".join(f"{label} {score:.0%}" for label, score in row.top) if row.ok else f"ERROR: {row.error}"
                out.write(f"{row.path}\t{verdict}\n")
            out.flush()
    finally:
        if fmt == "json":
            json.dump(collected, out, indent=2)
            out.write("\n")
    return failures


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="genrewiz", description="Music genre classification (GTZAN genres).")
    parser.add_argument("--version", action="version", version=f"genrewiz {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)
    predict = commands.add_parser("predict", help="classify audio files or folders (recursive)")
    predict.add_argument("paths", nargs="+", help="audio files and/or folders")
    predict.add_argument("--top", type=int, default=3, help="how many genres to report per file (default 3)")
    predict.add_argument("--format", choices=("table", "json", "csv"), default="table", help="output format")
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
        classifier = GenreClassifier.from_pretrained(args.model, max_duration=args.max_duration)
    except (OSError, ValueError, RuntimeError) as err:
        print(f"genrewiz: cannot load model: {err}", file=sys.stderr)
        return EXIT_USAGE
    top = min(args.top, len(classifier.labels))
    rows = predict_files(classifier, files, top, min(args.jobs, len(files)), progress=not args.quiet and len(files) > 1)
    out: TextIO = open(args.output, "w", encoding="utf-8") if args.output else sys.stdout
    try:
        failures = write_rows(rows, out, args.format, top)
    except KeyboardInterrupt:
        print("genrewiz: interrupted; the results so far were written", file=sys.stderr)
        return EXIT_INTERRUPTED
    finally:
        if args.output:
            out.close()
    if failures:
        print(f"genrewiz: {failures} of {len(files)} files could not be analysed", file=sys.stderr)
    return EXIT_SOME_FAILED if failures else EXIT_OK
