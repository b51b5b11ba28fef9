"""The app in a real browser: headless Debian Chromium driven by Python Playwright.

No browser is downloaded: Playwright drives the system Chromium (``/usr/bin/chromium``, or
``$GENREWIZ_CHROMIUM``) with a fresh profile. Where Chromium or Playwright is missing the test
is skipped with the reason; CI sets ``GENREWIZ_REQUIRE_BROWSER=1`` to make that a failure.
"""

from __future__ import annotations

import base64
import os
import re
import shutil
import time
from pathlib import Path

import pytest

import app
from conftest import TEST_MAX_FILE_SIZE
from genrewiz import GTZAN_GENRES, plots
from encoded import write_encoded
from synthetic import SONG, synth_clip, write_clip

pytestmark = [pytest.mark.browser, pytest.mark.slow]

CHROMIUM = os.environ.get("GENREWIZ_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
]
FAKE_MICROPHONE_FLAGS = ["--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream"]
"""Grant the microphone without a prompt and feed it ``--use-file-for-fake-audio-capture``."""
TIMEOUT_MS = 90_000
"""Generous: the first prediction on two busy cores takes a few seconds."""
MUSIC_PROCESSING = ("echoCancellation", "noiseSuppression", "autoGainControl")
"""The browser's voice processing, which must be off for music (``app_head.js``)."""
RECORD_STREAMS_JS = """(() => {
  window.recordedStreams = [];
  const devices = navigator.mediaDevices, getUserMedia = devices.getUserMedia.bind(devices);
  devices.getUserMedia = async (constraints) => { const stream = await getUserMedia(constraints); window.recordedStreams.push(stream); return stream; };
})();"""
"""Runs before the page's own scripts: keeps each stream the page gets, to read its tracks' settings."""


def require_browser() -> None:
    """Skip (or, with ``GENREWIZ_REQUIRE_BROWSER=1``, fail) when no browser can be driven here."""
    reason = None
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        reason = "Python playwright is not installed (pip install playwright; it drives the system Chromium)"
    if reason is None and not os.access(CHROMIUM, os.X_OK):
        reason = f"no Chromium executable at {CHROMIUM} (apt-get install chromium, or set GENREWIZ_CHROMIUM)"
    if reason is not None:
        if os.environ.get("GENREWIZ_REQUIRE_BROWSER") == "1":
            pytest.fail(f"browser test required but impossible here: {reason}")
        pytest.skip(reason)


LAYOUT_JS = """() => {
  const box = (sel) => { const e = document.querySelector(sel); if (!e) return null;
    const b = e.getBoundingClientRect(); return {x: b.x, y: b.y, w: b.width, h: b.height, right: b.right, bottom: b.bottom}; };
  const label = (sel) => { const e = document.querySelector(sel + ' [data-testid="block-label"]');
    return e ? {scroll: e.scrollWidth, client: e.clientWidth, bottom: e.getBoundingClientRect().bottom} : null; };
  return {spectrogram: box('#spectrogram img'), timeline: box('#timeline img'), spectrogramBlock: box('#spectrogram'),
          song: label('#song'), spectrogramLabel: label('#spectrogram'), timelineLabel: label('#timeline'),
          verdict: box('#verdict'), examples: box('#examples'), genres: box('#genres'),
          spectrogramNatural: document.querySelector('#spectrogram img')?.naturalWidth,
          timelineNatural: document.querySelector('#timeline img')?.naturalWidth,
          viewport: {w: window.innerWidth, h: window.innerHeight}, pageWidth: document.documentElement.scrollWidth};
}"""
"""Where the page put the figures, the audio label and the verdict, in CSS pixels."""
SETTLED_JS = f"""() => {{
  const now = JSON.stringify(({LAYOUT_JS})());
  const images = [...document.querySelectorAll('#spectrogram img, #timeline img')];
  const loaded = images.length > 0 && images.every((i) => i.complete && i.naturalWidth > 0);
  window.__still = loaded && now === window.__layout ? (window.__still || 0) + 1 : 0;
  window.__layout = now;
  return window.__still >= 10;
}}"""
"""True once the figures have loaded and the layout has held still for ten animation frames (polled each frame)."""
TOAST_WATCH_JS = """window.__toasts = 0;
new MutationObserver(() => { if (document.querySelector('[data-testid="toast-body"]')) window.__toasts += 1; })
  .observe(document, {childList: true, subtree: true});"""
