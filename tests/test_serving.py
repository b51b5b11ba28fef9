"""The served app's guards (serving.py) on a real in-process server: a fair share per client, short logs, no orphaned uploads, memory given back."""

from __future__ import annotations

import socket
import threading
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


def other_client(address: str = "127.0.0.2") -> httpx.Client:
    """HTTP from another loopback address: to the server, another client."""
    return httpx.Client(transport=httpx.HTTPTransport(local_address=address), timeout=120)


def answer(http: httpx.Client, url: str, event_id: str) -> str:
    """The stream of a ``/call`` job's answer, read to its end (the server's own deadline: ``timeout``)."""
    return http.get(f"{url}gradio_api/call/predict/{event_id}").text


def test_direct_routes_skip_nothing_any_more(guarded, tmp_path):
    _, url, _ = guarded
    song = upload(url, write_clip(tmp_path / "clip.wav", "pad", 5.0))
    body = {"data": [{"path": song, "meta": {"_type": "gradio.FileData"}}]}
    for route in ("run", "api"):  # these ran the model outside the queue and its limits
        response = httpx.post(f"{url}gradio_api/{route}/predict", json=body, timeout=60)
        assert response.status_code == 404 and "join the queue" in response.text, response.text
    queued = call(url, song)
    assert queued.status_code == 200
    assert "event: complete" in answer(httpx.Client(timeout=120), url, queued.json()["event_id"])


def test_a_flooding_client_does_not_hold_up_another(guarded, tmp_path, monkeypatch):
    """One client sends eight long songs; another's short one, sent after, is answered while the first one's still wait."""
    demo, url, _ = guarded
    monkeypatch.setattr(serving, "LISTEN_GRACE", 600.0)  # the flood's answers are never read: its jobs must stay
    long_song = upload(url, write_clip(tmp_path / "long.wav", "pad", 180.0))
    flood = [call(url, long_song) for _ in range(8)]
    assert all(r.status_code == 200 for r in flood), [r.text for r in flood]
    watch = serving.QueueWatch(demo)
    with other_client() as http:
        clip = write_clip(tmp_path / "short.wav", "pad", 5.0).read_bytes()
        short = http.post(f"{url}gradio_api/upload", files={"files": ("short.wav", clip)}).json()[0]
        event = http.post(f"{url}gradio_api/call/predict", json={"data": [{"path": short, "meta": {"_type": "gradio.FileData"}}]})
        streamed = answer(http, url, event.json()["event_id"])
    still_waiting = watch.queued("127.0.0.1")
    assert "event: complete" in streamed, streamed
    assert still_waiting > 0, "the other client's song waited behind every one of the flood's"


def test_model_turns_go_round_robin_between_clients():
    turns = serving.ClientTurns(client_of=lambda: threading.current_thread().name[0])
    order: list[str] = []

    def run() -> None:
        with turns:
            order.append(threading.current_thread().name)

    threads = [threading.Thread(target=run, name=name) for name in ("a1", "a2", "a3", "b1", "c1")]
    with turns:  # held: the five line up behind it in this order
        for i, thread in enumerate(threads):
            thread.start()
            deadline = time.monotonic() + 10
            while turns.waiting < i + 2:
                assert time.monotonic() < deadline
                time.sleep(0.01)
    for thread in threads:
        thread.join(timeout=10)
    assert order == ["a1", "b1", "c1", "a2", "a3"]  # FairTurns, first come first served: a1 a2 a3 b1 c1
    assert turns.waiting == 0


def test_cut_off_uploads_and_unknown_files_are_one_line_each(guarded, tmp_path, caplog, capfd):
    _, url, _ = guarded
    host, port = url.split("//")[1].rstrip("/").split(":")
    for _ in range(3):
        with socket.create_connection((host, int(port)), timeout=30) as sock:
            part = b'--XX\r\nContent-Disposition: form-data; name="files"; filename="a.wav"\r\n\r\n' + b"x" * 100_000
            head = b"POST /gradio_api/upload HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; boundary=XX\r\n"
            sock.sendall(head + b"Content-Length: 10000000\r\n\r\n" + part)
            time.sleep(0.2)  # let the server start reading, then hang up mid-upload
    refused = call(url, "/etc/hosts")  # a path on the server that nobody uploaded
    streamed = answer(httpx.Client(timeout=120), url, refused.json()["event_id"])
    assert "was not uploaded first" in streamed, streamed
    deadline = time.monotonic() + 30
    while sum("was cut off" in r.getMessage() for r in caplog.records) < 3:
        assert time.monotonic() < deadline, [r.getMessage() for r in caplog.records]
        time.sleep(0.1)
    lines = [r.getMessage() for r in caplog.records if r.name == serving.logger.name]
    assert sum("was cut off" in line for line in lines) == 3 and sum("/etc/hosts" in line for line in lines) == 1, lines
    captured = capfd.readouterr()
    assert "Traceback" not in captured.err + captured.out, captured.err[-3000:]


def test_idle_memory_returns_after_a_burst_of_long_songs(guarded, tmp_path):
    """After six 5-minute songs at once, the idle server goes back near its size (README: within 200 MB)."""
    _, url, _ = guarded
    client = Client(url, verbose=False)

    def rss_mb() -> float:
        return next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmRSS:")) / 1024

    client.predict(handle_file(str(write_clip(tmp_path / "warm.wav", "pad", 5.0))), api_name="/predict")
    start = rss_mb()
    song = handle_file(str(write_clip(tmp_path / "five_minutes.wav", "pad", 300.0)))
    for _ in range(2):
        for job in [client.submit(song, api_name="/predict") for _ in range(6)]:
            job.result(timeout=300)
    deadline = time.monotonic() + 30  # a few of the server's chores (every 5 s)
    while rss_mb() - start > 150:
        assert time.monotonic() < deadline, f"idle RSS stayed {rss_mb() - start:.0f} MB above where it started"
        time.sleep(0.5)
