"""GenreWiz web app: upload or record a song, see what the model saw, get its top-5 genres.

A thin Gradio layer over :mod:`genrewiz`; every step of the pipeline (decoding, log-mel,
windows, model) is the library's. Run it with ``python app.py`` (this is also what a Hugging
Face Space runs); ``GENREWIZ_MODEL`` picks the weights (Hub repo id or local folder), and
``GRADIO_SERVER_NAME`` / ``GRADIO_SERVER_PORT`` where it listens.

From Python, ``/predict`` returns ``(label, spectrogram)`` and ``/analyse`` everything the page
shows as JSON (all genres, the verdict, durations, the per-window timeline, the model)::

    from gradio_client import Client, handle_file
    label, spectrogram_png = Client(url).predict(handle_file("song.mp3"), api_name="/predict")
    analysis = Client(url).predict(handle_file("song.mp3"), api_name="/analyse")

Bad input raises ``gr.Error`` on both endpoints (``AppError`` in ``gradio_client``); the page
itself shows the message where the result would be, until the next input.

Tests and benchmarks build the app around a classifier of their choice with
:func:`build_demo` and start it with :func:`launch`, so they serve exactly what users get.
"""

from __future__ import annotations

import base64
import contextlib
import csv
import dataclasses
import html
import io
import json
import logging
import os
import re
import signal
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import gradio as gr
import numpy as np
from gradio.components.plot import PlotData
from gradio.utils import get_upload_folder
from PIL import Image
from starlette.middleware import Middleware

import flagging
import serving

from genrewiz import AudioError, FeatureConfig, GenreClassifier, Prediction
from genrewiz.audio import SUPPORTED_EXTENSIONS
from genrewiz.checkpoint import MODEL_THREADS
from genrewiz.engine import Progress
from genrewiz.features import to_db
from genrewiz.hub import ModelSource
from genrewiz.plots import spectrogram_pixels, timeline_pixels
from genrewiz.results import top_json, windows_json
from genrewiz import verdict as verdict_rule
from genrewiz.verdict import CLOSE_MARGIN, UNSURE_BELOW, decimal, percent, percents

logger = logging.getLogger("genrewiz.app")  # named: run as `python app.py`, __name__ would be "__main__"

EXAMPLES_DIR = Path(__file__).resolve().with_name("examples")
EXAMPLE_EXTENSIONS = (".ogg", ".mp3", ".wav", ".flac")
TOP_K = 5
MAX_FILE_SIZE = 120 * 1024 * 1024
"""Upload limit in bytes: a 10-minute CD-quality WAV (the most ``genrewiz`` analyses) is 106 MB."""
CONCURRENCY_LIMIT = 4
"""Predictions in progress at once; one client holds at most :data:`serving.PER_CLIENT_RUNNING`
of them, and never the last free one (:func:`serving.next_job`). Their model runs take turns, a few patches each, round
robin between clients (:class:`serving.ClientTurns`), so the cores (a free Space has two) are
shared as before, but a short song starting beside long ones is done in its few turns."""
QUEUE_SIZE = 64
"""Requests waiting beyond that are refused with 'Queue is full' instead of piling up; one client
may hold :data:`serving.PER_CLIENT_QUEUED` of them."""
DELETE_CACHE = (60, 600)
"""Every minute, uploads and spectrograms older than 10 minutes are deleted: a file lasts at
most 11 minutes (long enough to play an upload back in the page), and all of them go when the
server stops."""
SPECTROGRAM_FOLDER = "genrewiz-spectrograms"
"""Folder for the spectrogram PNGs inside Gradio's cache, which serves them in place and deletes
them on the :data:`DELETE_CACHE` schedule and at shutdown like its own files."""

BATCH_LIMIT = 20
"""Files one "several files" request may hold: more would hold a model slot for minutes."""
BATCH_WIDTHS = ["14%", "17%", "27%", "9%", "9%", "9%", "9%", "6%"]
"""The table's columns as shares of its width, which wraps long text (an error) rather than
widening its column past the screen's edge."""
RESULTS_FOLDER = "genrewiz-results"
"""Folder for the CSV downloads inside Gradio's cache, swept like :data:`SPECTROGRAM_FOLDER`."""
APP_CSS = """
#verdict h3 { margin: 0.2em 0; }
#spectrogram .image-container, #timeline [data-testid="matplotlib"] { padding-top: 30px; }
#spectrogram img, #timeline img { width: 100%; height: auto; max-width: 100%; }
#genres .genre-bars { display: flex; flex-direction: column; gap: 6px; padding: 4px 0; }
#genres .genre-bar { display: flex; align-items: center; gap: 10px; }
#genres .genre { flex: 0 0 5.5em; }
#genres .bar { flex: 1; height: 0.9em; border-radius: 4px; overflow: hidden; background: var(--background-fill-secondary); }
#genres .bar > span { display: block; height: 100%; background: var(--color-accent); }
#genres .share { flex: 0 0 5.5em; text-align: right; font-variant-numeric: tabular-nums; }
#genres .not-music { opacity: 0.45; filter: grayscale(1); }
#batch-table td, #batch-table th { overflow-wrap: anywhere; }
#batch-table .cell-wrap { white-space: normal; }
@media (max-width: 640px) {
  #batch-table th:nth-child(n+4), #batch-table td:nth-child(n+4),
  #batch-table [role="gridcell"]:not([data-col="0"], [data-col="1"], [data-col="2"]) { display: none; }
  #batch-table th, #batch-table td, #batch-table [role="gridcell"] {
    width: 33% !important; min-width: 0 !important; max-width: none !important; flex: 0 0 33% !important;
  }
}
"""
"""Both figures at the width of their column, below their panel's label rather than under it, so
that equal margins in them put the time axes one under the other. On a phone the same rule fits
them to the screen: title, axes, colour bar and legend all in view, no strip to scroll. The genre
bars (:func:`genre_bars`); the batch table, whose long errors wrap instead of running off, and
which on a phone shows the file, its verdict and its error (the CSV has the rest)."""

