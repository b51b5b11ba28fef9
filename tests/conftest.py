"""Shared fixtures: a real (bundled) classifier, the app served once around it, a corpus of inputs
that must be refused with a clear error, and one of odd inputs that must still get a sane answer.

The app (and with it Gradio) is imported only by the tests that serve it.

What a test needs from outside the project is declared with a marker, ``@pytest.mark.shared("gtzan-mini")``
(``../shared/<name>``) or ``@pytest.mark.program("espeak-ng")`` (an executable on ``PATH``): where it is
missing the test is skipped with the reason, and in CI (``CI=true``) it fails instead, as the browser
test does (this sets ``GENREWIZ_REQUIRE_BROWSER=1`` there).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile as sf

from genrewiz import GenreClassifier
from genrewiz.hub import BUNDLED_DIR
from synthetic import STYLES, synth_clip, write_clip

SHARED = Path(os.environ.get("GENREWIZ_SHARED") or Path(__file__).resolve().parents[1].parent / "shared")
"""Data beside the checkout (``../shared``, see its README; CI has it there too), or ``$GENREWIZ_SHARED``."""
GTZAN_MINI = SHARED / "gtzan-mini"
IN_CI = os.environ.get("CI", "").lower() in ("true", "1")
"""In CI a test that cannot run for want of data, a program or a browser is a failure, not a skip."""


def pytest_configure(config: pytest.Config) -> None:
    if IN_CI:
        os.environ["GENREWIZ_REQUIRE_BROWSER"] = "1"


def pytest_runtest_setup(item: pytest.Item) -> None:
    """Skip a test whose ``shared``/``program`` needs are missing here, with what is missing; fail it in CI."""
    missing = [f"../shared/{name}" for mark in item.iter_markers("shared") for name in mark.args if not (SHARED / name).is_dir()]
    missing += [f"the {name} program" for mark in item.iter_markers("program") for name in mark.args if shutil.which(name) is None]
    if missing:
        reason = f"needs {', '.join(missing)}, not found on this machine"
        if IN_CI:
            pytest.fail(f"CI=true and this test cannot run: it {reason}", pytrace=False)
        pytest.skip(reason)


@pytest.fixture(scope="session")
def classifier() -> GenreClassifier:
    """The checkpoint shipped in the package, loaded once for the whole session."""
    return GenreClassifier.from_pretrained(BUNDLED_DIR)


TEST_MAX_FILE_SIZE = 8 * 1024 * 1024
"""The served test app's upload limit: above every clip, small enough to exceed cheaply."""


@contextlib.contextmanager
def running_app(classifier: GenreClassifier, examples: list[str], cache_dir: Path, **launch_kwargs: Any) -> Iterator[tuple[Any, str, Path]]:
    """Serve :func:`app.build_demo` in this process, with example results cached under ``cache_dir``.

    Yields the ``gr.Blocks``, its URL and ``cache_dir``; the app's flagged answers go beside
    ``cache_dir``, in the same name with ``-flagged``.
    """
    import app

    with pytest.MonkeyPatch.context() as env:
        env.setenv("GRADIO_EXAMPLES_CACHE", str(cache_dir))
        demo = app.build_demo(classifier, examples, flagging_dir=cache_dir.with_name(cache_dir.name + "-flagged"))
        # No port chosen here: Gradio binds the first free one itself, so no other process can take it in between.
        _, url, _ = app.launch(demo, prevent_thread_lock=True, server_name="127.0.0.1", quiet=True, **launch_kwargs)
        try:
            yield demo, url, cache_dir
        finally:
            demo.close()


