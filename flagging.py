"""The app's "Is this answer wrong?" reports: one per analysis, a few per client, in files of bounded size.

A report is one CSV row (:data:`COLUMNS`): when (local time with its UTC offset), the file's
name, the model's top 3, the genre the user says is right, and which weights answered
(:func:`weights_id`). No audio is kept. :class:`Reports` checks and writes under one lock, so
that twenty concurrent clicks on one analysis give one row; a client (by address) may send
:data:`PER_CLIENT` reports per :data:`WINDOW` seconds; and ``reports.csv`` is renamed to
``reports.1.csv`` (and so on, :data:`KEEP` old files) before it passes :data:`MAX_BYTES`, so
reports take at most ``(KEEP + 1) * MAX_BYTES`` on disk whoever sends them.
"""

from __future__ import annotations

import csv
import datetime
import hashlib
import io
import os
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Sequence
from pathlib import Path

from genrewiz import Prediction
from genrewiz.hub import ModelSource

FLAGGING_DIR = Path(os.environ.get("GENREWIZ_FLAGGING_DIR") or Path(__file__).resolve().parent / ".gradio" / "flagged")
"""Where reports go: ``$GENREWIZ_FLAGGING_DIR``, else ``.gradio/flagged`` beside the app (wherever it was started from)."""
REPORTS_FILE = "reports.csv"
COLUMNS = ("time", "file", "answer", "right genre", "weights")
MAX_BYTES = 1024 * 1024
"""Size at which ``reports.csv`` is rotated (about 5,000 reports)."""
KEEP = 4
"""Rotated files kept (``reports.1.csv`` newest); older ones are deleted."""
PER_CLIENT = 20
"""Reports one client address may send per :data:`WINDOW` seconds."""
WINDOW = 3600.0
REMEMBERED = 10_000
"""Analyses remembered as reported: beyond that the oldest may be reported again (the rate limit still holds)."""
MAX_NAME = 200
"""Characters of a file name kept in a report."""

NO_ANALYSIS = "Analyse a song first, then tell us if the answer is wrong."
EXAMPLE = "The examples' answers are fixed: report the answers for songs you upload or record."
NO_ANSWER = "There is no answer for this file to report: wait for it, or upload another song."
CHOOSE = "Choose the genre you think is right."
ALREADY = "Already reported: one report per answer. Thanks!"
TOO_MANY = f"You have sent {PER_CLIENT} reports in the last hour: thanks! Please try again later."


def weights_id(source: ModelSource | None) -> str:
    """Which weights answered, precisely: where they came from, and the first 12 hex digits of the weights file's SHA-256."""
    if source is None:
        return "weights passed in by the caller"
    where = f"{source.kind}:{source.location}" + (f"@{source.revision}" if source.revision else "")
    for name in ("model.safetensors", "model.onnx"):
        path = source.directory / name
        if path.is_file():
            with open(path, "rb") as file:
                return f"{where} sha256:{hashlib.file_digest(file, 'sha256').hexdigest()[:12]}"
    return where


def _cell(text: str) -> str:
    """A user's text as a safe CSV cell: cut to :data:`MAX_NAME`, and never read as a spreadsheet formula."""
    text = text[:MAX_NAME]
    return "'" + text if text[:1] in ("=", "+", "-", "@", "\t", "\r") else text


class Reports:
    """The report log of one served app: ``reports.csv`` and its rotated files in ``folder``."""

    def __init__(
        self,
        folder: str | os.PathLike[str],
        labels: Sequence[str],
        weights: str,
        max_bytes: int = MAX_BYTES,
        keep: int = KEEP,
        per_client: int = PER_CLIENT,
        window: float = WINDOW,
    ) -> None:
        self.folder = Path(folder)
        self.labels = tuple(labels)
        self.weights = weights
        self.max_bytes, self.keep, self.per_client, self.window = max_bytes, keep, per_client, window
        self._lock = threading.Lock()
        self._reported: OrderedDict[str, None] = OrderedDict()
        self._sent: dict[str, deque[float]] = {}

    @property
    def path(self) -> Path:
        return self.folder / REPORTS_FILE

    def report(
        self, result: tuple[str, Prediction] | None, right: str | None, client: str | None, session: str | None
    ) -> str | None:
        """Save that ``result`` (file name, prediction) should have been ``right``: ``None``, or why not, for the user.

        ``session`` and the result's content name the analysis (one report each); ``client``
        is the address the rate limit counts.
        """
        if result is None:
            return NO_ANALYSIS
        if right not in self.labels:
            return CHOOSE
        name, prediction = result
        analysis = hashlib.sha256(
            f"{session}\0{name}\0".encode("utf-8", "surrogatepass") + prediction.probabilities.tobytes()
        ).hexdigest()
        with self._lock:
            if analysis in self._reported:
                return ALREADY
            now = time.monotonic()
            sent = self._sent.setdefault(client or "unknown", deque())
            while sent and now - sent[0] > self.window:
                sent.popleft()
            if len(sent) >= self.per_client:
                return TOO_MANY
            self._write(name, prediction, right)
            sent.append(now)
            self._reported[analysis] = None
            if len(self._reported) > REMEMBERED:
                self._reported.popitem(last=False)
            if len(self._sent) > REMEMBERED:
                self._sent = {c: times for c, times in self._sent.items() if times and now - times[-1] <= self.window}
        return None

    def _write(self, name: str, prediction: Prediction, right: str) -> None:
        """Append one row, rotating first if it would pass :attr:`max_bytes`; a new file gets the header."""
        buffer = io.StringIO()
        answer = ", ".join(f"{genre} {p:.4f}" for genre, p in prediction.top(3))
        when = datetime.datetime.now().astimezone().isoformat(timespec="seconds")
        csv.writer(buffer).writerow([when, _cell(name), answer, right, self.weights])
        row = buffer.getvalue().encode("utf-8", "replace")
        self.folder.mkdir(parents=True, exist_ok=True)
        size = self.path.stat().st_size if self.path.exists() else 0
        if size and size + len(row) > self.max_bytes:
            self._rotate()
            size = 0
        if not size:
            header = io.StringIO()
            csv.writer(header).writerow(COLUMNS)
            row = header.getvalue().encode("utf-8") + row
        with open(self.path, "ab") as file:
            file.write(row)
            file.flush()
            os.fsync(file.fileno())

    def _rotate(self) -> None:
        """``reports.csv`` -> ``reports.1.csv`` -> ... -> ``reports.<keep>.csv``; the oldest goes."""

        def rotated(n: int) -> Path:
            return self.folder / f"reports.{n}.csv"

        rotated(self.keep).unlink(missing_ok=True)
        for n in range(self.keep - 1, 0, -1):
            if rotated(n).exists():
                os.replace(rotated(n), rotated(n + 1))
        os.replace(self.path, rotated(1))
