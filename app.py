"""GenreWiz web app: upload or record a song, see what the model saw, get its top-5 genres.

A thin Gradio layer over :mod:`genrewiz`; every step of the pipeline (decoding, log-mel,
windows, model) is the library's. Run it with ``python app.py`` (this is also what a Hugging
Face Space runs); ``GENREWIZ_MODEL`` picks the weights (Hub repo id or local folder), and
``GRADIO_SERVER_NAME`` / ``GRADIO_SERVER_PORT`` where it listens.

From Python, the ``/predict`` endpoint returns ``(label, spectrogram)``::

    from gradio_client import Client, handle_file
    label, spectrogram_png = Client(url).predict(handle_file("song.mp3"), api_name="/predict")

Tests and benchmarks build the app around a classifier of their choice with
:func:`build_demo` and start it with :func:`launch`, so they serve exactly what users get.
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import io
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
from PIL import Image

from genrewiz import AudioError, FeatureConfig, GenreClassifier, Prediction
from genrewiz.features import to_db
from genrewiz.hub import ModelSource
from genrewiz.plots import spectrogram_pixels, timeline_pixels

logger = logging.getLogger("genrewiz.app")

EXAMPLES_DIR = Path(__file__).resolve().with_name("examples")
EXAMPLE_EXTENSIONS = (".ogg", ".mp3", ".wav", ".flac")
TOP_K = 5
MAX_FILE_SIZE = 120 * 1024 * 1024
"""Upload limit in bytes: a 10-minute CD-quality WAV (the most ``genrewiz`` analyses) is 106 MB."""
CONCURRENCY_LIMIT = 2
"""Predictions run at once; more would only share the same CPU cores (a free Space has two)."""
QUEUE_SIZE = 64
"""Requests waiting beyond that are refused with 'Queue is full' instead of piling up."""
DELETE_CACHE = (60, 600)
"""Every minute, uploads and spectrograms older than 10 minutes are deleted: a file lasts at
most 11 minutes (long enough to play an upload back in the page), and all of them go when the
server stops."""
SPECTROGRAM_FOLDER = "genrewiz-spectrograms"
"""Folder for the spectrogram PNGs inside Gradio's cache, which serves them in place and deletes
them on the :data:`DELETE_CACHE` schedule and at shutdown like its own files."""

_MB = 1024 * 1024
_ERROR_TITLE = "Can't analyse this audio"
_ASCII_PUNCTUATION = re.compile(r"([!-/:-@\[-`{-~])")


def list_examples(folder: str | os.PathLike[str] = EXAMPLES_DIR) -> list[str]:
    """Audio files in ``folder`` (ogg, mp3, wav, flac), sorted, as absolute paths."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    return sorted(str(p.resolve()) for p in folder.iterdir() if p.is_file() and p.suffix.lower() in EXAMPLE_EXTENSIONS)


def classify_file(
    classifier: GenreClassifier, path: str | os.PathLike[str] | None, max_file_size: int | None = None
) -> Prediction:
    """Classify one uploaded or recorded file; every problem with the input becomes a ``gr.Error``.

    ``max_file_size`` (bytes) is checked here too, because the upload limit of ``launch()``
    does not cover every path a file can reach the handler by (cached examples, files already
    on the server).

    The file name in a message is the user's: its ``<`` and ``>`` are escaped, since Gradio
    shows messages as (sanitised) HTML.
    """
    if not path:
        raise gr.Error(
            "No audio yet: upload a file or record one with the microphone.", title=_ERROR_TITLE, print_exception=False
        )
    name = escape_html_tags(Path(path).name)
    if max_file_size is not None and os.path.isfile(path) and (size := os.path.getsize(path)) > max_file_size:
        raise gr.Error(
            f"{name}: the file is too large ({size / _MB:.1f} MB; the limit is {max_file_size / _MB:.0f} MB).",
            title=_ERROR_TITLE,
            print_exception=False,
        )
    try:
        return classifier.predict(path)
    except AudioError as err:
        logger.info("Rejected input: %s", err)
        raise gr.Error(escape_html_tags(str(err)), title=_ERROR_TITLE, print_exception=False) from err


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
    """Save ``pixels`` as a PNG file of its own in ``folder``; files older than ``max_age`` s go.

    Gradio writes a returned array to a content-hashed cache file in place, so two requests with
    the same spectrogram rewrite one file while it is being downloaded (truncated downloads at
    20 concurrent requests); a file of its own is never rewritten. The age sweep removes what a
    server that was killed, and so never cleaned up, left behind.
    """
    folder.mkdir(parents=True, exist_ok=True)
    cutoff = time.time() - max_age
    for old in folder.glob("spectrogram-*.png"):
        try:
            if old.stat().st_mtime < cutoff:
                old.unlink()
        except FileNotFoundError:
            pass
    fd, path = tempfile.mkstemp(prefix="spectrogram-", suffix=".png", dir=folder)
    with os.fdopen(fd, "wb") as file:
        Image.fromarray(pixels).save(file, format="PNG")
    return path


