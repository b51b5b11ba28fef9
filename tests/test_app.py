"""The Gradio app served for real (in-process server, real model, real gradio_client).

The clips are the files in ``examples/`` when there are any, else synthetic stand-ins. The
model is the bundled checkpoint: whatever it predicts, the app must serve it faithfully.
"""

from __future__ import annotations

import base64
import contextlib
import csv
import dataclasses
import html
import io
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import gradio as gr
import httpx
import numpy as np
import pytest
import soundfile as sf
from gradio_client import Client, handle_file
from gradio_client.exceptions import AppError
from PIL import Image

import app
import serving
from conftest import TEST_MAX_FILE_SIZE, running_app
from encoded import write_encoded
from genrewiz import GTZAN_GENRES, PCRNN, GenreClassifier, Prediction, plots
from genrewiz.hub import BUNDLED_DIR, bundled_source
from synthetic import synth_clip, write_clip

ROOT = Path(__file__).resolve().parents[1]
@pytest.fixture(scope="session")
def short_clip(clips: list[str]) -> str:
    """A clip of at most ~30 s (the common request)."""
    return next(c for c in clips if sf.info(c).duration <= 31)


@pytest.fixture(scope="session")
def predictions(classifier, clips) -> dict[str, Prediction]:
    """What the library itself says about each clip."""
    return {clip: classifier.predict(clip) for clip in clips}


@pytest.fixture(scope="module")
def client(served) -> Client:
    return Client(served[1], verbose=False)


def assert_top5(label: dict) -> None:
    """A ``gr.Label`` value as the client returns it: five genres, best first, probabilities."""
    confidences = label["confidences"]
    assert len(confidences) == 5
    values = [c["confidence"] for c in confidences]
    assert all(0.0 <= v <= 1.0 for v in values)
    assert sum(values) <= 1.0 + 1e-6
    assert values == sorted(values, reverse=True)
    assert {c["label"] for c in confidences} <= set(GTZAN_GENRES)
    assert label["label"] == confidences[0]["label"]


# --- served through gradio_client ---------------------------------------------------------------


def test_api_is_three_named_endpoints_predict_analyse_and_analyse_many(client):
    api = client.view_api(print_info=False, return_format="dict")
    assert list(api["named_endpoints"]) == ["/predict", "/analyse", "/analyse_many"]
    assert [p["component"] for p in api["named_endpoints"]["/analyse_many"]["parameters"]] == ["File"]
    assert [r["component"] for r in api["named_endpoints"]["/predict"]["returns"]] == ["Label", "Image"]
    assert [r["component"] for r in api["named_endpoints"]["/analyse"]["returns"]] == ["Json"]
    for endpoint in ("/predict", "/analyse"):
        assert [p["component"] for p in api["named_endpoints"][endpoint]["parameters"]] == ["Audio"]
    # Every value is named for what it is, not "value_32".
    names = {name: [r["label"] for r in endpoint["returns"]] for name, endpoint in api["named_endpoints"].items()}
    assert names == {
        "/predict": ["Top 5 genres", "What the model heard (mel spectrogram)"],
        "/analyse": ["Analysis"],
        "/analyse_many": ["Results", "Results (CSV)", "Status"],
    }


