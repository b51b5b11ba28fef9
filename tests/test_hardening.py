"""Hostile and odd inputs through the library and the CLI: clear errors, sane answers, bounded memory.

The corpus is :func:`conftest.make_bad_inputs` (refused, with the words of
:data:`conftest.BAD_INPUT_ERRORS`) and :func:`conftest.make_odd_inputs` (answered). The CLI runs
as a real subprocess: its signals, its output errors and its worker processes are those a user
gets. No test here asserts a duration; the clocks only bound how long to wait for an event.
"""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
import textwrap
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from conftest import BAD_INPUT_ERRORS, make_bad_inputs, make_odd_inputs
from genrewiz.audio import MAX_SAMPLES_PER_SECOND, AudioError, load_audio, prepare_waveform
from genrewiz.hub import BUNDLED_DIR
from synthetic import synth_clip, write_clip
from test_cli import run_cli

SR = 22_050
DECODER_CHATTER = ("Illegal Audio-MPEG-Header", "Trying to resync", "libmpg123", "Note:")


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Path], dict[str, Path]]:
    root = tmp_path_factory.mktemp("corpus")
    return make_bad_inputs(root / "bad"), make_odd_inputs(root / "odd")


# --- the library -------------------------------------------------------------------------------


@pytest.mark.parametrize("case", sorted(BAD_INPUT_ERRORS))
def test_every_bad_input_is_a_clear_audio_error(corpus, case):
    path = corpus[0][case]
    with pytest.raises(AudioError) as raised:
        load_audio(path, SR)
    message = str(raised.value)
    assert message.startswith(f"{path.name}: ") and BAD_INPUT_ERRORS[case] in message, message
    assert "does not exist" not in message and str(path.parent) not in message


def test_mp3_decoder_chatter_stays_out_of_stderr_but_other_output_does_not(corpus, capfd):
    for case in ("text_as_mp3", "html_as_mp3", "random_as_mp3"):
        with pytest.raises(AudioError, match="not a valid MP3 file"):
            load_audio(corpus[0][case], SR)
    os.write(2, b"a real error from C\n")
    err = capfd.readouterr().err
    assert not any(chatter in err for chatter in DECODER_CHATTER), err
    assert "a real error from C" in err


def test_chatter_filter_is_safe_with_concurrent_decoders(corpus, capfd):
    """Decoding threads overlap (the app runs two predictions at once): each line of another
    thread still comes out once, whole, and no decoder note does."""

    def decode(i: int) -> None:
        with pytest.raises(AudioError):
            load_audio(corpus[0][("text_as_mp3", "html_as_mp3", "random_as_mp3")[i % 3]], SR)
        os.write(2, f"line from thread {i}\n".encode())

    with ThreadPoolExecutor(4) as pool:
        list(pool.map(decode, range(24)))
    lines = capfd.readouterr().err.splitlines()
    assert sorted(lines) == sorted(f"line from thread {i}" for i in range(24))


def test_huge_and_hot_float_samples_are_scaled_to_full_scale(corpus, classifier):
    odd = corpus[1]
    reference = load_audio(odd["reference"], SR).samples
    for case in ("huge_samples", "hot_float"):
        audio = load_audio(odd[case], SR)
        assert np.max(np.abs(audio.samples)) == pytest.approx(1.0, abs=1e-6)
        np.testing.assert_allclose(audio.samples, reference, atol=1e-6)
        probabilities = classifier.predict(odd[case]).probabilities
        assert np.all(np.isfinite(probabilities)) and probabilities.sum() == pytest.approx(1.0, abs=1e-4)
    waveform = synth_clip("pad", 3.0).astype(np.float64) * 1e300
    assert np.max(np.abs(prepare_waveform(waveform, SR, SR).samples)) == pytest.approx(1.0, abs=1e-6)


def test_normal_audio_is_decoded_exactly_as_before(tmp_path):
    """The streamed read (blocks, headroom scaling) gives the one-shot read's samples bit for bit."""
    import soxr

    stereo = np.stack([synth_clip("chirp", 4.0, 44_100), synth_clip("pad", 4.0, 44_100)], axis=1) * 0.7
    path = tmp_path / "stereo.wav"
    sf.write(path, stereo, 44_100, subtype="FLOAT")
    expected = soxr.resample(sf.read(path, dtype="float32")[0].mean(axis=1), 44_100, SR, quality="HQ")
    np.testing.assert_array_equal(load_audio(path, SR).samples, expected)


def test_names_that_are_not_utf8_are_read(tmp_path):
    path = os.fsencode(tmp_path) + b"/caf\xe9.wav"
    sf.write(path, synth_clip("pad", 2.0), SR)
    assert load_audio(os.fsdecode(path), SR).duration == pytest.approx(2.0)


def test_odd_but_real_files_are_answered(corpus, classifier):
    for case in ("hires_multichannel", "wav_named_mp3"):
        prediction = classifier.predict(corpus[1][case])
        assert np.all(np.isfinite(prediction.probabilities)), case
        assert prediction.duration == pytest.approx(sf.info(corpus[1][case]).duration, abs=0.01)


