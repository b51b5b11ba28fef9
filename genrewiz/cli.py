"""``genrewiz predict`` and ``genrewiz tag``: classify files or whole music folders from the command line.

This module is the command line only: options and their checks, signals, exit statuses, and
the wiring of the library's stages. :mod:`genrewiz.batch` decodes in worker processes, runs the
model and tags files; :mod:`genrewiz.output` writes the rows and the summary and reads a run's
own rows back (``--resume``, ``tag --restore``); ``predict --ray`` hands the work to Ray Data
(:mod:`genrewiz.distributed`, imported only then).

A file that cannot be read becomes an error row; the run goes on and the exit status is 1 when
any file failed. SIGINT and SIGTERM stop the run the same way: the workers are killed, the rows
so far stay written (a JSON array is closed), and the exit status is 128 + the signal. A
summary (files, failures, genres, files/s) ends the run on stderr.

A run that writes tags keeps an undo record (:class:`genrewiz.output.Journal`): its JSON Lines
``--output``, else a file of its own that the summary names; ``tag --restore`` reads it back.
An existing ``--output`` is never replaced without ``--force``.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import logging
import os
import re
import signal
import stat
import sys
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import TextIO

from . import __version__
from .audio import DEFAULT_MAX_DURATION, SUPPORTED_EXTENSIONS, find_audio_files, looks_like_audio
from .batch import already_tagged, in_order, predict_files, restore_rows, tag_rows, with_file_stat
from .checkpoint import MODEL_THREADS
from .output import (
    FORMATS,
    Journal,
    OutputError,
    Summary,
    TableLayout,
    open_undo_record,
    restore_plans,
    rows_problem,
    undo_folder,
    unfinished,
    write_rows,
)
from .predict import GenreClassifier
from .results import Row
from .verdict import CLOSE_MARGIN, UNSURE_BELOW

EXIT_OK, EXIT_SOME_FAILED, EXIT_USAGE = 0, 1, 2
EXIT_BROKEN_PIPE = 128 + signal.SIGPIPE
"""What a shell reports for a Unix tool whose reader went away (``genrewiz ... | head -1``)."""
RAY_FORMATS = ("parquet", "jsonl")
"""What ``predict --ray`` writes: a folder of files, one per block of results."""
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Interrupted(KeyboardInterrupt):
    """SIGINT or SIGTERM reached the CLI: stop decoding, keep what was written."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


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
        "confidence into a GenreWiz field. Only tags change, never the audio. Every run that writes tags keeps an "
        "undo record: its --format jsonl --output FILE, else a new file in $GENREWIZ_UNDO_DIR or "
        "$XDG_STATE_HOME/genrewiz/undo (~/.local/state/genrewiz/undo), named at the end of the run. "
        "To undo a run: genrewiz tag --restore RECORD.",
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
        help="undo: put back the genres a run replaced, from its undo record ROWS (its --format jsonl output or the "
        "record it named), where the files still hold GenreWiz's genre",
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
    command.add_argument(
        "--output", "-o", type=Path, help="write results here instead of standard output (a new file: see --resume, --force)"
    )
    command.add_argument("--force", action="store_true", help="replace an existing --output file")
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
    if args.output is not None and _same_file(args.output, files):
        args.command_parser.error(f"--output {args.output} is one of the audio files to analyse (or a link to one)")
    summary = Summary()
    try:
        if args.resume:
            files, summary.skipped = unfinished(files, args.output, tagging=args.command == "tag" and not args.dry_run)
        out = _open_output(args.output, append=args.resume)
    except OSError as err:
        print(f"genrewiz: cannot write to {args.output}: {err.strerror or err}", file=sys.stderr)
        return EXIT_USAGE
    if not files and not restoring:
        out.close()
        if not args.quiet:
            print(f"genrewiz: nothing to do: all {summary.skipped} files are already in {args.output}", file=sys.stderr)
        return EXIT_OK
    journal = None
    if args.command == "tag" and not args.dry_run and not restoring:
        try:
            journal = _open_journal(args, out)
        except OSError as err:
            if out is not sys.stdout:
                out.close()
            print(f"genrewiz: cannot keep an undo record in {undo_folder()}: {err.strerror or err} "
                  "(give --format jsonl --output FILE, which is one)", file=sys.stderr)
            return EXIT_USAGE
    if args.command == "tag" and not args.dry_run:
        _remove_stale_copies(files or [Path(path) for path in restore_plans(args.restore)], args.quiet)
    previous = {sig: signal.signal(sig, _raise_interrupted) for sig in STOP_SIGNALS}
    try:
        return _run_restore(args, out) if restoring else _run(args, files, out, summary, journal)
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
        if journal is not None and not journal.own_rows:
            _close_undo_record(journal, args.quiet)
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _open_journal(args: argparse.Namespace, out: TextIO) -> Journal:
    """The run's undo record: its JSON Lines output, else a new file in :func:`~genrewiz.output.undo_folder`."""
    if args.format == "jsonl" and args.output is not None:
        return Journal(out, args.output, own_rows=True)
    record, path = open_undo_record()
    return Journal(record, path, own_rows=False)


