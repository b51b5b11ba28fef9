""""Is this answer wrong?" reports (flagging.py): one per analysis under concurrency, a per-client limit, bounded files."""

from __future__ import annotations

import csv
import datetime
import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import gradio as gr
import httpx
import pytest

import app
import flagging
from synthetic import write_clip
from test_app import running_app

ROOT = Path(__file__).resolve().parents[1]


def rows(folder: Path) -> list[list[str]]:
    """Every report row in ``folder``'s CSV files (headers left out), whatever the files are called."""
    found = []
    for path in sorted(folder.glob("*.csv")):
        with open(path, newline="", encoding="utf-8") as file:
            found += list(csv.reader(file))[1:]
    return found


@pytest.fixture()
def prediction(classifier, tmp_path_factory):
    return classifier.predict(write_clip(tmp_path_factory.mktemp("clip") / "clip.wav", "pad", 3))


def page_event(demo: gr.Blocks, name: str) -> tuple[int, list]:
    """The fn index and input blocks of the page's private event handled by the function ``name``."""
    return next((index, fn.inputs) for index, fn in demo.fns.items() if getattr(fn.fn, "__name__", "") == name)


def test_twenty_concurrent_reports_of_one_analysis_give_one_row(classifier, tmp_path):
    with running_app(classifier, [], tmp_path / "examples-cache") as (demo, url, cache_dir):
        flagged = cache_dir.with_name(cache_dir.name + "-flagged")
        session = "one-browser-tab"
        with httpx.Client(timeout=120) as http:
            clip = write_clip(tmp_path / "my song.wav", "pad", 5).read_bytes()
            uploaded = http.post(f"{url}gradio_api/upload", files={"files": ("my song.wav", clip)})
            song = {"path": uploaded.json()[0], "orig_name": "my song.wav", "meta": {"_type": "gradio.FileData"}}
            show, _ = page_event(demo, "show")  # what an upload in the page runs: it keeps the answer in the session
            http.post(f"{url}gradio_api/queue/join", json={"data": [song], "fn_index": show, "session_hash": session})
            with http.stream("GET", f"{url}gradio_api/queue/data", params={"session_hash": session}) as stream:
                for line in stream.iter_lines():  # the server's answer ends the stream; httpx's timeout bounds each read
                    if "process_completed" in line:
                        assert '"success": true' in line or '"success":true' in line, line
                        break
            report, inputs = page_event(demo, "report")
            values = {gr.State: None, gr.Dropdown: "jazz", gr.Audio: song}
            body = {"data": [values[type(block)] for block in inputs], "fn_index": report, "session_hash": session}
            answers: list[str] = []

            def click() -> None:
                answers.append(httpx.post(f"{url}gradio_api/run/predict", json=body, timeout=120).text)

            clicks = [threading.Thread(target=click) for _ in range(20)]
            for thread in clicks:
                thread.start()
            for thread in clicks:
                thread.join(timeout=120)
    assert len(answers) == 20 and sum("Thanks: saved" in a for a in answers) == 1, answers
    assert len(rows(flagged)) == 1
    assert sum(flagging.ALREADY in a for a in answers) == 19


def test_a_report_names_the_weights_and_the_time_zone(classifier, prediction, tmp_path):
    reports = flagging.Reports(tmp_path, classifier.labels, flagging.weights_id(classifier.source))
    assert reports.report(("=cmd|' /C calc'!A0.wav", prediction), "jazz", "1.2.3.4", "s") is None
    with open(reports.path, newline="", encoding="utf-8") as file:
        header, row = list(csv.reader(file))
    assert tuple(header) == flagging.COLUMNS
    record = dict(zip(header, row))
    assert datetime.datetime.fromisoformat(record["time"]).utcoffset() is not None  # the time zone is in it
    assert record["file"] == "'=cmd|' /C calc'!A0.wav"  # never run as a spreadsheet formula
    assert record["answer"].startswith(prediction.top(1)[0][0]) and record["right genre"] == "jazz"
    assert record["weights"].startswith("local:") and " sha256:" in record["weights"]
    assert reports.report(("x.wav", prediction), "polka", "1.2.3.4", "s") == flagging.CHOOSE


def test_a_client_may_send_only_so_many_reports(classifier, prediction, tmp_path):
    reports = flagging.Reports(tmp_path, classifier.labels, "w", per_client=3, window=3600)
    said = [reports.report((f"song {i}.wav", prediction), "rock", "10.0.0.1", "s") for i in range(5)]
    assert said == [None, None, None, flagging.TOO_MANY, flagging.TOO_MANY]
    assert reports.report(("other.wav", prediction), "rock", "10.0.0.2", "t") is None  # another client is not held up
    assert len(rows(tmp_path)) == 4


def test_reports_rotate_at_their_size_cap(classifier, prediction, tmp_path):
    reports = flagging.Reports(tmp_path, classifier.labels, "w", max_bytes=2_000, keep=2, per_client=10_000)
    for i in range(200):
        assert reports.report((f"song {i:03d}.wav", prediction), "rock", "10.0.0.1", "s") is None
    files = sorted(p.name for p in tmp_path.iterdir())
    assert files == ["reports.1.csv", "reports.2.csv", "reports.csv"]
    assert all(p.stat().st_size <= 2_000 for p in tmp_path.iterdir())
    kept = [row[1] for row in rows(tmp_path)]
    assert "song 199.wav" in kept and "song 000.wav" not in kept  # the newest kept, the oldest rotated out


def test_what_the_page_says_when_there_is_nothing_of_yours_to_report(classifier, prediction, tmp_path):
    reports = flagging.Reports(tmp_path, classifier.labels, "w")
    examples = {"blues_example.ogg"}
    assert app.report_wrong(reports, None, "jazz", None, examples) == flagging.NO_ANALYSIS
    assert app.report_wrong(reports, None, "jazz", "/tmp/gradio/abc/blues_example.ogg", examples) == flagging.EXAMPLE
    assert app.report_wrong(reports, None, "jazz", "/tmp/gradio/abc/failed.wav", examples) == flagging.NO_ANSWER
    saved = app.report_wrong(reports, ("my song.wav", prediction), "jazz", "/tmp/gradio/abc/my song.wav", examples)
    assert saved.startswith(f"Thanks: saved that {app.escape_markdown('my song.wav')} is jazz")
    assert app.report_wrong(reports, ("my song.wav", prediction), "jazz", "/tmp/gradio/abc/my song.wav", examples) == flagging.ALREADY
    assert not list(tmp_path.glob(".gradio"))


def test_reports_go_beside_the_app_wherever_it_was_started(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "GENREWIZ_FLAGGING_DIR"} | {"PYTHONPATH": str(ROOT)}
    code = "import inspect, json, app; print(json.dumps(str(inspect.signature(app.build_demo).parameters['flagging_dir'].default)))"
    done = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert Path(json.loads(done.stdout.strip().splitlines()[-1])) == ROOT / ".gradio" / "flagged"
    moved = env | {"GENREWIZ_FLAGGING_DIR": str(tmp_path / "reports")}
    done = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=moved, capture_output=True, text=True, timeout=120)
    assert Path(json.loads(done.stdout.strip().splitlines()[-1])) == tmp_path / "reports"
