"""The served app's guards (serving.py) on a real in-process server: fair queue, short logs, no orphaned uploads."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import pytest
from gradio_client import Client, handle_file

import app
import serving
from synthetic import write_clip
from test_app import assert_top5, running_app


@pytest.fixture()
def guarded(classifier, tmp_path, monkeypatch):
    """A served app with its own Gradio cache, quick chores (every second) and a 2-second listening grace."""
    monkeypatch.setenv("GRADIO_TEMP_DIR", str(tmp_path / "gradio-temp"))
    monkeypatch.setattr(app, "DELETE_CACHE", (1, 600))
    monkeypatch.setattr(serving, "LISTEN_GRACE", 2.0)
    with running_app(classifier, [], tmp_path / "examples-cache") as (demo, url, _):
        yield demo, url, tmp_path / "gradio-temp"


def upload(url: str, path: Path) -> str:
    response = httpx.post(f"{url}gradio_api/upload", files={"files": (path.name, path.read_bytes())}, timeout=60)
    response.raise_for_status()
    return response.json()[0]


def call(url: str, server_path: str) -> httpx.Response:
    body = {"data": [{"path": server_path, "meta": {"_type": "gradio.FileData"}}]}
    return httpx.post(f"{url}gradio_api/call/predict", json=body, timeout=60)


def test_one_client_cannot_fill_the_queue_and_unheard_jobs_are_dropped(guarded, classifier, tmp_path, caplog):
    demo, url, _ = guarded
    song = upload(url, write_clip(tmp_path / "long.wav", "pad", 240.0))  # a few seconds of work each
    with classifier.engine.turns:  # the model is held: no job ends while they arrive, however fast the machine
        answers = [call(url, song) for _ in range(app.CONCURRENCY_LIMIT + serving.PER_CLIENT_QUEUED + 3)]
    refused = [r for r in answers if r.status_code == 429]
    assert refused and all("requests waiting" in r.text for r in refused), [r.status_code for r in answers]
    assert sum(r.status_code == 200 for r in answers) <= app.CONCURRENCY_LIMIT + serving.PER_CLIENT_QUEUED + 1
    watch = serving.QueueWatch(demo)
    deadline = time.monotonic() + 30
    while watch.queued("127.0.0.1"):  # nobody listens for those answers: the waiting ones go
        assert time.monotonic() < deadline, "unheard jobs were not dropped"
        time.sleep(0.2)
    assert any("never listened for the answer" in r.getMessage() for r in caplog.records)
    label, _ = Client(url, verbose=False).predict(handle_file(str(write_clip(tmp_path / "short.wav", "pad", 5.0))), api_name="/predict")
    assert_top5(label)  # a client that listens is served


def test_absurd_paths_and_bodies_get_one_short_line(guarded, caplog, capfd):
    _, url, _ = guarded
    huge = call(url, "/" + "a" * 10_000)
    assert huge.status_code == 400 and "names no file" in huge.text
    enormous = call(url, "/" + "a" * (serving.MAX_BODY + 1))
    assert enormous.status_code == 413
    lines = [r.getMessage() for r in caplog.records if r.name == serving.logger.name]
    assert any("a file path over" in line for line in lines) and any("body over" in line for line in lines)
    assert all(len(line) < 200 for line in lines), lines
    captured = capfd.readouterr()
    assert "Traceback" not in captured.err and len(captured.err) < 10_000


def test_refused_uploads_leave_nothing_in_the_cache(classifier, tmp_path, monkeypatch):
    temp = tmp_path / "gradio-temp"
    monkeypatch.setenv("GRADIO_TEMP_DIR", str(temp))
    with running_app(classifier, [], tmp_path / "examples-cache") as (_, url, _):
        for _ in range(3):
            response = httpx.post(f"{url}gradio_api/upload", files={"files": ("..", b"x" * 2_000_000)}, timeout=60)
            assert response.status_code == 400
        assert sum(p.stat().st_size for p in temp.rglob("*") if p.is_file()) >= 6_000_000  # Gradio's leftovers
    assert [p for p in temp.rglob("*") if p.is_file()] == []  # gone when the server stopped


def test_leftover_sweep_keeps_young_and_tracked_files(tmp_path):
    old_tmp, young_tmp = tmp_path / "tmpabcdef12", tmp_path / "tmpzyxwvu98"
    tracked = tmp_path / ("a" * 64) / "song.wav"
    empty = tmp_path / ("b" * 64)
    for path in (old_tmp, young_tmp, tracked):
        path.parent.mkdir(exist_ok=True)
        path.write_bytes(b"x")
    empty.mkdir()
    other = tmp_path / "notes.txt"
    other.write_text("not Gradio's")
    import os

    for path in (old_tmp, tracked, tracked.parent, empty, other):
        os.utime(path, (0, 0))
    assert serving.sweep_upload_leftovers(tmp_path, 600) == 2
    assert not old_tmp.exists() and not empty.exists()
    assert young_tmp.exists() and tracked.exists() and other.exists()