def _close_undo_record(journal: Journal, quiet: bool) -> None:
    """Close a record of its own; say where it is, or remove it when the run tagged nothing."""
    with contextlib.suppress(OSError):
        journal.out.close()
    if journal.tagged == 0:
        with contextlib.suppress(OSError):
            journal.path.unlink()
    elif not quiet:
        print(f"genrewiz: undo record: {journal.path} (genrewiz tag --restore {journal.path} undoes this run)", file=sys.stderr)


def _remove_stale_copies(files: Sequence[Path], quiet: bool) -> None:
    """Remove what killed runs left in the folders about to be tagged (see :func:`genrewiz.tags.remove_stale_copies`), and say so."""
    from .tags import remove_stale_copies

    removed = [copy for folder in dict.fromkeys(path.parent for path in files) for copy in remove_stale_copies(folder)]
    if removed and not quiet:
        shown = ", ".join(str(path) for path in removed[:3]) + (f" and {len(removed) - 3} more" if len(removed) > 3 else "")
        print(f"genrewiz: removed {len(removed)} temporary cop{'y' if len(removed) == 1 else 'ies'} an interrupted "
              f"tagging run left: {shown}", file=sys.stderr)


def _same_file(output: Path, files: Sequence[Path]) -> bool:
    """Whether ``output`` is one of ``files``, through any symbolic or hard link (a loop or a missing file is none)."""
    try:
        target = os.stat(output)
    except OSError:
        return False
    for path in files:
        with contextlib.suppress(OSError):
            if os.path.samestat(os.stat(path), target):
                return True
    return False


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
        if (problem := rows_problem(restore)) is not None:
            parser.error(f"--restore {restore}: not an undo record (GenreWiz --format jsonl rows): {problem}")
    elif not args.paths:
        parser.error("give at least one audio file or folder")
    missing = [path for path in args.paths if "://" not in path and not os.path.lexists(path)]
    if missing:
        parser.error("no such file or folder: " + ", ".join(os.path.abspath(path) for path in missing))
    args.format = args.format or ("parquet" if args.ray is not None else "table")
    if args.windows and args.format not in ("json", "jsonl"):
        parser.error("--windows needs --format json or jsonl")
    if args.output is not None and args.ray is None:
        _check_output(parser, args.output, args.resume, args.force)
    if args.ray is None:
        if args.format == "parquet":
            parser.error("--format parquet needs --ray")
        if args.actors is not None:
            parser.error("--actors needs --ray")
        if args.resume and (args.output is None or args.format != "jsonl"):
            parser.error("--resume needs --format jsonl and --output FILE")
        if args.resume and args.force:
            parser.error("--resume appends to --output and --force replaces it: give one")
        return
    if args.format not in RAY_FORMATS:
        parser.error("--ray writes --format parquet or jsonl")
    if args.windows:
        parser.error("--windows does not apply to --ray (its rows are the Parquet schema's)")
    if args.output is None:
        parser.error("--ray needs --output: a new folder or URI for the result files")
    if args.resume:
        parser.error("--resume does not apply to --ray (Ray retries failed tasks itself)")