def spectrogram_image(mel: np.ndarray, config: FeatureConfig, title: str) -> np.ndarray:
    """The log-mel spectrogram the model saw as ``(h, w, 3)`` pixels: time (s) by mel frequency (Hz), dB colour bar.

    Drawn without a matplotlib Figure (:mod:`genrewiz.plots`): about 12 ms instead of 230.
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
    """A few lines on what was analysed and how, shown under the results; ``name`` is shown literally."""
    genre, confidence = prediction.top(1)[0]
    windows = len(prediction.window_starts)
    lines = [
        f"**{escape_markdown(name)}**: {analysed_span(prediction)} in {windows} window{'s' if windows != 1 else ''} "
        f"of {config.window_seconds:.1f} s; most likely **{genre}** ({confidence:.0%})."
    ]
    if prediction.truncated:
        lines.append(f"Only the first {_minutes(prediction.duration)} of long files is analysed.")
    if prediction.padded:
        lines.append(
            f"Shorter than one {config.window_seconds:.1f} s window, so the clip was looped to fill it: "
            "expect less certain results than for a whole song."
        )
    return "\n\n".join(lines)


def model_note(source: ModelSource | None, metrics: dict[str, Any] | None) -> str:
    """Which weights are loaded, and the accuracy their ``metrics.json`` reports.

    Reads ``accuracy`` (a fraction), ``accuracy_std`` and ``protocol`` as ``train/`` writes them.
    """
    where = source.describe() if source is not None else "weights passed in by the caller"
    if source is not None and source.kind == "hub":
        where = f"[{where}](https://huggingface.co/{source.location}/tree/{source.revision})"
    metrics = metrics or {}
    accuracy, std, protocol = metrics.get("accuracy"), metrics.get("accuracy_std"), metrics.get("protocol")
    if not isinstance(accuracy, (int, float)):
        return f"Model: {where}; no measured accuracy ships with these weights."
    reported = f"{100 * accuracy:.1f}" + (f" ± {100 * std:.1f}" if isinstance(std, (int, float)) else "") + " %"
    return f"Model: {where}; reported accuracy **{reported}**" + (f" — {protocol}" if protocol else "") + "."


def build_demo(
    classifier: GenreClassifier,
    examples: Sequence[str | os.PathLike[str]] | None = None,
) -> gr.Blocks:
    """The GenreWiz app around ``classifier``, queued and ready for :func:`launch`.

    ``examples`` defaults to :func:`list_examples`; their results are computed once at launch
    (``gr.Examples(cache_examples=True)``, kept under ``$GRADIO_EXAMPLES_CACHE``).
    """
    config = classifier.config
    example_paths = [str(p) for p in (list_examples() if examples is None else examples)]
    note = model_note(classifier.source, classifier.source.metrics() if classifier.source else None)

    def predict(audio: str | None) -> tuple[dict[str, float], str, tuple[str, Prediction]]:
        """Top-5 genres with confidences, and the mel-spectrogram the model saw (PNG)."""
        prediction = classify_file(classifier, audio, getattr(demo, "max_file_size", None))
        name = Path(audio).name
        title = f"{name} · {analysed_span(prediction)}"  # drawn as plain text: every character literal
        folder = Path(spectrogram.GRADIO_CACHE) / SPECTROGRAM_FOLDER
        image = write_png(spectrogram_image(prediction.mel, config, title), folder)
        # The session keeps this for the UI-only follow-up, which needs the probabilities, not the
        # (up to 6.6 MB) spectrogram: an empty copy, since a view would keep the whole array alive.
        light = dataclasses.replace(prediction, mel=prediction.mel[:0].copy())
        return dict(prediction.top(TOP_K)), image, (name, light)

    def show_details(result: tuple[str, Prediction]) -> tuple[Any, str]:
        name, prediction = result
        show = has_timeline(prediction, config)
        timeline = timeline_figure(prediction, config) if show else None
        return gr.update(value=timeline, visible=show), details_markdown(name, prediction, config)

    def predict_all(audio: str) -> tuple[dict[str, float], str, Any, str]:
        label, image, result = predict(audio)
        return label, image, *show_details(result)

    with gr.Blocks(title="GenreWiz", analytics_enabled=False, delete_cache=DELETE_CACHE) as demo:
        gr.Markdown(
            "# 🎵 GenreWiz\n"
            "Upload a song or record one: GenreWiz listens to it in "
            f"{config.window_seconds:.1f}-second windows and names its genre among the ten GTZAN genres "
            f"({', '.join(classifier.labels)})."
        )
        gr.Markdown(note, elem_id="model-note")
        label = gr.Label(num_top_classes=TOP_K, label="Top 5 genres", render=False)
        spectrogram = gr.Image(
            label="Mel spectrogram", format="png", interactive=False, elem_id="spectrogram", render=False
        )
        timeline = gr.Plot(label="Genre timeline", format="png", visible=False, elem_id="timeline", render=False)
        details = gr.Markdown(elem_id="details", render=False, latex_delimiters=[])
        state = gr.State()
        with gr.Row():
            with gr.Column(scale=2):
                audio = gr.Audio(
                    sources=["upload", "microphone"],
                    type="filepath",
                    label="Song (wav, mp3, flac, ogg; up to 10 minutes are analysed)",
                )
                button = gr.Button("Classify", variant="primary")
                if example_paths:
                    gr.Examples(
                        examples=example_paths,
                        inputs=audio,
                        outputs=[label, spectrogram, timeline, details],
                        fn=predict_all,
                        cache_examples=True,
                        cache_mode="eager",
                        preload=False,
                        label="Examples (results cached)",
                    )
            with gr.Column(scale=3):
                label.render()
                details.render()
        spectrogram.render()
        timeline.render()

        gr.on(
            [audio.upload, audio.stop_recording, button.click],
            predict,
            inputs=audio,
            outputs=[label, spectrogram, state],
            api_name="predict",
            concurrency_limit=CONCURRENCY_LIMIT,
        ).success(show_details, inputs=state, outputs=[timeline, details], api_visibility="private")
        audio.clear(
            lambda: (None, None, gr.update(value=None, visible=False), ""),
            outputs=[label, spectrogram, timeline, details],
            api_visibility="private",
            queue=False,
        )
    demo.queue(default_concurrency_limit=CONCURRENCY_LIMIT, max_size=QUEUE_SIZE)
    return demo


def launch(demo: gr.Blocks, **kwargs: Any) -> tuple[Any, str, str]:
    """Start the server with the product's settings; ``kwargs`` add to or override them."""
    settings: dict[str, Any] = {"max_file_size": MAX_FILE_SIZE, "ssr_mode": False, "show_error": False}
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
    demo = build_demo(GenreClassifier.from_pretrained())
    try:
        with contextlib.suppress(KeyboardInterrupt):  # a stop during start-up is a normal stop too
            launch(demo)
    finally:
        demo.close()


if __name__ == "__main__":
    main()