def test_decoding_work_is_capped_in_samples_not_seconds(tmp_path):
    """96 kHz 8-channel is 768,000 samples a second, twice the cap: half the seconds are read."""
    path = tmp_path / "surround.flac"
    sf.write(path, np.repeat(synth_clip("pad", 6.0, 96_000)[:, None], 8, axis=1), 96_000)
    audio = load_audio(path, SR, max_duration=4.0)
    assert audio.duration == pytest.approx(4.0 * MAX_SAMPLES_PER_SECOND / (96_000 * 8), abs=0.01)
    assert audio.source_duration == pytest.approx(6.0)


PEAK_RSS_SCRIPT = textwrap.dedent(
    """
    import sys
    from genrewiz.audio import load_audio

    def status(key):
        return next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith(key))

    before = status("VmRSS:")
    with open("/proc/self/clear_refs", "w") as refs:
        refs.write("5")  # reset the peak (VmHWM) to the current size
    audio = load_audio(sys.argv[1], 22050)
    print(audio.duration, (status("VmHWM:") - before) // 1024)
    """
)


@pytest.mark.skipif(not Path("/proc/self/clear_refs").exists(), reason="needs Linux /proc to measure peak memory")
def test_memory_does_not_grow_with_sample_rate_or_channels(tmp_path):
    """60 s of 384 kHz 8-channel FLAC is 737 MB as float32; the streamed read stays far below."""
    path = tmp_path / "dxd_8ch.flac"
    tone = (0.5 * np.sin(2 * np.pi * 440 * np.arange(384_000 * 5) / 384_000)).astype(np.float32)
    block = np.zeros((len(tone), 8), dtype=np.float32)
    block[:, 0] = tone  # seven silent channels keep the file small
    with sf.SoundFile(path, "w", 384_000, 8) as f:
        for _ in range(12):
            f.write(block)
    done = subprocess.run([sys.executable, "-c", PEAK_RSS_SCRIPT, str(path)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    duration, peak_mb = done.stdout.split()
    assert float(duration) == pytest.approx(60.0, abs=0.01)
    assert int(peak_mb) < 100, f"decoding took {peak_mb} MB above the start"


# --- the CLI -----------------------------------------------------------------------------------


def test_cli_reports_every_case_of_the_corpus_in_json_lines(corpus, tmp_path):
    bad, odd = corpus
    # a folder named on the command line is searched; a missing one is a usage error (test_cli_edges.py)
    cases = sorted(set(BAD_INPUT_ERRORS) - {"directory", "missing"})
    paths = [str(bad[case]) for case in cases] + [str(odd["huge_samples"]), str(odd["wav_named_mp3"])]
    done = run_cli("predict", *paths, "--format", "jsonl", "--jobs", "2")
    assert done.returncode == 1, done.stderr
    rows = [json.loads(line) for line in done.stdout.splitlines()]
    assert [row["path"] for row in rows] == paths
    for case, row in zip(cases, rows):
        assert not row["ok"] and BAD_INPUT_ERRORS[case] in row["error"], row
    for row in rows[-2:]:
        assert row["ok"] and all(0.0 <= t["confidence"] <= 1.0 for t in row["top"]), row
    assert f"{len(cases)} of {len(paths)} files could not be analysed" in done.stderr
    assert not any(chatter in done.stderr for chatter in DECODER_CHATTER), done.stderr


def test_cli_table_escapes_control_characters_and_keeps_odd_names(tmp_path):
    clip = synth_clip("pad", 2.0)
    sneaky = tmp_path / "evil\x1b[2Jname\tx.wav"
    sf.write(sneaky, clip, SR)
    sf.write(os.fsencode(tmp_path) + b"/caf\xe9.wav", clip, SR)  # a Latin-1 name, not UTF-8
    table = run_cli("predict", str(tmp_path), "-q", "--jobs", "1")
    assert table.returncode == 0, table.stderr
    assert "\x1b" not in table.stdout and "evil\\x1b[2Jname\\tx.wav  " in table.stdout
    assert "caf\\udce9.wav  " in table.stdout and len(table.stdout.splitlines()) == 3  # the header and two rows


@pytest.fixture(scope="module")
def slow_library(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """A short clip first, then songs that each take the decoder a while (10 min at 8 kHz)."""
    root = tmp_path_factory.mktemp("slow_library")
    files = [write_clip(root / "00_short.wav", "pad", 3.0)]
    files += [write_clip(root / f"{i:02d}_long.wav", "chirp", 600.0, 8_000, seed=i) for i in range(1, 5)]
    return files


def start_cli(*args: str) -> subprocess.Popen:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "GENREWIZ_MODEL": str(BUNDLED_DIR)}
    return subprocess.Popen(
        [sys.executable, "-m", "genrewiz", "predict", *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # its own process group, as a job started from a shell
    )


def children(pid: int) -> list[int]:
    """Processes whose parent is ``pid`` (read from /proc)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


def alive(pid: int) -> bool:
    """Whether ``pid`` still runs (a zombie is dead: it only waits to be reaped)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def wait_for(condition, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def assert_gone(pids: list[int]) -> None:
    wait_for(lambda: not any(alive(pid) for pid in pids), timeout=30)


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_signal_keeps_finished_rows_as_valid_json_and_stops_the_workers(slow_library, tmp_path, signum):
    out = tmp_path / "tags.json"
    cli = start_cli(str(slow_library[0].parent), "--format", "json", "--output", str(out), "--jobs", "2", "-q")
    try:
        wait_for(lambda: out.exists() and '"path"' in out.read_text())  # the short clip's row is out
        workers = children(cli.pid)
        assert len(workers) == 2
        if signum == signal.SIGINT:
            os.killpg(cli.pid, signum)  # Ctrl-C reaches the whole process group
        else:
            cli.send_signal(signum)
        _, err = cli.communicate(timeout=60)
    finally:
        cli.kill()
    assert cli.returncode == 128 + signum, err
    assert "interrupted; the results so far were written" in err and "Traceback" not in err
    rows = json.loads(out.read_text())
    assert 1 <= len(rows) < len(slow_library) and rows[0]["path"].endswith("00_short.wav") and rows[0]["ok"]
    assert_gone(workers)


def test_workers_die_with_a_killed_main_process(slow_library, tmp_path):
    out = tmp_path / "tags.jsonl"
    cli = start_cli(str(slow_library[0].parent), "--format", "jsonl", "--output", str(out), "--jobs", "2", "-q")
    try:
        wait_for(lambda: out.exists() and out.read_text().endswith("\n"))
        workers = children(cli.pid)
        assert len(workers) == 2
        cli.kill()
        cli.wait(timeout=30)
    finally:
        cli.kill()
    assert_gone(workers)
    rows = [json.loads(line) for line in out.read_text().splitlines()]  # every finished row, whole
    assert rows and rows[0]["ok"]


@pytest.mark.parametrize(
    "output, reason",
    [("missing-folder/tags.json", "No such file or directory"), (".", "Is a directory")],
    ids=["missing-folder", "directory"],
)
def test_bad_output_path_fails_before_the_model_loads(tmp_path, output, reason):
    clip = write_clip(tmp_path / "clip.wav", "pad", 2.0)
    done = run_cli("predict", str(clip), "--output", str(tmp_path / output), "--model", str(tmp_path / "no-model"))
    # The model path does not exist either: failing on the output first proves it was checked first.
    assert done.returncode == 2
    assert done.stderr.strip() == f"genrewiz: cannot write to {tmp_path / output}: {reason}"


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs /dev/full")
def test_full_disk_is_one_clear_line(tmp_path):
    clip = write_clip(tmp_path / "clip.wav", "pad", 2.0)
    done = run_cli("predict", str(clip), "--format", "json", "--output", "/dev/full", "-q")
    assert done.returncode == 2
    assert done.stderr.strip() == "genrewiz: cannot write results to /dev/full: No space left on device"


def test_rows_closed_early_stop_the_workers_and_the_pool_before_returning(slow_library):
    """Closing the row stream (a stop, a reader gone) kills the decoding workers and joins the pool's manager thread.

    Left running, the manager thread races the interpreter's exit handler for its wake-up pipe.
    """
    import threading
    from concurrent.futures.process import _ExecutorManagerThread

    from genrewiz import GenreClassifier
    from genrewiz.batch import predict_files

    classifier = GenreClassifier.from_pretrained(BUNDLED_DIR)
    before = set(children(os.getpid()))
    rows = predict_files(classifier, slow_library, 2, jobs=2, progress=False)
    first = next(rows)  # the long songs are still decoding
    workers = sorted(set(children(os.getpid())) - before)
    assert first.path.endswith("00_short.wav") and len(workers) == 2
    rows.close()
    assert not [pid for pid in workers if alive(pid)], "the workers outlived the stream"
    assert not [t for t in threading.enumerate() if isinstance(t, _ExecutorManagerThread)]


def test_jsonl_streams_and_a_closed_pipe_ends_quietly(slow_library):
    cli = start_cli(str(slow_library[0].parent), "--format", "jsonl", "--jobs", "2", "-q")
    try:
        assert select.select([cli.stdout], [], [], 300)[0], "no row within 300 s"
        first = json.loads(cli.stdout.readline())  # arrives while the long songs are still decoding
        assert first["path"].endswith("00_short.wav") and first["ok"] and cli.poll() is None
        workers = children(cli.pid)
        cli.stdout.close()  # what `| head -1` does after its line
        cli.wait(timeout=60)
        err = cli.stderr.read()
    finally:
        cli.kill()
    assert cli.returncode == 128 + signal.SIGPIPE
    assert err == ""
    assert_gone(workers)