def test_analyse_gives_an_api_user_what_the_page_shows(client, clips, classifier, predictions):
    """Every genre, the verdict, the durations and the per-window timeline, equal to the library's own answer."""
    long_clip = max(clips, key=lambda c: len(predictions[c].window_starts))
    expected = predictions[long_clip]
    result = client.predict(handle_file(long_clip), api_name="/analyse")
    assert result["file"] == Path(long_clip).name
    assert [g["label"] for g in result["genres"]] == [g for g, _ in expected.top(10)]
    assert [g["confidence"] for g in result["genres"]] == pytest.approx([p for _, p in expected.top(10)], abs=1e-4)
    assert result["verdict"] == app.verdict_text(expected) and result["sure"] is not app.is_unsure(expected)
    assert result["duration_s"] == pytest.approx(expected.duration, abs=0.01)
    assert result["source_duration_s"] == pytest.approx(expected.source_duration, abs=0.01)
    assert result["truncated"] is expected.truncated and result["looped"] is expected.padded
    assert result["music"] == pytest.approx(expected.music, abs=1e-4) and result["music"] >= 0.5
    assert result["window_seconds"] == pytest.approx(classifier.config.window_seconds, abs=1e-3)
    assert len(result["windows"]) == len(expected.window_starts) >= 2
    for window, start, probabilities in zip(result["windows"], expected.window_starts, expected.window_probabilities):
        assert window["start_s"] == pytest.approx(start, abs=1e-3)
        assert window["end_s"] == pytest.approx(min(start + classifier.config.window_seconds, expected.duration), abs=1e-3)
        assert [window["confidences"][g] for g in expected.labels] == pytest.approx(list(probabilities), abs=1e-4)
    assert result["model"]["summary"] == app.trust_sentence(classifier.source.metrics())
    assert result["model"]["weights"] == classifier.source.describe()
    with pytest.raises(AppError, match="unsupported format '.py'"):
        client.predict(handle_file(__file__), api_name="/analyse")


def test_predict_each_example_through_client(client, clips, predictions):
    for clip in clips:
        label, image = client.predict(handle_file(clip), api_name="/predict")
        assert_top5(label)
        # The served numbers are the library's, not a second pipeline's.
        expected = predictions[clip].top(5)
        assert [c["label"] for c in label["confidences"]] == [g for g, _ in expected]
        np.testing.assert_allclose([c["confidence"] for c in label["confidences"]], [p for _, p in expected], atol=1e-5)
        with Image.open(image) as png:
            assert png.format == "PNG"
            assert png.width >= 600 and png.height >= 250


def bad_inputs(folder: Path) -> list[tuple[Path, str]]:
    """The inputs users get wrong, each with the words its error message must contain."""
    folder.mkdir(parents=True, exist_ok=True)
    wav = write_clip(folder / "good.wav", "pad", 5).read_bytes()
    cases = {
        "not_audio.wav": (b"GenreWiz: this is not audio\n" * 200, "not a readable audio file"),
        "truncated.wav": (wav[:20], "not a readable audio file"),
        "header_only.wav": (wav[:44], "no audio frames"),
        "empty.wav": (b"", "empty"),
        "song.m4a": (np.random.default_rng(0).bytes(4096), "not a readable audio file"),
    }
    inputs = []
    for name, (data, phrase) in cases.items():
        (folder / name).write_bytes(data)
        inputs.append((folder / name, phrase))
    sf.write(folder / "silent.wav", np.zeros(5 * 22_050, dtype=np.float32), 22_050)
    inputs.append((folder / "silent.wav", "silent"))
    inputs.append((write_clip(folder / "half_second.wav", "hihat", 0.5), "too short to judge"))
    return inputs


def test_bad_inputs_give_clear_errors_and_the_app_keeps_serving(client, short_clip, tmp_path):
    for path, phrase in bad_inputs(tmp_path):
        with pytest.raises(AppError) as raised:
            client.predict(handle_file(str(path)), api_name="/predict")
        message = str(raised.value)
        assert path.name in message and phrase in message, message
        label, _ = client.predict(handle_file(short_clip), api_name="/predict")
        assert_top5(label)


def test_no_audio_is_a_clear_error(client):
    with pytest.raises(AppError, match="No audio yet"):
        client.predict(None, api_name="/predict")


def test_too_large_files_are_refused(served, client, classifier, short_clip, tmp_path):
    big = tmp_path / "huge.wav"
    big.write_bytes(Path(short_clip).read_bytes() + b"\0" * TEST_MAX_FILE_SIZE)
    # The client checks the server's limit before uploading ...
    with pytest.raises(ValueError, match="exceeds the maximum file size"):
        client.predict(handle_file(str(big)), api_name="/predict")
    # ... a raw upload is refused by the server ...
    with open(big, "rb") as f:
        response = httpx.post(f"{served[1]}gradio_api/upload", files={"files": ("huge.wav", f)}, timeout=60)
    assert response.status_code == 413
    # ... and a file that reaches the handler some other way is refused there.
    with pytest.raises(gr.Error, match="too large"):
        app.classify_file(classifier, big, max_file_size=TEST_MAX_FILE_SIZE)
    label, _ = client.predict(handle_file(short_clip), api_name="/predict")
    assert_top5(label)