MIN_RECORDING_SECONDS = 10
RECOMMENDED_RECORDING_SECONDS = 30
"""What the page asks a recording to last: under 10 s a phone recording is mostly guesswork, and
30 s is one whole window of the model."""
APP_HEAD = (
    "<script>\n"
    + (Path(__file__).resolve().with_name("app_head.js").read_text(encoding="utf-8"))
    .replace("__EXTENSIONS__", json.dumps(sorted(SUPPORTED_EXTENSIONS)))
    + "</script>"
)
"""The page's own script (``app_head.js``, in ``launch(head=...)``): the microphone tuned for
music, every container the server decodes accepted by the song's input, files over the upload
limit refused with a message that stays, and the verdict scrolled into view after an example."""

_MB = 1024 * 1024
_ERROR_TITLE = "Can't analyse this audio"
_ASCII_PUNCTUATION = re.compile(r"([!-/:-@\[-`{-~])")


def list_examples(folder: str | os.PathLike[str] = EXAMPLES_DIR) -> list[str]:
    """Audio files in ``folder`` (ogg, mp3, wav, flac), sorted, as absolute paths."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    return sorted(str(p.resolve()) for p in folder.iterdir() if p.is_file() and p.suffix.lower() in EXAMPLE_EXTENSIONS)


def classify_upload(
    classifier: GenreClassifier,
    path: str | os.PathLike[str] | None,
    max_file_size: int | None = None,
    progress: Progress | None = None,
) -> Prediction:
    """Classify one uploaded or recorded file; every problem with the input is an ``AudioError``.

    ``max_file_size`` (bytes) is checked here too, because the upload limit of ``launch()``
    does not cover every path a file can reach the handler by (cached examples, files already
    on the server). ``progress`` gets the share of the model's work done (a long song's bar).
    """
    if not path:
        raise AudioError("No audio yet: upload a file or record one with the microphone.")
    if max_file_size is not None and os.path.isfile(path) and (size := os.path.getsize(path)) > max_file_size:
        raise AudioError(too_large(Path(path).name, size, max_file_size))
    try:
        return classifier.predict(path, progress=progress)
    except AudioError as err:
        logger.info("Rejected input: %s", err)
        raise


def too_large(name: str, size: int, max_file_size: int) -> str:
    """What a file over the upload limit is told, by the server or, before uploading, by the page."""
    return f"{name}: the file is too large ({size / _MB:.1f} MB; the limit is {max_file_size / _MB:.0f} MB)."


def input_hint(max_file_size: int | None, max_duration: float) -> str:
    """The line under the song's input: what can be uploaded, how much of it is heard, how long to record."""
    limit = f"up to {max_file_size / _MB:.0f} MB" if max_file_size else "of any size"
    return (
        f"Audio or video files {limit}; the first {_minutes(max_duration)} of a longer recording are analysed. "
        f"Recording? Let the music play for at least {MIN_RECORDING_SECONDS} s ({RECOMMENDED_RECORDING_SECONDS} s is better) "
        "before you press Stop."
    )


def refused_files(payload: str, max_file_size: int | None) -> tuple[str, list[tuple[str, str]]]:
    """Which input (``song`` or ``batch``) the page kept files back from, and each file's name and error.

    ``payload`` is the JSON the page's script (:data:`APP_HEAD`) writes for each choice of files:
    ``{"target", "files": [{"name", "size"}]}``; today only files over the upload limit are kept back.
    """
    try:
        refused = json.loads(payload)
        files = [(str(f["name"]), int(f["size"])) for f in refused["files"]]
        return str(refused["target"]), [(name, too_large(name, size, max_file_size or MAX_FILE_SIZE)) for name, size in files]
    except (ValueError, KeyError, TypeError, AttributeError):
        return "", []


def classify_file(
    classifier: GenreClassifier, path: str | os.PathLike[str] | None, max_file_size: int | None = None
) -> Prediction:
    """:func:`classify_upload` for the API: a bad input is a ``gr.Error`` (``AppError`` in ``gradio_client``)."""
    try:
        return classify_upload(classifier, path, max_file_size)
    except AudioError as err:
        raise api_error(err) from err


def api_error(err: AudioError) -> gr.Error:
    """The ``gr.Error`` an API client gets for a bad input.

    The file name in a message is the user's: its ``<`` and ``>`` are escaped, since Gradio
    shows messages as (sanitised) HTML.
    """
    return gr.Error(escape_html_tags(str(err)), title=_ERROR_TITLE, print_exception=False)


