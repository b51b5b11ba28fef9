"""Whole songs at any length: memory that does not grow with the song, and chunking that changes no answer."""

from __future__ import annotations

import logging
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from genrewiz import GenreClassifier
from genrewiz.engine import OnnxEngine, TorchEngine
from genrewiz.features import audioset_windows, make_windows
from genrewiz.hub import BUNDLED_DIR
from genrewiz.model import PCRNN
from genrewiz.predict import analyse
from synthetic import STYLES, synth_clip

PEAK_GROWTH_MB = 400
"""Bound on the peak RSS a 10-minute song adds to a warmed-up classifier. Before chunking it was
several GB; chunked it is about a third of this (README, Robustness). Kept generous: memory does
not depend on the machine's load, but allocator behaviour varies a little between runs."""

MEMORY_SCRIPT = textwrap.dedent(
    """
    import sys
    from genrewiz import GenreClassifier

    def status(key):
        return next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith(key)) / 1024

    classifier = GenreClassifier.from_pretrained(sys.argv[1])
    classifier.predict(sys.argv[2])                     # warm-up: lazily allocated buffers are the model's
    before = status("VmRSS:")
    with open("/proc/self/clear_refs", "w") as refs:    # reset VmHWM to the current RSS
        refs.write("5")
    prediction = classifier.predict(sys.argv[3])
    print(classifier.engine.name, len(prediction.window_starts), status("VmHWM:") - before)
    """
)


def _song(seconds: float, sample_rate: int = 22_050) -> np.ndarray:
    """A generated "song": the synthetic styles in turn, 30 s each, so its windows differ."""
    parts = [synth_clip(STYLES[i % len(STYLES)], 30.0, sample_rate, seed=i) for i in range(int(np.ceil(seconds / 30)))]
    return np.concatenate(parts)[: int(seconds * sample_rate)]