def test_the_page_states_the_limit_and_what_it_refused_before_uploading(served, classifier):
    """A file over the limit is kept back by the page's script, which says so through ``refused_files``."""
    config = httpx.get(f"{served[1]}config", timeout=30).json()
    hint = app.input_hint(TEST_MAX_FILE_SIZE, classifier.max_duration)
    assert "up to 8 MB" in hint and "the first 10:00 of a longer recording" in hint and "at least 10 s" in hint
    assert config["max_file_size"] == TEST_MAX_FILE_SIZE  # what the page's script compares sizes with
    payload = json.dumps({"target": "song", "files": [{"name": "<b>live</b>.wav", "size": 130 * 1024 * 1024}], "at": 1})
    target, errors = app.refused_files(payload, TEST_MAX_FILE_SIZE)
    assert target == "song" and errors == [("<b>live</b>.wav", "<b>live</b>.wav: the file is too large (130.0 MB; the limit is 8 MB).")]
    assert app.refused_files("not json", TEST_MAX_FILE_SIZE) == ("", [])
    assert app.refused_files(json.dumps({"target": "batch", "files": []}), None) == ("batch", [])


def test_phone_videos_and_browser_recordings_are_analysed(client, tmp_path):
    for path in phone_and_browser_files(tmp_path):
        result = client.predict(handle_file(str(path)), api_name="/analyse")
        assert result["file"] == path.name and result["duration_s"] == pytest.approx(4.0, abs=0.1)


def test_twenty_concurrent_requests_all_succeed(client, short_clip, monkeypatch):
    monkeypatch.setattr(serving, "PER_CLIENT_QUEUED", 20)  # one client stands for twenty here (the limit: test_serving.py)
    jobs = [client.submit(handle_file(short_clip), api_name="/predict") for _ in range(20)]
    results = [job.result(timeout=300) for job in jobs]
    for label, image in results:
        assert_top5(label)
        assert Path(image).is_file()
    assert len({json.dumps(label, sort_keys=True) for label, _ in results}) == 1


def test_examples_respond_from_the_launch_cache(client, clips, classifier, predictions):
    for index, clip in enumerate(clips):
        verdict, bars, image, timeline, details = client.predict(index, api_name="/load_example")
        assert verdict.startswith("### " + app.escape_markdown(app.verdict_text(predictions[clip])))
        assert bars == app.genre_bars(predictions[clip].top(5))
        assert Path(image).is_file()
        assert app.escape_markdown(Path(clip).name) in details
        # Long examples come with their genre timeline; 30 s clips (one window) hide it.
        assert timeline["visible"] is app.has_timeline(predictions[clip], classifier.config)
        assert (timeline["value"] is not None) is timeline["visible"]
    assert any(Path(c).name.startswith("long_") for c in clips)


def test_page_says_what_the_model_is_how_often_it_is_right_and_which_weights(served, classifier):
    config = httpx.get(f"{served[1]}config", timeout=30).json()

    def shown(elem_id: str) -> list[str]:
        return [c["props"].get("value", "") for c in config["components"] if c.get("props", {}).get("elem_id") == elem_id]

    metrics = classifier.source.metrics()
    assert shown("model-note") == [app.trust_sentence(metrics)]  # one plain sentence
    if str(metrics.get("split")).startswith("filtered"):  # the bundled model's own number, in plain words
        assert shown("model-note")[0].startswith(f"On {metrics['n_clips']} GTZAN clips by artists it never heard, it named the right genre")
    about = shown("about-text")[0]
    assert f"Weights: local checkpoint {BUNDLED_DIR}." in about and "Limits: it knows only the 10 GTZAN genres" in about
    assert [c["props"]["open"] for c in config["components"] if c.get("props", {}).get("elem_id") == "about"] == [False]
    intro = shown("intro")[0]
    assert intro.startswith("# GenreWiz\n") and not any(ord(ch) > 0x2000 for ch in intro)  # no emoji to render as a box
    assert "10 GTZAN genres" in intro