def escape_html_tags(text: str) -> str:
    """``text`` with ``<`` and ``>`` as entities, so that it cannot open an HTML tag.

    ``&`` is kept: an entity in a file name renders as a character, harmlessly, while API
    clients read the same message and should see "Simon & Garfunkel", not "&amp;".
    """
    return text.replace("<", "&lt;").replace(">", "&gt;")


def escape_markdown(text: str) -> str:
    """``text`` shown literally in Markdown: no link, emphasis, heading, HTML, entity or math.

    Every ASCII punctuation character is backslash-escaped (CommonMark allows it for all of
    them) and control characters become spaces, so ``[x](javascript:alert(13)).wav`` stays a
    file name.
    """
    printable = "".join(c if c.isprintable() else " " for c in text)
    return _ASCII_PUNCTUATION.sub(r"\\\1", printable)


def _minutes(seconds: float) -> str:
    """``75.3`` -> ``1:15``."""
    minutes, secs = divmod(round(seconds), 60)
    return f"{minutes}:{secs:02d}"


def analysed_span(prediction: Prediction) -> str:
    """What part of the file the model heard, e.g. ``30.0 s analysed`` or ``first 10:00 of 45:12 analysed``."""
    if prediction.truncated:
        return f"first {_minutes(prediction.duration)} of {_minutes(prediction.source_duration)} analysed"
    return f"{prediction.duration:.1f} s analysed"


def write_png(pixels: np.ndarray, folder: Path, max_age: float = DELETE_CACHE[1]) -> str:
    """Save ``pixels`` as a PNG file of its own in ``folder`` (see :func:`new_cache_file`)."""
    fd, path = new_cache_file(folder, "spectrogram-", ".png", max_age)
    with os.fdopen(fd, "wb") as file:
        Image.fromarray(pixels).save(file, format="PNG")
    return path


def new_cache_file(folder: Path, prefix: str, suffix: str, max_age: float = DELETE_CACHE[1]) -> tuple[int, str]:
    """A new file of its own in ``folder`` (descriptor, path); ``prefix*suffix`` files older than ``max_age`` s go.

    Gradio writes a returned array to a content-hashed cache file in place, so two requests with
    the same spectrogram rewrite one file while it is being downloaded (truncated downloads at
    20 concurrent requests); a file of its own is never rewritten. The age sweep removes what a
    server that was killed, and so never cleaned up, left behind.
    """
    folder.mkdir(parents=True, exist_ok=True)
    cutoff = time.time() - max_age
    for old in folder.glob(f"{prefix}*{suffix}"):
        try:
            if old.stat().st_mtime < cutoff:
                old.unlink()
        except FileNotFoundError:
            pass
    return tempfile.mkstemp(prefix=prefix, suffix=suffix, dir=folder)


BATCH_COLUMNS = ("file", "verdict", "error", "genre", "confidence", "second", "second_confidence", "duration_s")
"""The "several files" table and its CSV download, one row per file; the error beside the file's
name, where a phone's screen still shows it. Confidences are :func:`genrewiz.verdict.decimal` text."""


def batch_rows(classifier: GenreClassifier, paths: Sequence[str], max_file_size: int | None = None) -> list[list[Any]]:
    """One :data:`BATCH_COLUMNS` row per file, in order; a file that cannot be analysed gets its error, the rest go on."""
    rows: list[list[Any]] = []
    for path in paths:
        name = Path(path).name
        try:
            prediction = classify_upload(classifier, path, max_file_size)
        except AudioError as err:
            rows.append([name, "", str(err), "", "", "", "", ""])
            continue
        (first, p1), (second, p2) = (prediction.top(2) + [("", 0.0)])[:2]
        rows.append([name, verdict_text(prediction), "", first, decimal(p1), second, decimal(p2), f"{prediction.duration:.2f}"])
    return rows


def write_csv(rows: Sequence[Sequence[Any]], folder: Path, max_age: float = DELETE_CACHE[1]) -> str:
    """``rows`` under :data:`BATCH_COLUMNS` as a CSV file for download, named for what it holds and when.

    The browser saves a download under the file's own name, so each one gets a folder of its own
    in ``folder`` (``genrewiz-genres-20261203-142501.csv``, not a random name); folders older
    than ``max_age`` s go, as :func:`new_cache_file`'s files do.
    """
    folder.mkdir(parents=True, exist_ok=True)
    cutoff = time.time() - max_age
    for old in folder.glob("csv-*"):
        with contextlib.suppress(FileNotFoundError, NotADirectoryError):
            if old.stat().st_mtime < cutoff:
                for file in old.iterdir():
                    file.unlink()
                old.rmdir()
    path = Path(tempfile.mkdtemp(prefix="csv-", dir=folder)) / time.strftime("genrewiz-genres-%Y%m%d-%H%M%S.csv")
    with open(path, "w", encoding="utf-8", newline="") as file:
        writer = csv.writer(file)
        writer.writerow(BATCH_COLUMNS)
        writer.writerows(rows)
    return str(path)


def spectrogram_image(mel: np.ndarray, config: FeatureConfig, title: str) -> np.ndarray:
    """The log-mel spectrogram the model saw as ``(h, w, 3)`` pixels: time (s) by mel frequency (Hz), dB colour bar.

    Drawn as pixels (:mod:`genrewiz.plots`), not through a matplotlib Figure, whose layout and rendering cost a request far more.
    """
    return spectrogram_pixels(to_db(mel, config), config, title)