"""Counts the page's changes while a Gradio pop-up (toast) shows: any at all is a message that fades."""
NEXT_FRAMES_JS = "() => new Promise((done) => requestAnimationFrame(() => requestAnimationFrame(() => done(true))))"
RECORDED_JS = """(seconds) => { const shown = document.querySelector('#song .timestamps time.duration');
  const [minutes, secs] = shown ? shown.textContent.trim().split(':').map(Number) : [0, 0];
  return minutes * 60 + secs >= seconds; }"""
"""True once the recorder's clock shows ``seconds`` recorded."""


def check_desktop_layout(layout: dict) -> None:
    """1366x900: both figures fill the same column width (so their time axes line up), above the fold."""
    spectrogram, timeline = layout["spectrogram"], layout["timeline"]
    assert abs(spectrogram["x"] - timeline["x"]) <= 1 and abs(spectrogram["w"] - timeline["w"]) <= 1, layout
    assert spectrogram["w"] >= 600 and timeline["bottom"] <= layout["viewport"]["h"], layout
    assert layout["spectrogramLabel"]["bottom"] <= spectrogram["y"] + 1, "the panel label covers the figure"
    assert layout["timelineLabel"]["bottom"] <= timeline["y"] + 1, "the panel label covers the figure"
    assert layout["song"]["scroll"] <= layout["song"]["client"], "the audio label is cut off"


def check_phone_layout(layout: dict) -> None:
    """390x844: one column in reading order, the figures fitted to the screen: nothing cut off, nothing to scroll sideways."""
    width = layout["viewport"]["w"]
    for figure in (layout["spectrogram"], layout["timeline"]):
        assert figure["x"] >= 0 and figure["right"] <= width + 1, layout  # title, axes, colour bar and legend in view
        assert figure["w"] >= 0.8 * width, layout  # as wide as the screen allows, not a thumbnail
    assert layout["pageWidth"] <= width, "the page scrolls sideways"
    assert layout["song"]["scroll"] <= layout["song"]["client"], "the audio label is cut off"
    assert layout["spectrogramLabel"]["bottom"] <= layout["spectrogram"]["y"] + 1, "the panel label covers the figure"
    assert layout["verdict"]["w"] <= width, layout
    # reading order: the verdict and genres, then the figures, and only then the examples
    assert layout["verdict"]["bottom"] <= layout["genres"]["y"] + 1 <= layout["spectrogram"]["y"] + 1, layout
    assert layout["timeline"]["bottom"] <= layout["examples"]["y"] + 1, layout
    # the figures' text at a readable size: drawn for this width, not shrunk from a 1000 px picture to 4 px
    for figure in ("spectrogram", "timeline"):
        assert plots.TEXT_SIZE * layout[figure]["w"] / layout[f"{figure}Natural"] >= 8, layout


BATCH_JS = """() => {
  const table = document.querySelector('#batch-table').getBoundingClientRect();
  const cells = [...document.querySelectorAll('#batch-table [role="gridcell"][data-col="2"]')]
    .filter((cell) => cell.innerText.trim()).map((cell) => { const b = cell.getBoundingClientRect();
      return {text: cell.innerText, x: b.x, right: b.right, w: b.width, visible: getComputedStyle(cell).display !== 'none'}; });
  return {table: {x: table.x, right: table.right}, errors: cells, viewport: window.innerWidth};
}"""
"""Where the batch table's error cells are, in CSS pixels."""


def drop_file(page, selector: str, path: Path, name: str) -> None:
    """Drop ``path`` (as ``name``, with the type a browser gives it) on the element at ``selector``, as a drag from the desktop does."""
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    page.evaluate(
        """([selector, data, name]) => {
          const bytes = Uint8Array.from(atob(data), (c) => c.charCodeAt(0));
          const transfer = new DataTransfer();
          transfer.items.add(new File([bytes], name, {type: name.endsWith('.mp4') ? 'video/mp4' : ''}));
          const zone = document.querySelector(selector);
          zone.dispatchEvent(new DragEvent('dragenter', {bubbles: true, dataTransfer: transfer}));
          zone.dispatchEvent(new DragEvent('drop', {bubbles: true, cancelable: true, dataTransfer: transfer}));
        }""",
        [selector, data, name],
    )