def phone_and_browser_files(folder: Path) -> list[Path]:
    """A phone's video (``.mp4``, AAC) and a browser's recording (``.webm``, Opus): containers the server decodes."""
    samples = synth_clip("pad", 4.0, 48_000)
    mp4 = write_encoded(folder / "phone.m4a", samples, 48_000).rename(folder / "phone video.mp4")
    return [mp4, write_encoded(folder / "recording.webm", samples, 48_000)]


def test_several_files_at_once_give_a_table_and_a_csv(client, clips, predictions, tmp_path):
    bad = tmp_path / "broken.wav"
    bad.write_bytes(b"not audio" * 100)
    notes = tmp_path / "notes.txt"  # refused by no filter: its row says why
    notes.write_text("not a song\n")
    mp4, webm = phone_and_browser_files(tmp_path)
    chosen = [clips[0], str(bad), clips[1], str(mp4), str(notes), str(webm)]
    table, csv_path, status = client.predict([handle_file(p) for p in chosen], api_name="/analyse_many")
    assert status == "4 of 6 files analysed; 2 could not be (see `error`)."
    rows = table["data"]
    column = {name: i for i, name in enumerate(app.BATCH_COLUMNS)}
    assert [row[0] for row in rows] == [Path(p).name for p in chosen]
    for row, path in zip([rows[0], rows[2]], [clips[0], clips[1]]):
        assert row[column["verdict"]] == app.verdict_text(predictions[path])
        assert row[column["genre"]] == predictions[path].top(1)[0][0] and row[column["error"]] == ""
    assert "not a readable audio file" in rows[1][column["error"]]
    assert "unsupported format '.txt'" in rows[4][column["error"]]
    assert all(rows[i][column["verdict"]] and not rows[i][column["error"]] for i in (3, 5)), rows
    assert Path(csv_path).name.startswith("genrewiz-genres-") and Path(csv_path).suffix == ".csv"  # not a random name
    with open(csv_path, newline="", encoding="utf-8") as file:
        written = list(csv.reader(file))
    assert written[0] == list(app.BATCH_COLUMNS) and [r[0] for r in written[1:]] == [Path(p).name for p in chosen]
    too_many = client.predict([handle_file(clips[0])] * (app.BATCH_LIMIT + 1), api_name="/analyse_many")
    assert too_many[0]["data"] in ([], [[]]) and f"at most {app.BATCH_LIMIT} at a time" in too_many[2]


@contextlib.contextmanager
def app_with_own_temp_dir(classifier, tmp_path: Path, delete_cache: tuple[int, int]) -> Iterator[tuple[str, Path]]:
    """A served app (no examples) whose Gradio cache is a folder of this test's own."""
    temp_dir = tmp_path / "gradio-temp"
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("GRADIO_TEMP_DIR", str(temp_dir))
        patch.setattr(app, "DELETE_CACHE", delete_cache)
        with running_app(classifier, [], tmp_path / "examples-cache") as (_, url, _):
            yield url, temp_dir


