"""The batch pipeline behind ``genrewiz predict`` and ``genrewiz tag``: streams of result rows.

Files are decoded (the slow part) in worker processes while one model, loaded once in the main
process, classifies them; rows come out in the files' order, one at a time, so memory stays
flat however large the library. A file that cannot be read becomes an error row and the run
goes on. Workers die with the main process however it ends (Linux ``PR_SET_PDEATHSIG``), so
none is ever left behind. The tagging stage writes each analysed file's top genre into its tags
(:mod:`genrewiz.tags`, imported only when tagging).
"""

from __future__ import annotations

import contextlib
import ctypes
import multiprocessing
import os
import signal
import sys
from collections.abc import Callable, Generator, Iterable, Iterator, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import replace
from pathlib import Path

from threadpoolctl import threadpool_limits
from tqdm import tqdm

from .audio import AudioError, unreadable_reason
from .features import AudioSetFeatures, FeatureConfig
from .predict import Analysis, GenreClassifier, Prediction, analyse
from .results import Row, file_stat, windows_json

_PR_SET_PDEATHSIG = 1  # <linux/prctl.h>
_MANAGER_EXIT_S = 10.0
"""How long a stopped pool's manager thread may take to notice its killed workers (it takes milliseconds)."""
HELD_SIGNALS = (signal.SIGINT, signal.SIGTERM)
"""Stop signals held from a tagged copy's rename until its row is written: a stop never falls between them."""


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
    """Kill the pool's workers now instead of letting them finish their queued files, and wait for the pool to close.

    ``shutdown(wait=False)`` forgets the pool's workers and its manager thread, so a later
    ``shutdown(wait=True)`` no longer joins it; left running, it closes its wake-up pipe while the
    interpreter's exit handler writes to it (a "Bad file descriptor" traceback on a CLI whose
    reader went away).
    """
    # Python 3.14 has pool.terminate_workers(); before it the processes and the manager thread are
    # only reachable here, and only until shutdown() forgets them.
    manager = getattr(pool, "_executor_manager_thread", None)
    processes = list((getattr(pool, "_processes", None) or {}).values())
    pool.shutdown(wait=False, cancel_futures=True)
    for process in processes:
        process.kill()
    if manager is not None:
        manager.join(timeout=_MANAGER_EXIT_S)


def _analyse_or_error(
    path: Path, config: FeatureConfig, max_duration: float, ear: AudioSetFeatures | None = None
) -> Analysis | str:
    """Worker-side step: decode and compute the log-mel (and the AudioSet ear's), or return the error message."""
    if (reason := unreadable_reason(path)) is not None:
        return reason
    try:
        return analyse(path, config, max_duration=max_duration, ear=ear)
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
    BLAS thread: more would only fight over the same cores.
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
        return Row(str(path), prediction.top(top), duration=prediction.duration, windows=timeline, music=prediction.music)

    bar = tqdm(total=len(files), unit="file", disable=not progress, file=sys.stderr)
    if jobs <= 1:
        for path in files:
            yield row(path, _analyse_or_error(path, classifier.config, classifier.max_duration, classifier.audioset_config))
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
            pending.append((path, pool.submit(_analyse_or_error, path, classifier.config, classifier.max_duration,
                                              classifier.audioset_config)))
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


def tag_rows(
    rows: Iterable[Row],
    overwrite: bool = False,
    min_confidence: float | None = None,
    dry_run: bool = False,
    own_fields: bool = False,
    journal: Callable[[Row], None] | None = None,
) -> Iterator[Row]:
    """Write each analysed file's top genre into its tags (:func:`genrewiz.tags.tag_file`).

    A file that cannot be tagged becomes an error row that keeps its genres; the run goes on.
    Each file's row arrives after its decoding finished, so no worker reads a file being tagged.
    ``journal`` gets each file's pending row (the genre it had, the tagged copy's size and
    mtime) just before the copy replaces it; from then until the reader of these rows asks for
    the next one (it has written this row), SIGINT and SIGTERM are held, so that a stop can
    never leave a tagged file without its row.
    """
    from .tags import TagError, TagResult, tag_file

    for row in rows:
        held: list[Callable[[], None]] = []

        def pending(result: TagResult, copy: os.stat_result, row: Row = row) -> None:
            held.append(_hold_stops())
            journal(replace(row, tag=result, size=copy.st_size, mtime=copy.st_mtime))

        try:
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
                        music=row.music,
                        dry_run=dry_run,
                        own_fields_only=own_fields,
                        before_rename=None if journal is None else pending,
                    )
                    row = replace(row, tag=result)
                except TagError as err:
                    row = replace(row, error=str(err))
            yield row
        finally:
            for release in held:
                release()


def _hold_stops() -> Callable[[], None]:
    """Hold :data:`HELD_SIGNALS` (main thread only) until the returned ``release()``, which then acts on the first that came.

    The handlers are swapped rather than the signals blocked: a process-wide signal reaches
    whichever thread does not block it (the model's, the progress bar's), and Python runs its
    handler in the main thread anyway.
    """
    caught: list[int] = []
    previous = {sig: signal.signal(sig, lambda signum, frame: caught.append(signum)) for sig in HELD_SIGNALS}

    def release() -> None:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        if caught:
            handler = previous[signal.Signals(caught[0])]
            if callable(handler):
                handler(caught[0], None)
            elif handler == signal.SIG_DFL:
                os.kill(os.getpid(), caught[0])

    return release


def already_tagged(files: Sequence[Path], own_fields: bool) -> dict[Path, Row]:
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


def in_order(files: Sequence[Path], kept: dict[Path, Row], rows: Iterable[Row], top: int) -> Iterator[Row]:
    """The rows of every file in ``files``' order: ``kept`` ones where they belong, ``rows`` cut to ``top`` genres."""
    analysed = iter(rows)
    for path in files:
        if path in kept:
            yield kept[path]
        else:
            row = next(analysed)
            yield replace(row, top=row.top[:top])


def restore_rows(plans: dict[str, tuple[str, str | None, str]], dry_run: bool = False) -> Iterator[Row]:
    """``tag --restore``: put back the genres a tagging run replaced (:func:`genrewiz.output.restore_plans`), a row per file.

    A file that cannot be restored becomes an error row; the others go on.
    """
    from .tags import TagError, restore_file

    for path, (written, before, field_name) in plans.items():
        try:
            yield Row(path, [], tag=restore_file(path, written, before, field_name, dry_run=dry_run))
        except TagError as err:
            yield Row(path, [], error=str(err))


def with_file_stat(rows: Iterable[Row]) -> Iterator[Row]:
    """Stamp each row with its file's size and mtime as the run leaves it (tagging changes both)."""
    for row in rows:
        size, mtime = file_stat(row.path)
        yield replace(row, size=size, mtime=mtime)