def _check_output(parser: argparse.ArgumentParser, output: Path, resume: bool, force: bool) -> None:
    """Refuse an ``--output`` that would overwrite or append to a user's audio, to anything but our
    rows, or to an existing file (a run's undo record, maybe) without ``--resume`` or ``--force``.

    Links are followed first: a name that is a link to audio is audio.
    """
    real = Path(os.path.realpath(output))
    if output.suffix.lower() in SUPPORTED_EXTENSIONS or real.suffix.lower() in SUPPORTED_EXTENSIONS:
        shown = "" if real == output.absolute() else f" ({real})"
        parser.error(f"--output {output} names an audio file{shown}: results are never written into one")
    try:
        info = os.stat(output)
    except FileNotFoundError:
        return
    except OSError as err:
        parser.error(f"--output {output}: {err.strerror or err}")
    if not stat.S_ISREG(info.st_mode) or info.st_size == 0:
        return
    try:
        with open(output, "rb") as existing:
            audio = looks_like_audio(existing.read(64))
        problem = rows_problem(output) if resume else None
    except OSError as err:
        parser.error(f"--output {output}: {err.strerror or err}")
    if audio:
        parser.error(f"--output {output} holds audio: results are never written into it; it was left untouched")
    if problem is not None:
        parser.error(f"--resume --output {output}: not a GenreWiz --format jsonl file ({problem}); it was left untouched")
    if not resume and not force:
        parser.error(f"--output {output} exists (it may be a run's undo record): --resume appends to it, --force replaces it")


def _run(args: argparse.Namespace, files: list[Path], out: TextIO, summary: Summary, journal: Journal | None = None) -> int:
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
    kept = {} if not tagging or args.overwrite else already_tagged(files, args.own_fields)
    todo = [path for path in files if path not in kept]
    progress = not args.quiet and len(todo) > 1 and sys.stderr.isatty()
    # Tagging needs the second genre too: the "Not sure" rule compares the first two.
    analysed_top = min(max(top, 2), len(classifier.labels)) if tagging else top
    predictions = predict_files(classifier, todo, analysed_top, max(1, min(args.jobs, len(todo))), progress, windows=args.windows)
    rows: Iterable[Row] = predictions
    if tagging:
        tagged = tag_rows(
            rows,
            overwrite=args.overwrite,
            min_confidence=args.min_confidence,
            dry_run=args.dry_run,
            own_fields=args.own_fields,
            journal=None if journal is None else journal.pending,
        )
        rows = in_order(files, kept, tagged, top)
    rows = summary.count(with_file_stat(rows))
    if journal is not None:
        rows = journal.confirm(rows)
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


def _run_restore(args: argparse.Namespace, out: TextIO) -> int:
    """``tag --restore ROWS``: put back the genres a tagging run replaced, a row per file it had tagged.

    Ends with what was restored; a record with nothing to restore is an error (exit 1), said so.
    """
    plans = restore_plans(args.restore)
    if not plans:
        print(f"genrewiz: nothing to restore: {args.restore} records no file GenreWiz tagged", file=sys.stderr)
        return EXIT_SOME_FAILED
    rows = with_file_stat(restore_rows(plans, dry_run=args.dry_run))
    failures = write_rows(rows, out, args.format, 1, tags=True, layout=TableLayout.for_run(plans, [], 1))
    if not args.quiet:
        done = "would restore" if args.dry_run else "restored"
        failed = f"; {failures} could not be restored (see their rows)" if failures else ""
        print(f"genrewiz: {done} {len(plans) - failures} of {len(plans)} files{failed}", file=sys.stderr)
    return EXIT_SOME_FAILED if failures else EXIT_OK


def _report(summary: Summary, args: argparse.Namespace) -> None:
    """Print the summary on stderr unless ``--quiet``."""
    if not args.quiet:
        for line in summary.lines(args.output):
            print(f"genrewiz: {line}", file=sys.stderr)


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
        distributed.predict_to(
            args.paths,
            str(args.output),
            fmt=args.format,
            address=args.ray or None,
            model=args.model,
            top=args.top,
            max_duration=args.max_duration,
            actors=args.actors,
            quiet=args.quiet,
            summary=summary,
        )
    except (OSError, ValueError, RuntimeError) as err:
        print(f"genrewiz: {err}", file=sys.stderr)
        return EXIT_USAGE
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