@pytest.fixture(scope="session")
def clips(tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    """``examples/`` if it has clips; otherwise 30 s synthetic clips and one long (75 s) one."""
    import app

    real = app.list_examples()
    if real:
        return real
    folder = tmp_path_factory.mktemp("examples")
    synthetic = [str(write_clip(folder / f"{style}.wav", style, 30, seed=i)) for i, style in enumerate(STYLES)]
    return [*synthetic, str(write_clip(folder / "long_pad.flac", "pad", 75))]


@pytest.fixture(scope="session")
def served(classifier: GenreClassifier, clips: list[str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Any, str, Path]]:
    """The app around :func:`classifier` with :func:`clips` as its examples, started once for every test that
    only uses it (the API tests, the browser test): starting one caches every example's answer."""
    with running_app(classifier, clips, tmp_path_factory.mktemp("examples-cache"), max_file_size=TEST_MAX_FILE_SIZE) as app_served:
        yield app_served


def make_bad_inputs(root: Path) -> dict[str, Path]:
    """Files and paths no analysis should accept, each named for what is wrong with it."""
    root.mkdir(parents=True, exist_ok=True)
    bad: dict[str, Path] = {}
    bad["not_audio"] = root / "notes.wav"
    bad["not_audio"].write_bytes(b"This is a text file, not a RIFF/WAVE stream.\n" * 20)
    good = write_clip(root / "good.wav", "pad", 5.0)
    bad["truncated"] = root / "truncated.wav"
    bad["truncated"].write_bytes(good.read_bytes()[:30])
    bad["empty"] = root / "empty.wav"
    bad["empty"].touch()
    bad["zero_frames"] = root / "zero_frames.wav"
    sf.write(bad["zero_frames"], np.zeros((0,), dtype=np.float32), 22_050)
    bad["silent"] = root / "silent.wav"
    sf.write(bad["silent"], np.zeros(22_050 * 5, dtype=np.float32), 22_050)
    bad["too_short"] = write_clip(root / "half_second.wav", "hihat", 0.5)
    bad["unsupported"] = root / "song.xyz"
    bad["unsupported"].write_bytes(b"Neither libsndfile nor FFmpeg reads this.\n" * 20)
    bad["corrupt_m4a"] = root / "song.m4a"
    bad["corrupt_m4a"].write_bytes(struct.pack(">I", 24) + b"ftypM4A " + bytes(200))
    bad["directory"] = root / "a_folder.wav"
    bad["directory"].mkdir(exist_ok=True)
    bad["missing"] = root / "does_not_exist.mp3"
    bad["text_as_mp3"] = root / "lyrics.mp3"
    bad["text_as_mp3"].write_bytes(b"Just some lyrics, saved with the wrong name.\n" * 40)
    bad["html_as_mp3"] = root / "download.mp3"
    bad["html_as_mp3"].write_bytes(b"<!DOCTYPE html><html><body><p>404 Not Found</p></body></html>\n" * 30)
    bad["random_as_mp3"] = root / "noise.mp3"
    bad["random_as_mp3"].write_bytes(np.random.default_rng(7).bytes(16_384))
    bad["one_hertz"] = root / "one_hertz.wav"  # a header claiming 1 Hz: 5 samples would be "5 s of music"
    sf.write(bad["one_hertz"], synth_clip("pad", 5.0, 1), 1)
    bad["megahertz"] = root / "megahertz.wav"
    sf.write(bad["megahertz"], synth_clip("pad", 0.1, 1_000_000), 1_000_000)
    bad["nan_samples"] = root / "nan_samples.wav"
    sf.write(bad["nan_samples"], np.where(np.arange(22_050 * 3) % 100 == 0, np.nan, 0.1).astype(np.float32), 22_050, subtype="FLOAT")
    good.unlink()
    return bad


BAD_INPUT_ERRORS: dict[str, str] = {
    "not_audio": "not a readable audio file",
    "truncated": "not a readable audio file",
    "empty": "the file is empty",
    "zero_frames": "contains no audio frames",
    "silent": "the audio is silent",
    "too_short": "too short to judge",
    "unsupported": "unsupported format '.xyz'",
    "corrupt_m4a": "not a readable audio file",
    "directory": "not a file",
    "missing": "file not found",
    "text_as_mp3": "not a valid MP3 file",
    "html_as_mp3": "not a valid MP3 file",
    "random_as_mp3": "not a valid MP3 file",
    "one_hertz": "sample rate 1 Hz is outside the range GenreWiz reads",
    "megahertz": "sample rate 1,000,000 Hz is outside the range GenreWiz reads",
    "nan_samples": "contains invalid (NaN or infinite) samples",
}
"""What the error for each case of :func:`make_bad_inputs` says, wherever it is shown."""


def make_odd_inputs(root: Path) -> dict[str, Path]:
    """Files that look hostile but hold real music: each must get a sane, finite answer."""
    root.mkdir(parents=True, exist_ok=True)
    odd: dict[str, Path] = {}
    pad = synth_clip("pad", 5.0)
    odd["reference"] = root / "reference.wav"
    sf.write(odd["reference"], pad / np.max(np.abs(pad)), 22_050, subtype="FLOAT")
    odd["huge_samples"] = root / "huge_samples.wav"  # finite, but squaring them overflows float32
    sf.write(odd["huge_samples"], pad * np.float32(1e30), 22_050, subtype="FLOAT")
    odd["hot_float"] = root / "hot_float.wav"
    sf.write(odd["hot_float"], pad * np.float32(8.0), 22_050, subtype="FLOAT")
    odd["hires_multichannel"] = root / "hires_8ch.flac"
    hires = np.zeros((384_000 * 3, 8), dtype=np.float32)
    hires[:, 0] = synth_clip("pad", 3.0, 384_000)  # one voice in eight channels: a small file
    sf.write(odd["hires_multichannel"], hires, 384_000)
    odd["wav_named_mp3"] = root / "actually_a_wav.mp3"
    sf.write(odd["wav_named_mp3"], pad, 22_050, format="WAV")
    return odd


@pytest.fixture()
def bad_inputs(tmp_path: Path) -> dict[str, Path]:
    return make_bad_inputs(tmp_path / "bad")