@pytest.mark.timeout(900)  # its measuring process may take 600 s
def test_ten_minute_song_peak_memory_is_bounded(tmp_path):
    """The 10-minute song's peak RSS growth, measured in a fresh process from /proc/self/status."""
    song, warm_up = tmp_path / "song.flac", tmp_path / "warm_up.flac"
    sf.write(song, _song(600.0), 22_050)
    sf.write(warm_up, _song(31.0), 22_050)
    result = subprocess.run(
        [sys.executable, "-c", MEMORY_SCRIPT, str(BUNDLED_DIR), str(warm_up), str(song)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr
    engine, windows, growth = result.stdout.split()
    assert engine == "onnxruntime" and int(windows) >= 39  # the whole 10 minutes went through the model
    assert float(growth) < PEAK_GROWTH_MB, f"peak RSS grew {float(growth):.0f} MB on a 10-minute song"


@pytest.fixture(scope="module")
def song() -> tuple[np.ndarray, np.ndarray | None]:
    """Windows of a 100 s generated song at the bundled model's features (6 windows, 40 distinct patches), and the
    AudioSet ear's 10-s patches for them (3 each) where the model has that ear."""
    engine = OnnxEngine.for_checkpoint(BUNDLED_DIR)
    config, ear = engine.config, engine.audioset_config
    analysis = analyse(_song(100.0), config, 22_050, ear=ear)
    cut = make_windows(analysis.mel, config)
    starts = cut.start_frames * config.frame_seconds
    return cut.data, None if ear is None else audioset_windows(analysis.ear_mel, starts, config.window_seconds, ear)


def test_onnx_chunked_equals_unchunked(song):
    windows, ear = song
    one_at_a_time = OnnxEngine.for_checkpoint(BUNDLED_DIR, batch_size=1, patch_chunk=1)
    all_at_once = OnnxEngine.for_checkpoint(BUNDLED_DIR, batch_size=64, patch_chunk=64)
    a = one_at_a_time.window_outputs(windows, ear_patches=ear)
    b = all_at_once.window_outputs(windows, ear_patches=ear)
    assert a.probabilities.shape == (len(windows), 10)
    np.testing.assert_allclose(a.probabilities, b.probabilities, atol=1e-5, rtol=0)
    if ear is not None:
        np.testing.assert_allclose(a.music, b.music, atol=1e-5, rtol=0)


def test_torch_chunked_equals_the_whole_model(song):
    """The staged torch path against ``PCRNN.forward`` on the same windows, all at once."""
    model = PCRNN.from_pretrained(BUNDLED_DIR)
    windows, ear = song[0][:3], None if song[1] is None else song[1][:3]
    chunked = TorchEngine(model, batch_size=2, patch_chunk=3).window_probabilities(windows, ear_patches=ear)
    with torch.inference_mode():
        whole = torch.softmax(model(torch.from_numpy(windows), None if ear is None else torch.from_numpy(ear)), dim=1).numpy()
    np.testing.assert_allclose(chunked, whole, atol=1e-5, rtol=0)


def test_progress_reaches_one_in_steps(song):
    windows, ear = song
    engine = OnnxEngine.for_checkpoint(BUNDLED_DIR, patch_chunk=8)
    seen: list[float] = []
    engine.window_probabilities(windows, progress=seen.append, ear_patches=ear)
    steps = 5 + (0 if ear is None else -(-len(ear.reshape(-1, *ear.shape[2:])) // 8))  # 40 distinct patches, 8 at a time
    assert len(seen) == steps and seen == sorted(seen) and seen[-1] == 1.0


def test_classifier_passes_progress_through(tmp_path):
    classifier = GenreClassifier.from_pretrained(BUNDLED_DIR)
    seen: list[float] = []
    prediction = classifier.predict(_song(45.0), 22_050, progress=seen.append)
    assert seen and seen[-1] == 1.0
    assert prediction.probabilities.sum() == pytest.approx(1.0, abs=1e-5)


def test_graph_of_an_older_export_is_not_served(tmp_path, caplog):
    """A graph with inputs this engine does not know runs in PyTorch instead, with a log line."""
    import onnx

    folder = Path(tmp_path)
    PCRNN().save_pretrained(folder)
    graph = onnx.load(str(folder / "model.onnx"))
    graph.graph.input[0].name = "windows"
    for node in graph.graph.node:
        node.input[:] = ["windows" if name == "x" else name for name in node.input]
    onnx.save(graph, str(folder / "model.onnx"))
    with caplog.at_level(logging.WARNING, logger="genrewiz"):
        assert isinstance(GenreClassifier.from_pretrained(folder).engine, TorchEngine)
    assert "exported by another GenreWiz" in caplog.text


def test_app_upload_reports_progress(classifier, tmp_path):
    """The page's handler hands the model's progress on (what its ``gr.Progress`` bar shows)."""
    import app

    song = tmp_path / "song.flac"
    sf.write(song, _song(100.0), 22_050)
    seen: list[float] = []
    prediction = app.classify_upload(classifier, str(song), progress=seen.append)
    assert len(seen) >= 2 and seen[-1] == 1.0 and len(prediction.window_starts) == 6


def test_fair_turns_serve_in_arrival_order():
    """Runs waiting for the model go in the order they asked: a short song's runs get in between a long one's."""
    import threading
    import time

    from genrewiz.engine import FairTurns

    turns, order = FairTurns(), []

    def run(name: str) -> None:
        with turns:
            order.append(name)

    with turns:  # a long song's run holds the model
        threads = []
        for i, name in enumerate(["long, next chunk", "short", "other long"]):
            threads.append(threading.Thread(target=run, args=(name,)))
            threads[-1].start()
            deadline = time.monotonic() + 30
            while turns.waiting < i + 2:  # this one has its ticket before the next one asks
                assert time.monotonic() < deadline, "a run never asked for its turn"
                time.sleep(0.001)
    for thread in threads:
        thread.join(timeout=10)
    assert order == ["long, next chunk", "short", "other long"]


def test_engine_runs_take_turns_and_give_the_same_answers(song):
    from genrewiz.engine import FairTurns

    windows, ear = song[0][:2], None if song[1] is None else song[1][:2]
    engine = OnnxEngine.for_checkpoint(BUNDLED_DIR)
    plain = engine.window_probabilities(windows, ear_patches=ear)
    engine.turns = FairTurns()
    np.testing.assert_array_equal(engine.window_probabilities(windows, ear_patches=ear), plain)
    assert engine.turns.waiting == 0