def has_timeline(prediction: Prediction, config: FeatureConfig) -> bool:
    """Whether the windows cover parts of the song far enough apart to be worth a timeline.

    A clip a little longer than one window gets a second window only seconds after the first;
    a timeline starts to mean something once the last window begins half a window in.
    """
    return bool(len(prediction.window_starts) > 1 and prediction.window_starts[-1] >= config.window_seconds / 2)


def timeline_figure(prediction: Prediction, config: FeatureConfig, k: int = TOP_K) -> PlotData:
    """The song's top-``k`` genres, window by window: probability against each window's centre time.

    A PNG drawn by :func:`genrewiz.plots.timeline_pixels`, handed to ``gr.Plot`` as the
    base64 image it would have made of a matplotlib Figure, without building or saving one.
    """
    centres = prediction.window_starts + config.window_seconds / 2
    lines = {genre: prediction.window_probabilities[:, prediction.labels.index(genre)] for genre, _ in prediction.top(k)}
    xlabel = f"time (s), at the centre of each {config.window_seconds:.1f} s window"
    buffer = io.BytesIO()
    Image.fromarray(timeline_pixels(centres, lines, prediction.duration, xlabel)).save(buffer, format="PNG")
    return PlotData(type="matplotlib", plot="data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii"))


def details_markdown(name: str, prediction: Prediction, config: FeatureConfig) -> str:
    """A few lines on what was analysed and how, shown under the results; ``name`` is shown literally.

    They say nothing about the genre: that is the verdict's, so the two can never disagree.
    """
    windows = len(prediction.window_starts)
    lines = [
        f"**{escape_markdown(name)}**: {analysed_span(prediction)} in {windows} window{'s' if windows != 1 else ''} "
        f"of {config.window_seconds:.1f} s."
    ]
    if prediction.truncated:
        lines.append(f"Only the first {_minutes(prediction.duration)} of long files is analysed.")
    if prediction.padded:
        lines.append(
            f"Shorter than one {config.window_seconds:.1f} s window, so the clip was looped to fill it: "
            "expect less certain results than for a whole song."
        )
    return "\n\n".join(lines)


def is_unsure(prediction: Prediction) -> bool:
    """Whether the answer is a doubt: top genre under :data:`UNSURE_BELOW`, or within :data:`CLOSE_MARGIN` of the second."""
    return verdict_rule.is_unsure(prediction.top(2))


def verdict_text(prediction: Prediction) -> str:
    """The answer in words (:func:`genrewiz.verdict.song_verdict`): ``Most likely jazz``, ``Not sure: jazz or blues?``,
    ``This doesn't sound like music``, ``Short clip (3 s): most likely jazz``, ..."""
    return verdict_rule.song_verdict(prediction.top(2), prediction.music, prediction.duration)


def verdict_markdown(prediction: Prediction) -> str:
    """The verdict shown above the genre bars, with the probabilities behind it and, for a doubt, which rule made it one.

    The figures are :func:`genrewiz.verdict.percents`, as the bars show them, so that no rounding contradicts the words.
    """
    top = prediction.top(2) + [("", 0.0)] * (2 - len(prediction.top(2)))
    (first, _), (second, _) = top
    shown = percents(top)
    heading = escape_markdown(verdict_text(prediction))
    if not verdict_rule.is_music(prediction.music):
        return (f"### {heading}\nIt sounds like music with a probability of {percent(prediction.music)}, so it gets no "
                "genre; the genres below are only what it comes closest to.")
    if not is_unsure(prediction):
        return f"### {heading}\n{shown[0]}, ahead of {escape_markdown(second)} at {shown[1]}."
    reason = verdict_rule.doubt_reason(top)
    if verdict_rule.is_leaning(top):
        return f"### {heading}\n{shown[0]}, ahead of {escape_markdown(second)} at {shown[1]}, but {reason}."
    return f"### {heading}\n{escape_markdown(first)} {shown[0]}, {escape_markdown(second)} {shown[1]}: {reason}."


def genre_bars(top: Sequence[tuple[str, float]], music: bool = True) -> str:
    """The top genres as bars (HTML), each with its probability as :func:`genrewiz.verdict.percents` writes it.

    Drawn here rather than by ``gr.Label``, whose figures round on their own (``100%`` beside the
    verdict's "over 99%", ``50%`` beside "under 50%"). For an input that is not ``music`` they
    stay visible, greyed: what it comes closest to, not its genre.
    """
    rows = []
    for (genre, p), text in zip(top, percents(top)):
        name = html.escape(genre)
        rows.append(
            f'<div class="genre-bar" role="img" aria-label="{name} {text}"><span class="genre">{name}</span>'
            f'<span class="bar"><span style="width: {max(0.0, min(p, 1.0)) * 100:.1f}%"></span></span>'
            f'<span class="share">{text}</span></div>'
        )
    return f'<div class="genre-bars{"" if music else " not-music"}">' + "".join(rows) + "</div>"


def error_markdown(message: str) -> str:
    """An error where the result would be; ``message`` (it holds the user's file name) is shown literally."""
    return f"### {_ERROR_TITLE}\n{escape_markdown(message)}"


