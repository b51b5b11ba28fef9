"""The app in a real browser: headless Debian Chromium driven by Python Playwright.

No browser is downloaded: Playwright drives the system Chromium (``/usr/bin/chromium``, or
``$GENREWIZ_CHROMIUM``) with a fresh profile. Where Chromium or Playwright is missing the test
is skipped with the reason; CI sets ``GENREWIZ_REQUIRE_BROWSER=1`` to make that a failure.
"""

from __future__ import annotations

import os
import re
import time
from pathlib import Path

import pytest

import app
from genrewiz import GTZAN_GENRES, GenreClassifier
from genrewiz.hub import BUNDLED_DIR
from synthetic import write_clip
from test_app import running_app

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


def test_upload_record_examples_in_chromium(tmp_path):
    require_browser()
    from playwright.sync_api import expect, sync_playwright

    classifier = GenreClassifier.from_pretrained(BUNDLED_DIR)
    examples = app.list_examples() or [
        str(write_clip(tmp_path / "examples" / "pad.wav", "pad", 30)),
        str(write_clip(tmp_path / "examples" / "long_chirp.flac", "chirp", 75)),
    ]
    upload = next(e for e in examples if not Path(e).name.startswith("long_"))
    long_example = next(e for e in examples if Path(e).name.startswith("long_"))
    not_audio = tmp_path / "not_audio.wav"
    not_audio.write_bytes(b"GenreWiz: this is not audio\n" * 200)
    microphone = write_clip(tmp_path / "microphone.wav", "pad", 10, sample_rate=44_100)
    genres = re.compile("|".join(GTZAN_GENRES))

    with running_app(classifier, examples, tmp_path / "examples-cache") as (_, url, _), sync_playwright() as pw:
        browser = pw.chromium.launch_persistent_context(
            str(tmp_path / "chromium-profile"),  # fresh --user-data-dir
            executable_path=CHROMIUM,
            headless=True,
            args=[*CHROMIUM_FLAGS, *FAKE_MICROPHONE_FLAGS, f"--use-file-for-fake-audio-capture={microphone}"],
            viewport={"width": 1280, "height": 1400},
        )
        browser.set_default_timeout(TIMEOUT_MS)
        try:
            page = browser.new_page()
            page.goto(url)
            expect(page.locator("#model-note")).to_contain_text("Model: local checkpoint")

            # Upload a clip: its top genre, spectrogram and details appear.
            page.locator('input[data-testid="file-upload"]').set_input_files(upload)
            expect(page.locator("#details")).to_contain_text(Path(upload).name)
            top = page.locator('h2[data-testid="label-output-value"]')
            expect(top).to_have_text(genres)
            assert top.inner_text().strip() == classifier.predict(upload).genre
            expect(page.locator("#spectrogram img")).to_be_visible()
            page.screenshot(path=tmp_path / "genrewiz-upload.png", full_page=True)

            # A cached example shows at once, with its genre timeline.
            page.get_by_text(Path(long_example).name, exact=True).first.click()
            expect(page.locator("#details")).to_contain_text(Path(long_example).name)
            expect(page.locator("#timeline")).to_be_visible()
            page.screenshot(path=tmp_path / "genrewiz-example.png", full_page=True)

            # Bad input: a clear message, and the page keeps working.
            page = browser.new_page()
            page.goto(url)
            page.locator('input[data-testid="file-upload"]').set_input_files(not_audio)
            expect(page.locator('[data-testid="toast-body"]').first).to_contain_text("not a readable audio file")
            page.screenshot(path=tmp_path / "genrewiz-error.png")

            # Record from the (fake) microphone: stopping the recording classifies it.
            page = browser.new_page()
            page.goto(url)
            page.get_by_role("button", name="Record audio").click()
            page.get_by_role("button", name="Record", exact=True).click()
            time.sleep(3)
            page.get_by_role("button", name="Stop", exact=True).locator("visible=true").first.click()
            expect(page.locator("#details")).to_contain_text("audio.wav")
            expect(page.locator('h2[data-testid="label-output-value"]')).to_have_text(genres)
            page.screenshot(path=tmp_path / "genrewiz-microphone.png", full_page=True)
        finally:
            browser.close()
    assert (tmp_path / "genrewiz-upload.png").stat().st_size > 10_000