def check_batch_errors_in_view(batch: dict, count: int) -> None:
    """Every error cell shown, inside the table and the screen: none runs off the right edge or hides."""
    assert len(batch["errors"]) == count, batch
    for cell in batch["errors"]:
        assert cell["visible"] and cell["w"] >= 80, batch
        assert batch["table"]["x"] - 1 <= cell["x"] and cell["right"] <= min(batch["table"]["right"], batch["viewport"]) + 1, batch


def test_upload_record_examples_in_chromium(classifier, served, clips, tmp_path):
    require_browser()
    from playwright.sync_api import expect, sync_playwright

    _, url, cache_dir = served  # the app the API tests use: it serves every session the same page
    upload = next(e for e in clips if not Path(e).name.startswith("long_"))
    long_example = next(e for e in clips if Path(e).name.startswith("long_"))
    not_audio = tmp_path / "not_audio.wav"
    not_audio.write_bytes(b"GenreWiz: this is not audio\n" * 200)
    microphone = write_clip(tmp_path / "microphone.wav", SONG, 10, sample_rate=44_100)
    too_large = tmp_path / "live concert.wav"
    too_large.write_bytes(Path(upload).read_bytes() + b"\0" * TEST_MAX_FILE_SIZE)
    phone_video = write_encoded(tmp_path / "phone.m4a", synth_clip(SONG, 12.0, 48_000), 48_000).rename(tmp_path / "phone video.mp4")
    recording = write_encoded(tmp_path / "recording.webm", synth_clip(SONG, 12.0, 48_000, seed=1), 48_000)
    notes = tmp_path / "notes.txt"
    notes.write_text("not a song\n")
    genres = re.compile("|".join(GTZAN_GENRES))
    # The fixture's synthetic clips may be heard as no music, and the 3 s recording is a short clip.
    verdicts = re.compile(r"^(Short clip \(\d+ s\): )?(most likely|not sure: |not sure, leaning |this doesn't sound like music)",
                          re.IGNORECASE)

    with sync_playwright() as pw:
        browser = pw.chromium.launch_persistent_context(
            str(tmp_path / "chromium-profile"),  # fresh --user-data-dir
            executable_path=CHROMIUM,
            headless=True,
            args=[*CHROMIUM_FLAGS, *FAKE_MICROPHONE_FLAGS, f"--use-file-for-fake-audio-capture={microphone}"],
            viewport={"width": 1366, "height": 900},
        )
        browser.set_default_timeout(TIMEOUT_MS)
        expect.set_options(timeout=TIMEOUT_MS)  # assertions wait as long as actions: two busy cores are slow
        browser.add_init_script(RECORD_STREAMS_JS)
        try:
            page = browser.new_page()
            page.goto(url)
            # The page says what it takes: the upload limit, how much of a long file is heard, how long to record.
            expect(page.locator("#input-hint")).to_contain_text("up to 8 MB")
            expect(page.locator("#input-hint")).to_contain_text("the first 10:00 of a longer recording are analysed")
            expect(page.locator("#input-hint")).to_contain_text("at least 10 s")
            expect(page.locator("#model-note")).to_have_text(app.trust_sentence(classifier.source.metrics()))
            expect(page.locator("#about-text")).to_be_hidden()  # the details wait behind the accordion
            page.locator("#about").get_by_text("About the model").click()
            expect(page.locator("#about-text")).to_contain_text("Weights: local checkpoint")

            # Upload a clip: a verdict in words, its top genre, spectrogram and details appear.
            page.locator('#song input[data-testid="file-upload"]').set_input_files(upload)
            expect(page.locator("#details")).to_contain_text(Path(upload).name)
            expect(page.locator("#verdict h3")).to_have_text(verdicts)
            assert page.locator("#verdict h3").inner_text() == app.verdict_text(classifier.predict(upload))
            top = page.locator('h2[data-testid="label-output-value"]')
            expect(top).to_have_count(0)  # the genre bars, without a second bold heading beside the verdict
            expect(page.locator("#genres")).to_contain_text(genres)
            expect(page.locator("#spectrogram img")).to_be_visible()
            bars = page.locator("#genres .share").all_inner_texts()
            assert len(bars) == 5 and "100%" not in bars and "0%" not in bars, bars
            page.screenshot(path=tmp_path / "genrewiz-upload.png", full_page=True)

            # "This answer is wrong": the right genre goes to the maintainer's CSV.
            page.locator("#flag").get_by_text("Is this answer wrong?").click()
            page.locator("#right-genre input").click()
            page.get_by_role("option", name="jazz", exact=True).click()
            page.locator("#flag-button").click()
            expect(page.locator("#flag-status")).to_contain_text("Thanks: saved")
            flagged = (cache_dir.with_name(cache_dir.name + "-flagged") / "reports.csv").read_text(encoding="utf-8")
            assert Path(upload).name in flagged and ",jazz," in flagged
            page.locator("#flag-button").click()  # one analysis, one report
            expect(page.locator("#flag-status")).to_contain_text("Already reported")

            # A cached example shows at once, with its genre timeline, both figures one above the other.
            page.get_by_text(Path(long_example).name, exact=True).first.click()
            expect(page.locator("#details")).to_contain_text(Path(long_example).name)
            expect(page.locator("#timeline img")).to_be_visible()
            page.wait_for_function(SETTLED_JS, polling="raf")
            check_desktop_layout(page.evaluate(LAYOUT_JS))
            expect(page.locator("#flag-status")).not_to_contain_text("Already")  # the old result's report is gone with it
            expect(page.locator("#right-genre input")).to_have_value("")  # and so is its chosen genre
            page.locator("#right-genre input").click()
            page.get_by_role("option", name="blues", exact=True).click()
            page.locator("#flag-button").click()  # an example's answer is on screen, not "no song yet"
            expect(page.locator("#flag-status")).to_contain_text("The examples' answers are fixed")
            page.screenshot(path=tmp_path / "genrewiz-desktop.png")

            # The same page on a phone.
            page.set_viewport_size({"width": 390, "height": 844})
            page.wait_for_function(SETTLED_JS, polling="raf")
            check_phone_layout(page.evaluate(LAYOUT_JS))
            page.screenshot(path=tmp_path / "genrewiz-phone.png", full_page=True)
            # Tapping an example far down the page brings its verdict into view.
            example = next(e for e in clips if e != long_example)
            page.get_by_text(Path(example).name, exact=True).first.click()
            expect(page.locator("#details")).to_contain_text(Path(example).name)
            expect(page.locator("#verdict")).to_be_in_viewport()
            page.screenshot(path=tmp_path / "genrewiz-phone-example.png")

            # A phone's video and a browser's recording: the file picker offers them and the page analyses them.
            page = browser.new_page()
            page.add_init_script(TOAST_WATCH_JS)
            page.goto(url)
            with page.expect_file_chooser() as chooser:
                page.locator("#song .upload-container").first.click()
            accepted = page.locator('#song input[data-testid="file-upload"]').get_attribute("accept").split(",")
            assert {"audio/*", "video/mp4", "video/webm", ".mp4", ".webm", ".m4a"} <= set(accepted), accepted
            chooser.value.set_files(phone_video)
            expect(page.locator("#details")).to_contain_text("phone video.mp4")
            expect(page.locator("#verdict h3")).to_have_text(verdicts)
            page.locator("#song").get_by_role("button", name="Clear").click()
            page.locator('#song input[data-testid="file-upload"]').set_input_files(recording)
            expect(page.locator("#details")).to_contain_text("recording.webm")
            expect(page.locator("#verdict h3")).to_have_text(verdicts)
            page.locator("#song").get_by_role("button", name="Clear").click()
            drop_file(page, "#song .upload-container", phone_video, "dropped video.mp4")  # dragged in, not chosen
            expect(page.locator("#details")).to_contain_text("dropped video.mp4")

            # Several files: every one gets a row (the refused ones with the reason), errors in view, a CSV named for what it is.
            page.locator("#batch").get_by_text("Several files at once").click()
            page.locator('#batch-files input[data-testid="file-upload"]').set_input_files([upload, notes, too_large, phone_video, recording])
            expect(page.locator("#batch-status")).to_contain_text("Not uploaded: live concert.wav: the file is too large")
            page.locator("#batch-button").click()
            expect(page.locator("#batch-status")).to_contain_text("3 of 5 files analysed; 2 could not be")
            expect(page.locator("#batch-csv")).to_contain_text(re.compile(r"genrewiz-genres-\d{8}-\d{6}"))
            page.wait_for_timeout(500)
            check_batch_errors_in_view(page.evaluate(BATCH_JS), 2)
            page.set_viewport_size({"width": 390, "height": 844})
            page.locator("#batch-table").scroll_into_view_if_needed()
            page.wait_for_timeout(500)
            check_batch_errors_in_view(page.evaluate(BATCH_JS), 2)
            page.screenshot(path=tmp_path / "genrewiz-batch-phone.png")

            # A file over the upload limit: its message stays in the verdict's place, no toast that fades into "Error".
            page = browser.new_page()
            page.add_init_script(TOAST_WATCH_JS)
            page.goto(url)
            expect(page.locator("#input-hint")).to_contain_text("up to 8 MB")  # the page's load event has run
            page.locator('#song input[data-testid="file-upload"]').set_input_files(too_large)
            expect(page.locator("#verdict")).to_contain_text("Can't analyse this audio")
            expect(page.locator("#verdict")).to_contain_text("live concert.wav: the file is too large")
            expect(page.locator("#verdict")).to_contain_text("the limit is 8 MB")
            page.wait_for_timeout(12_000)  # longer than Gradio's pop-ups last
            expect(page.locator("#verdict")).to_contain_text("the file is too large")
            expect(page.locator('[data-testid="toast-body"]')).to_have_count(0)
            expect(page.locator("#song")).not_to_contain_text("Error")

            # Bad input: the message stays where the result would be (no pop-up that fades), until the next input.
            page.locator('#song input[data-testid="file-upload"]').set_input_files(not_audio)
            expect(page.locator("#verdict")).to_contain_text("Can't analyse this audio")
            expect(page.locator("#verdict")).to_contain_text("not_audio.wav: not a readable audio file")
            page.wait_for_function(NEXT_FRAMES_JS)  # a pop-up sent with the answer is drawn by now
            assert page.evaluate("window.__toasts") == 0, "the error was shown in a pop-up that fades"
            expect(page.locator('[data-testid="toast-body"]')).to_have_count(0)
            expect(page.locator("#genres")).not_to_contain_text("Error")
            page.screenshot(path=tmp_path / "genrewiz-error.png")
            page.locator("#song").get_by_role("button", name="Clear").click()
            expect(page.locator("#verdict")).not_to_contain_text("Can't analyse this audio")
            page.locator('#song input[data-testid="file-upload"]').set_input_files(upload)
            expect(page.locator("#verdict h3")).to_have_text(verdicts)

            # Record from the (fake) microphone, with the browser's voice processing off: stopping the recording classifies it.
            page = browser.new_page()
            page.goto(url)
            page.get_by_role("button", name="Record audio").click()
            page.get_by_role("button", name="Record", exact=True).click()
            page.wait_for_function(RECORDED_JS, arg=3)
            page.get_by_role("button", name="Stop", exact=True).locator("visible=true").first.click()
            expect(page.locator("#details")).to_contain_text("audio.wav")
            expect(page.locator("#verdict h3")).to_have_text(verdicts)
            settings = page.evaluate(
                "() => window.recordedStreams.flatMap((stream) => stream.getAudioTracks().map((track) => track.getSettings()))"
            )
            assert settings, "the page never opened the microphone"
            for track in settings:
                assert {name: track.get(name) for name in MUSIC_PROCESSING} == dict.fromkeys(MUSIC_PROCESSING, False), track
            page.screenshot(path=tmp_path / "genrewiz-microphone.png", full_page=True)
        finally:
            browser.close()
    for name in ("upload", "desktop", "phone", "error", "batch-phone"):
        assert (tmp_path / f"genrewiz-{name}.png").stat().st_size > 10_000
    if os.environ.get("GENREWIZ_SCREENSHOTS"):  # keep them to look at
        keep = Path(os.environ["GENREWIZ_SCREENSHOTS"])
        keep.mkdir(parents=True, exist_ok=True)
        for shot in tmp_path.glob("genrewiz-*.png"):
            shutil.copy(shot, keep)