def cnn_branch(source: ModelSource | None) -> str | None:
    """The checkpoint's pretrained ears as its ``config.json`` names them: ``musicnn``, ``musicnn+mn04`` or ``scratch``."""
    path = source.directory / "config.json" if source is not None else None
    if path is None or not path.is_file():
        return None
    config = json.loads(path.read_text(encoding="utf-8"))
    ear = config.get("audioset_branch")
    return config.get("cnn_branch", "scratch") + (f"+{ear}" if ear else "")


EXTRA_EVALUATIONS = (
    ("songs", "real songs by artists it never heard"),
    ("field", "real recordings from outside GTZAN"),
    ("recorded", "recordings of those clips through simulated phone, laptop and call microphones"),
)
"""Optional ``metrics.json`` entries, each ``{"accuracy": ..., "n_clips": ...}``, that the trust
sentence adds after the GTZAN figure, in this order, with what their clips are."""


def trust_sentence(metrics: dict[str, Any] | None) -> str:
    """How often the model is right, in one plain sentence, from its ``metrics.json``; the page's and ``/analyse``'s.

    The main figure is an artist-filtered evaluation (``split`` ``filtered/...``, as
    ``train/evaluate.py`` writes it: clips by artists never heard in training) or a k-fold one
    (``split`` ``kfold``, said to be optimistic); each :data:`EXTRA_EVALUATIONS` entry present
    adds its own figure. Weights with none of these get a sentence that says so.
    """
    metrics = metrics or {}
    parts = []
    split = str(metrics.get("split", ""))
    if _measured(metrics) and split.startswith("filtered"):
        parts.append(f"On {metrics['n_clips']} GTZAN clips by artists it never heard, it named the right genre {percent(metrics['accuracy'])} of the time")
    elif _measured(metrics) and split == "kfold":
        parts.append(
            f"In a cross-validation on {metrics['n_clips']} GTZAN clips it named the right genre {percent(metrics['accuracy'])} "
            "of the time (optimistic: clips by one artist can be on both sides)"
        )
    for key, clips in EXTRA_EVALUATIONS:
        entry = metrics.get(key)
        if isinstance(entry, dict) and _measured(entry):
            figure, n = percent(entry["accuracy"]), entry["n_clips"]
            parts.append(f"on {n} {clips}, {figure}" if parts else f"On {n} {clips}, it named the right genre {figure} of the time")
    if not parts:
        return "No measured accuracy ships with these weights: take its answers as a guess."
    return "; ".join(parts) + "."


def _measured(entry: dict[str, Any]) -> bool:
    """Whether an evaluation entry holds a usable ``accuracy`` (0-1) and ``n_clips``."""
    accuracy, clips = entry.get("accuracy"), entry.get("n_clips")
    return isinstance(accuracy, (int, float)) and 0.0 <= accuracy <= 1.0 and isinstance(clips, int) and clips > 0


def model_summary(branch: str | None) -> str:
    """What the model is, in one sentence, from its CNN branch and second ear."""
    if branch == "musicnn+mn04":
        return ("GenreWiz is a neural network with two pretrained ears, musicnn (a million songs) and mn04 (AudioSet, "
                "two million YouTube clips), and genre layers trained on GTZAN clips and real songs; it also tells "
                "when its input is not music.")
    if branch == "musicnn":
        return "GenreWiz is a neural network whose CNN branch is musicnn, pretrained on a million songs, with genre layers trained on GTZAN clips."
    if branch == "scratch":
        return "GenreWiz is a small neural network trained from scratch on GTZAN clips."
    return "GenreWiz is a neural network trained on GTZAN clips."


def weights_text(source: ModelSource | None) -> str:
    """Which weights answer, for users: never why others could not be used (that is the log's)."""
    if source is None:
        return "weights passed in by the caller"
    if source.kind == "bundled":
        return "the weights bundled with GenreWiz (genrewiz/weights)"
    return source.describe()


def weights_line(source: ModelSource | None) -> str:
    """Which weights are loaded, linked to the Hub when they come from there."""
    where = weights_text(source)
    if source is not None and source.kind == "hub":
        where = f"[{where}](https://huggingface.co/{source.location}/tree/{source.revision})"
    return f"Weights: {where}."


def about_markdown(source: ModelSource | None, metrics: dict[str, Any] | None, labels: Sequence[str]) -> str:
    """The details behind the trust sentence, in the page's "About" accordion: what the model is, how it was measured, its limits, the weights."""
    metrics = metrics or {}
    lines = [model_summary(cnn_branch(source))]
    if metrics.get("protocol"):
        lines.append(f"Measured by: {escape_markdown(str(metrics['protocol']))}.")
    lines.append(
        f"Limits: it knows only the {len(labels)} GTZAN genres ({', '.join(labels)}); anything else is forced into one of "
        "them. GTZAN's clips are 1960s-2000s recordings, so on today's songs and phone recordings it is right less often "
        "than the figure above, and the page says \"Not sure\" when its answer is weak or close to a second genre."
    )
    lines.append(weights_line(source))
    return "\n\n".join(lines)