def files_under(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*") if p.is_file()]


def test_requests_leave_nothing_behind_once_the_server_stops(classifier, short_clip, tmp_path):
    system_temp = set(Path(tempfile.gettempdir()).iterdir())
    with app_with_own_temp_dir(classifier, tmp_path, app.DELETE_CACHE) as (url, temp_dir):
        client = Client(url, verbose=False, download_files=str(tmp_path / "downloads"))
        for _ in range(3):
            assert_top5(client.predict(handle_file(short_clip), api_name="/predict")[0])
        pngs = list((temp_dir / app.SPECTROGRAM_FOLDER).glob("spectrogram-*.png"))
        assert len(pngs) == 3  # served in place from Gradio's cache, not copied there
        assert len(files_under(temp_dir)) == 4  # and the upload (identical content, stored once)
    assert files_under(temp_dir) == []
    assert not [p for p in set(Path(tempfile.gettempdir()).iterdir()) - system_temp if "genrewiz" in p.name]


def test_uploads_and_spectrograms_expire_while_the_server_runs(classifier, short_clip, tmp_path):
    with app_with_own_temp_dir(classifier, tmp_path, (1, 1)) as (url, temp_dir):
        client = Client(url, verbose=False, download_files=str(tmp_path / "downloads"))
        assert_top5(client.predict(handle_file(short_clip), api_name="/predict")[0])
        deadline = time.monotonic() + 60
        while files_under(temp_dir):
            assert time.monotonic() < deadline, files_under(temp_dir)
            time.sleep(0.2)
        assert_top5(client.predict(handle_file(short_clip), api_name="/predict")[0])  # still serving


# --- the pieces of the page ---------------------------------------------------------------------


def test_list_examples_sorted_audio_only(tmp_path):
    for name in ("b.ogg", "a.MP3", "c.flac", "d.wav", "notes.md", "make_examples.py", "e.m4a"):
        (tmp_path / name).write_bytes(b"x")
    (tmp_path / "sub.wav").mkdir()
    assert [Path(p).name for p in app.list_examples(tmp_path)] == ["a.MP3", "b.ogg", "c.flac", "d.wav"]
    assert app.list_examples(tmp_path / "missing") == []


def test_spectrogram_has_the_models_view(classifier, short_clip):
    prediction = classifier.predict(short_clip)
    image = app.spectrogram_image(prediction.mel, classifier.config, "title")
    assert image.dtype == np.uint8 and image.shape == (*plots.SPECTROGRAM_SIZE[::-1], 3)
    assert image.std() > 10  # drawn, not blank


def test_timeline_only_for_songs_longer_than_a_window(classifier, tmp_path):
    short = classifier.predict(write_clip(tmp_path / "short.wav", "pad", 30))
    long = classifier.predict(write_clip(tmp_path / "long.flac", "chirp", 75))
    assert not app.has_timeline(short, classifier.config)
    assert app.has_timeline(long, classifier.config)
    plot = app.timeline_figure(long, classifier.config)
    header, data = plot.plot.split(",", 1)
    assert plot.type == "matplotlib" and header == "data:image/png;base64"  # what gr.Plot shows as an image
    pixels = np.asarray(Image.open(io.BytesIO(base64.b64decode(data))).convert("RGB")).astype(int)
    assert pixels.shape == (*plots.TIMELINE_SIZE[::-1], 3)
    for colour in plots.tab10()[:5]:  # one line (and legend entry) per top-5 genre
        assert (np.abs(pixels - colour).sum(axis=2) < 12).sum() > 40


def test_details_say_when_a_song_was_cut_or_looped(classifier, tmp_path):
    capped = GenreClassifier(classifier.model, classifier.source, max_duration=40)
    cut = capped.predict(write_clip(tmp_path / "long.flac", "chirp", 75))
    assert app.analysed_span(cut) == "first 0:40 of 1:15 analysed"
    assert "Only the first 0:40" in app.details_markdown("long.flac", cut, classifier.config)
    looped = classifier.predict(write_clip(tmp_path / "short.wav", "pad", 3))
    assert app.analysed_span(looped) == "3.0 s analysed"
    assert "looped" in app.details_markdown("short.wav", looped, classifier.config)


def test_trust_sentence_reads_either_evaluation_metrics_json_holds():
    filtered = {"protocol": "whole-clip prediction on the artist-filtered valid split", "split": "filtered/valid",
                "n_clips": 93, "accuracy": 0.8064516, "balanced_accuracy": 0.6856, "macro_f1": 0.6654}
    assert app.trust_sentence(filtered) == "On 93 GTZAN clips by artists it never heard, it named the right genre 81% of the time."
    kfold = {"protocol": "stratified 5-fold cross-validation over 80 clips", "split": "kfold", "folds": 5,
             "n_clips": 80, "accuracy": 0.5, "accuracy_std": 0.125}
    assert app.trust_sentence(kfold) == (
        "In a cross-validation on 80 GTZAN clips it named the right genre 50% of the time "
        "(optimistic: clips by one artist can be on both sides)."
    )
    extended = filtered | {"field": {"accuracy": 0.52, "n_clips": 46}, "recorded": {"accuracy": 0.4, "n_clips": 20}}
    assert app.trust_sentence(extended) == (
        "On 93 GTZAN clips by artists it never heard, it named the right genre 81% of the time; "
        "on 46 real recordings from outside GTZAN, 52%; on 20 recordings of those clips through simulated phone, laptop and call microphones, 40%."
    )
    assert app.trust_sentence({"field": {"accuracy": 0.52, "n_clips": 46}}) == (
        "On 46 real recordings from outside GTZAN, it named the right genre 52% of the time."
    )
    for missing in (None, {}, {"accuracy": 0.8}, {"field": {"accuracy": 3, "n_clips": 4}}):
        assert app.trust_sentence(missing) == "No measured accuracy ships with these weights: take its answers as a guess."


def test_weights_line_links_hub_weights_and_keeps_fallback_reasons_off_the_page(tmp_path):
    PCRNN().save_pretrained(tmp_path)
    source = GenreClassifier.from_pretrained(tmp_path).source
    assert app.cnn_branch(source) == "scratch"
    assert app.about_markdown(source, None, GTZAN_GENRES).endswith(f"\n\nWeights: local checkpoint {tmp_path}.")
    hub = dataclasses.replace(source, kind="hub", location="genrewiz/pcrnn-gtzan", revision="3f2a1c9d" * 5)
    assert app.weights_line(hub) == (
        "Weights: [Hub genrewiz/pcrnn-gtzan @ 3f2a1c9](https://huggingface.co/genrewiz/pcrnn-gtzan/tree/" + "3f2a1c9d" * 5 + ")."
    )
    offline = dataclasses.replace(bundled_source(), fallback_reason="genrewiz/pcrnn-gtzan could not be fetched from the Hub: offline")
    assert app.weights_line(offline) == "Weights: the weights bundled with GenreWiz (genrewiz/weights)."


def test_percentages_never_round_into_a_claim(classifier, tmp_path):
    assert [app.percent(p) for p in (0.9955, 1.0, 0.004, 0.0, 0.42)] == ["over 99%", "over 99%", "under 1%", "under 1%", "42%"]
    prediction = classifier.predict(write_clip(tmp_path / "clip.wav", "pad", 3))
    # The page's verdict and its bars write the same figures, and neither contradicts the words.
    for probabilities, heading, figures in [
        ([0.4969, 0.30], "Not sure, leaning blues", ["49.7%", "30%"]),
        ([0.9996, 0.0003], "Most likely blues", ["over 99%", "under 1%"]),
        ([0.6054, 0.4556], "Not sure: blues or classical?", ["60.5%", "46%"]),
    ]:
        rest = (1.0 - sum(probabilities)) / 8
        answer = with_probabilities(prediction, [*probabilities, *[rest] * 8])
        assert app.verdict_markdown(answer).startswith(f"### {app.escape_markdown(heading)}\n")
        for figure in figures:
            assert figure in app.verdict_markdown(answer).split("\n")[1]
            assert f'<span class="share">{figure}</span>' in app.genre_bars(answer.top(5))
        assert "100%" not in app.genre_bars(answer.top(5)) and ">0%<" not in app.genre_bars(answer.top(5))


def with_probabilities(prediction: Prediction, probabilities: list[float]) -> Prediction:
    """``prediction`` with these genre probabilities, as for a whole song the model hears as music (the rule under test is the genre's)."""
    music = np.ones_like(prediction.window_music) if prediction.window_music is not None else None
    return dataclasses.replace(prediction, probabilities=np.array(probabilities), window_music=music, duration=30.0,
                               source_duration=30.0)


@pytest.mark.parametrize(
    "top, sure",
    [((0.72, 0.20), True), ((0.51, 0.35), True), ((0.60, 0.45), True), ((0.70, 0.55), True), ((0.45, 0.40), False),
     ((0.55, 0.41), False), ((0.60, 0.46), False), ((0.45, 0.10), False)],
)
def test_an_unsure_answer_says_so(classifier, tmp_path, top, sure):
    """Under 50 %, or less than 15 points ahead of the second genre: a question, not a bold genre.

    Exactly 15 points ahead is sure (0.70 - 0.55 computes as 0.1499...); a weak top genre with the
    second far behind is "leaning", not a toss-up between the two.
    """
    prediction = classifier.predict(write_clip(tmp_path / "clip.wav", "pad", 3))
    rest = (1.0 - sum(top)) / 8
    answer = with_probabilities(prediction, [top[0], top[1], *[rest] * 8])
    first, second = answer.labels[:2]
    assert app.is_unsure(answer) is not sure
    if sure:
        assert app.verdict_text(answer) == f"Most likely {first}"
        assert app.verdict_markdown(answer).startswith(f"### Most likely {first}\n{top[0]:.0%}, ahead of {second}")
    elif top[0] - top[1] >= 0.15:
        assert app.verdict_text(answer) == f"Not sure, leaning {first}"
        assert app.verdict_markdown(answer) == (
            f"### {app.escape_markdown(f'Not sure, leaning {first}')}\n{top[0]:.0%}, ahead of {second} at {top[1]:.0%}, but the top genre is under 50%."
        )
    else:
        assert app.verdict_text(answer) == f"Not sure: {first} or {second}?"
        heading = app.escape_markdown(f"Not sure: {first} or {second}?")
        assert app.verdict_markdown(answer).startswith(f"### {heading}\n{first} {top[0]:.0%}, {second} {top[1]:.0%}: the top genre is")
        reason = app.verdict_markdown(answer).rsplit(": ", 1)[1]
        assert ("under 50%" in reason) is (top[0] < 0.5) and ("15 points ahead" in reason) is (top[0] - top[1] < 0.15)
        details = app.details_markdown("clip.wav", answer, classifier.config)
        assert first not in details and "%" not in details  # the details never restate (or contradict) the verdict


def test_an_error_is_shown_literally_in_the_verdicts_place():
    message = "<img src=x>[a](b).wav: not a readable audio file"
    assert app.error_markdown(message) == "### Can't analyse this audio\n" + app.escape_markdown(message)
    assert "\\<img src\\=x\\>\\[a\\]\\(b\\)" in app.error_markdown(message)


# --- what a Space runs ----------------------------------------------------------------------------


@pytest.mark.slow
def test_python_app_py_serves_the_model_named_in_genrewiz_model(tmp_path, short_clip):
    checkpoint = tmp_path / "checkpoint"
    PCRNN().save_pretrained(checkpoint)
    (checkpoint / "metrics.json").write_text(json.dumps({"accuracy": 0.5, "n_clips": 40, "split": "filtered/valid"}))
    env = os.environ | {  # no port given: the app binds the first free one and prints its URL
        "GENREWIZ_MODEL": str(checkpoint),
        "PYTHONUNBUFFERED": "1",
        "GRADIO_EXAMPLES_CACHE": str(tmp_path / "cache"),
        "GRADIO_TEMP_DIR": str(tmp_path / "gradio-temp"),
        "HF_HUB_OFFLINE": "1",
        "GENREWIZ_FLAGGING_DIR": str(tmp_path / "flagged"),
    }
    log = open(tmp_path / "app.log", "wb")
    process = subprocess.Popen([sys.executable, "app.py"], cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 180
        while not (started := re.search(r"Running on local URL:\s+(\S+)", (tmp_path / "app.log").read_text())):
            assert process.poll() is None and time.monotonic() < deadline, (tmp_path / "app.log").read_text()
            time.sleep(0.5)
        url = started.group(1).rstrip("/") + "/"
        client = Client(url, verbose=False)
        label, _ = client.predict(handle_file(short_clip), api_name="/predict")
        assert_top5(label)
        config = httpx.get(f"{url}config", timeout=30).json()
        shown = json.dumps(config, ensure_ascii=False)
        assert "On 40 GTZAN clips by artists it never heard, it named the right genre 50% of the time." in shown
        assert f"Weights: local checkpoint {checkpoint}." in shown
    finally:
        process.terminate()
        process.wait(timeout=30)
        log.close()
    # SIGTERM ends the server through Gradio's shutdown, which deletes the spectrograms it served.
    assert not [p for p in files_under(tmp_path / "gradio-temp") if p.suffix == ".png"]


def test_write_png_gives_each_request_its_own_file_and_cleans_up(tmp_path):
    pixels = np.zeros((20, 30, 3), dtype=np.uint8)
    first, second = app.write_png(pixels, tmp_path), app.write_png(pixels, tmp_path)
    assert first != second
    assert Image.open(first).size == (30, 20) and Image.open(second).size == (30, 20)
    os.utime(first, (0, 0))
    third = app.write_png(pixels, tmp_path)
    assert not Path(first).exists() and Path(second).exists() and Path(third).exists()


@pytest.mark.parametrize(
    "name",
    [
        "[x](javascript:alert(13)).wav",
        "<img src=x onerror=alert(1)>.wav",
        "**bold** _it_ `code` ~~gone~~ # h.mp3",
        "$$x^2$$ &amp; www.example.com.ogg",
        "line\nbreak\u202e.flac",
    ],
)
def test_file_names_are_shown_literally_in_the_details(classifier, tmp_path, name):
    markdown_it = pytest.importorskip("markdown_it")
    prediction = classifier.predict(write_clip(tmp_path / "clip.wav", "pad", 3))
    details = app.details_markdown(name, prediction, classifier.config)
    first = markdown_it.MarkdownIt("commonmark").render(details.split("\n\n")[0])
    assert "<a" not in first and "<img" not in first and "<em" not in first and "<code" not in first
    shown = re.search(r"<strong>(.*?)</strong>", first, re.S).group(1)
    assert html.unescape(shown) == name.replace("\n", " ").replace("\u202e", " ")


def test_error_messages_cannot_carry_html(classifier, tmp_path):
    path = tmp_path / "<img src=x onerror=alert(1)> & co.wav"
    path.write_bytes(b"not audio at all")
    with pytest.raises(gr.Error) as raised:
        app.classify_file(classifier, path)
    assert "&lt;img src=x onerror=alert(1)&gt; & co.wav: not a readable audio file" in str(raised.value)


def test_non_music_and_short_clips_say_so_in_the_verdict(client, tmp_path):
    """A hiss gets "This doesn't sound like music" (genres greyed on the page); a 3 s clip of a song says it is short."""
    from train import nonmusic

    hiss = tmp_path / "hiss.wav"
    sf.write(hiss, nonmusic.GENERATORS["white noise"](np.random.default_rng(7), 32_000, 15.0), 32_000)
    result = client.predict(handle_file(str(hiss)), api_name="/analyse")
    assert result["verdict"] == "This doesn't sound like music" and result["music"] < 0.5 and not result["sure"]
    song = sf.read(Path(app.EXAMPLES_DIR) / "metal_chaos_god.ogg")
    short = tmp_path / "short.wav"
    sf.write(short, song[0][: 3 * song[1]], song[1])
    result = client.predict(handle_file(str(short)), api_name="/analyse")
    assert result["verdict"].startswith("Short clip (3 s): ") and result["music"] >= 0.5


def test_the_page_greys_the_genres_of_what_is_not_music(classifier, tmp_path):
    from train import nonmusic

    prediction = classifier.predict(nonmusic.GENERATORS["mains hum"](np.random.default_rng(3), 32_000, 20.0), 32_000)
    heading = app.escape_markdown("This doesn't sound like music")
    assert app.verdict_markdown(prediction).startswith(f"### {heading}\n")
    assert 'class="genre-bars not-music"' in app.genre_bars(prediction.top(5), music=False)