def analysis_json(name: str, prediction: Prediction, config: FeatureConfig, source: ModelSource | None) -> dict[str, Any]:
    """What ``/analyse`` returns: everything the page shows, as JSON an API user can read."""
    metrics = (source.metrics() if source is not None else None) or {}
    return {
        "file": name,
        "verdict": verdict_text(prediction),
        "sure": verdict_rule.is_music(prediction.music) and not is_unsure(prediction),
        "genres": top_json(prediction.top(len(prediction.labels))),
        "duration_s": round(prediction.duration, 2),
        "source_duration_s": round(prediction.source_duration, 2),
        "truncated": prediction.truncated,
        "looped": prediction.padded,
        "music": None if prediction.music is None else round(prediction.music, 4),
        "window_seconds": round(config.window_seconds, 4),
        "windows": windows_json(prediction, config.window_seconds),
        "model": {
            "weights": weights_text(source) if source is not None else None,
            "summary": trust_sentence(metrics),
            "accuracy": metrics.get("accuracy"),
            "protocol": metrics.get("protocol"),
            "n_clips": metrics.get("n_clips"),
        },
    }


def report_wrong(
    reports: flagging.Reports,
    result: tuple[str, Prediction] | None,
    right: str | None,
    audio: str | None,
    examples: set[str],
    request: gr.Request | None = None,
) -> str:
    """Save one "this answer is wrong" report of the answer on screen (see :mod:`flagging`); return the line to show.

    ``result`` is the session's last analysis (``None`` after a new input); ``audio`` what the
    song input holds, which tells an example's cached answer (``examples``: their file names)
    from no answer at all.
    """
    if result is None and audio:
        return flagging.EXAMPLE if Path(audio).name in examples else flagging.NO_ANSWER
    client = getattr(getattr(request, "client", None), "host", None)
    refused = reports.report(result, right, client, getattr(request, "session_hash", None))
    if refused is not None:
        return refused
    name, prediction = result
    return f"Thanks: saved that {escape_markdown(name)} is {right} ({verdict_text(prediction).lower()}, said GenreWiz)."


def build_demo(
    classifier: GenreClassifier,
    examples: Sequence[str | os.PathLike[str]] | None = None,
    flagging_dir: str | os.PathLike[str] = flagging.FLAGGING_DIR,
) -> gr.Blocks:
    """The GenreWiz app around ``classifier``, queued and ready for :func:`launch`.

    ``examples`` defaults to :func:`list_examples`; their results are computed once at launch
    (``gr.Examples(cache_examples=True)``, kept under ``$GRADIO_EXAMPLES_CACHE``). The page's
    own events are private and show a bad input's message where the result would be; the API
    endpoints ``/predict`` and ``/analyse`` hang on a hidden button and raise ``gr.Error``.
    "This answer is wrong" reports go to ``flagging_dir`` (:class:`flagging.Reports`).
    """
    config = classifier.config
    source = classifier.source
    classifier.engine.turns = serving.ClientTurns()
    example_paths = [str(p) for p in (list_examples() if examples is None else examples)]
    metrics = source.metrics() if source else None
    if source is not None and source.fallback_reason:  # the log's business, not the page's
        logger.warning("Serving the bundled weights: %s", source.fallback_reason)

    def classify(audio: str | None, progress: Progress | None = None) -> Prediction:
        return classify_upload(classifier, audio, getattr(demo, "max_file_size", None), progress)

    def render(audio: str, prediction: Prediction) -> str:
        """The spectrogram PNG of ``prediction``, a file of its own in Gradio's cache."""
        title = f"{Path(audio).name} · {analysed_span(prediction)}"  # drawn as plain text: every character literal
        return write_png(spectrogram_image(prediction.mel, config, title), Path(spectrogram.GRADIO_CACHE) / SPECTROGRAM_FOLDER)

    def predict(audio: str | None) -> tuple[dict[str, float], str]:
        """Top-5 genres with confidences, and the mel-spectrogram the model saw (PNG)."""
        try:
            prediction = classify(audio)
        except AudioError as err:
            raise api_error(err) from err
        return dict(prediction.top(TOP_K)), render(audio, prediction)

    def analyse(audio: str | None) -> dict[str, Any]:
        """Every genre's confidence, the verdict, the durations, the per-window timeline and the model, as JSON."""
        try:
            prediction = classify(audio)
        except AudioError as err:
            raise api_error(err) from err
        return analysis_json(Path(audio).name, prediction, config, source)

    def show(
        audio: str | None, progress: gr.Progress = gr.Progress()
    ) -> tuple[str, str, str | None, tuple[str, Prediction] | None]:
        """The page's result: verdict, genres, spectrogram, and what the details need; or the error in the verdict's place.

        A bar over the result tracks the model's work on the song (seconds for a long one).
        """
        progress(0, desc="Reading the audio")
        try:
            prediction = classify(audio, lambda done: progress(done, desc="Listening"))
        except AudioError as err:
            return error_markdown(str(err)), "", None, None
        # The session keeps this for the follow-up, which needs the probabilities, not the (up to
        # 6.6 MB) spectrogram: an empty copy, since a view would keep the whole array alive.
        light = dataclasses.replace(prediction, mel=prediction.mel[:0].copy())
        bars = genre_bars(prediction.top(TOP_K), verdict_rule.is_music(prediction.music))
        return verdict_markdown(prediction), bars, render(audio, prediction), (Path(audio).name, light)

    def show_details(result: tuple[str, Prediction] | None) -> tuple[Any, str]:
        if result is None:
            return gr.update(value=None, visible=False), ""
        name, prediction = result
        visible = has_timeline(prediction, config)
        timeline = timeline_figure(prediction, config) if visible else None
        return gr.update(value=timeline, visible=visible), details_markdown(name, prediction, config)

    def show_all(audio: str) -> tuple[str, str, str | None, Any, str]:
        verdict_md, genres, image, result = show(audio)
        return verdict_md, genres, image, *show_details(result)

    def analyse_many(
        paths: list[str] | None, refused: list[tuple[str, str]] | None = None
    ) -> tuple[list[list[Any]], str | None, str]:
        """The "several files" table, its CSV download, and a line on what was done.

        ``refused`` holds the name and error of each file the page kept back (over the upload
        limit): each gets its row after the others. API callers leave it out.
        """
        paths, refused = list(paths or []), list(refused or [])
        if not paths and not refused:
            return [], None, "No files yet: choose one or more audio files."
        if len(paths) + len(refused) > BATCH_LIMIT:
            count = len(paths) + len(refused)
            return [], None, f"{count} files: at most {BATCH_LIMIT} at a time here (the command line takes whole folders)."
        rows = batch_rows(classifier, paths, getattr(demo, "max_file_size", None))
        rows += [[name, "", error, "", "", "", "", ""] for name, error in refused]
        failed = sum(1 for row in rows if row[BATCH_COLUMNS.index("error")])
        done = f"{len(rows) - failed} of {len(rows)} files analysed" + (f"; {failed} could not be (see `error`)." if failed else ".")
        return rows, write_csv(rows, Path(spectrogram.GRADIO_CACHE) / RESULTS_FOLDER), done

    reports = flagging.Reports(flagging_dir, classifier.labels, flagging.weights_id(source))
    example_names = {Path(p).name for p in example_paths}

    def refuse(payload: str) -> tuple[Any, ...]:
        """The page kept files back (over the upload limit): say so where the result or the batch status would be."""
        target, refused = refused_files(payload, getattr(demo, "max_file_size", None))
        message = " ".join(error for _, error in refused)
        skip = (gr.skip(),) * 6
        if target == "batch":  # sent for every choice of files: a new choice forgets the old refusals
            return *skip, (escape_markdown(f"Not uploaded: {message}") if refused else ""), refused
        if target != "song" or not refused:
            return *skip, gr.skip(), gr.skip()
        return error_markdown(message), "", None, gr.update(value=None, visible=False), "", None, gr.skip(), gr.skip()

    def report(result: tuple[str, Prediction] | None, right: str | None, audio: str | None, request: gr.Request) -> str:
        return report_wrong(reports, result, right, audio, example_names, request)

    with gr.Blocks(title="GenreWiz", analytics_enabled=False, delete_cache=DELETE_CACHE) as demo:
        gr.Markdown(
            "# GenreWiz\n"
            "Upload a song (mp3, m4a, wav, flac, ogg, webm, ...) or record one: GenreWiz names its genre among "
            f"{len(classifier.labels)} GTZAN genres ({', '.join(classifier.labels)}), listening to the first "
            f"{classifier.max_duration / 60:g} minutes in {config.window_seconds:.0f}-second windows.",
            elem_id="intro",
        )
        gr.Markdown(trust_sentence(metrics), elem_id="model-note")  # the one line about the model in view
        with gr.Accordion("About the model, its limits and weights", open=False, elem_id="about"):
            gr.Markdown(about_markdown(source, metrics, classifier.labels), elem_id="about-text")
        verdict = gr.Markdown(label="Verdict", elem_id="verdict", render=False, latex_delimiters=[])
        bars = gr.HTML(label="Top 5 genres", elem_id="genres", render=False)
        label = gr.Label(num_top_classes=TOP_K, label="Top 5 genres", visible=False)  # /predict's, for API clients
        spectrogram = gr.Image(
            label="What the model heard (mel spectrogram)", format="png", interactive=False, elem_id="spectrogram", render=False
        )
        timeline = gr.Plot(label="Genre over time", format="png", visible=False, elem_id="timeline", render=False)
        details = gr.Markdown(label="Details", elem_id="details", render=False, latex_delimiters=[])
        state = gr.State()
        # One column on a phone, in reading order: input, verdict, genres, the figures, then the rest.
        with gr.Row(equal_height=False):
            with gr.Column(scale=2, min_width=320):
                audio = gr.Audio(sources=["upload", "microphone"], type="filepath", label="Song", elem_id="song")
                hint = gr.Markdown(input_hint(MAX_FILE_SIZE, classifier.max_duration), label="What to give it", elem_id="input-hint")
                verdict.render()
                bars.render()
                with gr.Accordion("Is this answer wrong?", open=False, elem_id="flag"):
                    right_genre = gr.Dropdown(list(classifier.labels), label="The right genre", elem_id="right-genre")
                    flag_button = gr.Button("Report: this answer is wrong", size="sm", elem_id="flag-button")
                    flag_status = gr.Markdown(elem_id="flag-status")
            with gr.Column(scale=3, min_width=320):
                spectrogram.render()
                timeline.render()
                details.render()
        if example_paths:
            with gr.Column(elem_id="examples"):
                gr.Examples(
                    examples=example_paths,
                    inputs=audio,
                    outputs=[verdict, bars, spectrogram, timeline, details],
                    fn=show_all,
                    cache_examples=True,
                    cache_mode="eager",
                    preload=False,
                    label="Examples (results cached)",
                )
        with gr.Accordion(f"Several files at once (up to {BATCH_LIMIT}), with a CSV of the results", open=False, elem_id="batch"):
            # Any file: what the server cannot decode gets a row with the reason, not a silent drop.
            batch_files = gr.File(file_count="multiple", type="filepath", label="Audio or video files", elem_id="batch-files")
            batch_button = gr.Button("Analyse these files", elem_id="batch-button")
            batch_status = gr.Markdown(label="Status", elem_id="batch-status")
            batch_table = gr.Dataframe(
                headers=list(BATCH_COLUMNS),
                label="Results",
                interactive=False,
                wrap=True,
                column_widths=BATCH_WIDTHS,
                elem_id="batch-table",
            )
            batch_csv = gr.File(label="Results (CSV)", interactive=False, elem_id="batch-csv")
            batch_refused = gr.State([])
        api_only = gr.Button(visible=False)
        analysis = gr.JSON(label="Analysis", visible=False)
        refused = gr.Textbox(label="Files the page kept back", visible="hidden", elem_id="refused-files")

        model_events = {"concurrency_limit": CONCURRENCY_LIMIT, "concurrency_id": "model"}
        gr.on(
            [audio.upload, audio.stop_recording],
            show,
            inputs=audio,
            outputs=[verdict, bars, spectrogram, state],
            api_visibility="private",
            **model_events,
        ).then(show_details, inputs=state, outputs=[timeline, details], api_visibility="private")
        api_only.click(predict, inputs=audio, outputs=[label, spectrogram], api_name="predict", **model_events)
        api_only.click(analyse, inputs=audio, outputs=analysis, api_name="analyse", **model_events)
        batch_button.click(
            analyse_many,
            inputs=[batch_files, batch_refused],  # a State: API clients pass the files only
            outputs=[batch_table, batch_csv, batch_status],
            api_name="analyse_many",
            **model_events,
        )
        demo.load(  # the limit launch() was given
            lambda: input_hint(getattr(demo, "max_file_size", None), classifier.max_duration),
            outputs=hint,
            api_visibility="private",
            queue=False,
        )
        refused.change(
            refuse,
            inputs=refused,
            outputs=[verdict, bars, spectrogram, timeline, details, state, batch_status, batch_refused],
            api_visibility="private",
            queue=False,
        )
        flag_button.click(report, inputs=[state, right_genre, audio], outputs=flag_status, api_visibility="private", queue=False)
        # A new input (an upload, a recording, an example) ends the old result's report and its
        # chosen genre: a report always names the answer on screen. Examples carry no report
        # (their answers are cached).
        audio.change(
            lambda: (None, "", None), outputs=[state, flag_status, right_genre], api_visibility="private", queue=False
        )
        audio.clear(
            lambda: ("", "", None, gr.update(value=None, visible=False), "", None, ""),
            outputs=[verdict, bars, spectrogram, timeline, details, state, flag_status],
            api_visibility="private",
            queue=False,
        )
    # api_open=False: /gradio_api/run/<api> would run the model outside the queue and its limits.
    demo.queue(default_concurrency_limit=CONCURRENCY_LIMIT, max_size=QUEUE_SIZE, api_open=False)
    return demo


def launch(demo: gr.Blocks, **kwargs: Any) -> tuple[Any, str, str]:
    """Start the server with the product's settings; ``kwargs`` add to or override them.

    :mod:`serving` shares the queue and the model fairly between clients, guards the routes
    (per-client queue limit, jobs nobody listens for dropped, absurd bodies, files not uploaded
    and cut-off uploads refused in one log line), sweeps refused uploads out of Gradio's cache
    and gives memory back once requests are done.
    """
    serving.return_freed_memory()
    serving.share_fairly(demo._queue)
    serving.quiet_refusals(demo)
    watch = serving.QueueWatch(demo)
    app_kwargs = {
        "middleware": [Middleware(serving.RequestGuard, watch=watch)],
        "lifespan": serving.lifespan(watch, lambda: Path(get_upload_folder()), DELETE_CACHE[0], DELETE_CACHE[1]),
    }
    settings: dict[str, Any] = {
        "max_file_size": MAX_FILE_SIZE,
        "ssr_mode": False,
        "show_error": False,
        "css": APP_CSS,
        "head": APP_HEAD,
        "app_kwargs": app_kwargs,
    }
    return demo.launch(**(settings | kwargs))


def main() -> None:
    """Load the model once (Hub repo in ``GENREWIZ_MODEL`` or the default, else bundled) and serve."""
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    # The example cache is keyed by component, not by model: recompute it at each start so that
    # new weights never show old results (a Space starts from a clean folder anyway).
    os.environ.setdefault("GRADIO_RESET_EXAMPLES_CACHE", "True")
    # SIGTERM (`kill`, a container stopping) ends the server as Ctrl-C does, through Gradio's
    # shutdown, which deletes the uploads and spectrograms it still holds; `finally` covers a
    # stop that comes while the examples are still being cached at start-up.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    demo = build_demo(GenreClassifier.from_pretrained(num_threads=MODEL_THREADS))
    try:
        with contextlib.suppress(KeyboardInterrupt):  # a stop during start-up is a normal stop too
            launch(demo)
    finally:
        demo.close()


if __name__ == "__main__":
    main()
