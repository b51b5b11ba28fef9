"""Robustness figures: peak memory and time on the worst inputs, a 1 GB upload, disk per request.

Prints, each measured in a process of its own:

- the library: peak RSS above the loaded model and time of ``GenreClassifier.predict`` on a
  10-minute 384 kHz 8-channel FLAC, a 10-hour MP3, a 10-minute ordinary song (44.1 kHz stereo
  FLAC), a 10-minute square wave that FLAC packs into 82 KB, the 150 s example and a normal
  30 s clip (with ``--baseline REV``, also the whole package as it was at git revision REV,
  its bundled model included, in the same run; with ``--before REV``, the decoding of
  ``genrewiz/audio.py`` as it was at REV);
- the CLI: peak RSS and wall time of ``genrewiz predict FILE -j 1`` on the same files;
- the served app (``python app.py``): the server's peak RSS above idle and the latency of each
  file through ``gradio_client``, a normal request's latency behind two hostile ones and from
  another client during one client's flood of 10-minute songs, a 1 GB
  upload attempt (status, time, the most disk and memory it took), the disk used after
  ``--requests`` predictions of distinct clips, the server's RSS a minute after the last
  request, and what is left once the server stops.

    python benchmarks/bench_robustness.py --baseline efb9071    # ~8 minutes on 2 cores

``--tagging`` measures only the tagger instead: 10-minute FLACs tagged by runs killed at random
moments and right after a rename (the audio, the undo record, ``--restore``, the leftovers a
later run removes), and ``predict`` / ``tag --dry-run`` over a FIFO and links to devices.

The inputs are written once into ``--work`` and reused (the 10-hour MP3 takes ~35 s to encode).
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import numpy as np
import soundfile as sf
from gradio_client import Client, handle_file
from gradio_client.utils import Status

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from genrewiz.hub import BUNDLED_DIR  # noqa: E402
from synthetic import synth_clip, write_clip  # noqa: E402

MB = 1024 * 1024
UPLOAD_BYTES = 1024 * MB

LIBRARY_SCRIPT = textwrap.dedent(
    """
    import json, sys, time

    def status(key):
        return next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith(key)) / 1024

    def reset_peak():
        with open("/proc/self/clear_refs", "w") as refs:
            refs.write("5")

    mode, path, warm_up = sys.argv[1:4]
    if mode == "baseline":  # the package of another revision, exported into argv[4], first on sys.path
        sys.path.insert(0, sys.argv[4])
        mode = "predict"
    if mode == "before":
        import importlib.util
        spec = importlib.util.spec_from_file_location("audio_before", sys.argv[4])
        module = sys.modules["audio_before"] = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        run = lambda p: module.load_audio(p, 22050)
    elif mode == "decode":
        from genrewiz.audio import load_audio
        run = lambda p: load_audio(p, 22050)
    else:
        from genrewiz import GenreClassifier
        from genrewiz.hub import BUNDLED_DIR
        classifier = GenreClassifier.from_pretrained(BUNDLED_DIR)
        run = classifier.predict
    run(warm_up)
    before = status("VmRSS:")
    reset_peak()
    start = time.perf_counter()
    result = run(path)
    seconds = time.perf_counter() - start
    print(json.dumps({"seconds": seconds, "peak_mb": status("VmHWM:") - before, "duration": result.duration,
                      "source_duration": result.source_duration}))
    """
)


def make_inputs(work: Path) -> dict[str, Path]:
    """The worst inputs and a normal clip, written once into ``work``."""
    work.mkdir(parents=True, exist_ok=True)
    inputs = {
        "384 kHz 8-channel FLAC, 10 min": work / "dxd_8ch_10min.flac",
        "10-hour MP3 (8 kHz mono)": work / "ten_hours.mp3",
        "ordinary song, 10 min (44.1 kHz stereo FLAC)": work / "song_10min.flac",
        "square wave, 10 min (82 KB FLAC)": work / "square_10min.flac",
        "150 s example (examples/long_rock_feelings.ogg)": ROOT / "examples" / "long_rock_feelings.ogg",
        "normal 30 s clip": work / "normal_30s.wav",
    }
    if not inputs["normal 30 s clip"].exists():
        write_clip(inputs["normal 30 s clip"], "pad", 30)
    if not inputs["384 kHz 8-channel FLAC, 10 min"].exists():
        rate = 384_000
        block = np.zeros((rate * 10, 8), dtype=np.float32)  # one tone, seven silent channels: a 56 MB file
        block[:, 0] = 0.3 * np.sin(2 * np.pi * 441 * np.arange(rate * 10) / rate)
        write_blocks(inputs["384 kHz 8-channel FLAC, 10 min"], rate, 8, (block for _ in range(60)), {})
    if not inputs["10-hour MP3 (8 kHz mono)"].exists():
        minute = synth_clip("chirp", 60, 8_000)
        write_blocks(inputs["10-hour MP3 (8 kHz mono)"], 8_000, 1, (minute for _ in range(600)), {"format": "MP3"})
    if not inputs["ordinary song, 10 min (44.1 kHz stereo FLAC)"].exists():
        styles = ("bass_pulse", "hihat", "pad", "chirp")
        parts = (synth_clip(styles[i % 4], 30, 44_100, seed=i) for i in range(20))
        write_blocks(inputs["ordinary song, 10 min (44.1 kHz stereo FLAC)"], 44_100, 2,
                     (np.stack([part, part[::-1]], axis=1) for part in parts), {})
    if not inputs["square wave, 10 min (82 KB FLAC)"].exists():
        # 4096 samples up, 4096 down, in step with FLAC's 4096-sample blocks: every block is one
        # constant, so 26 M samples pack into 82 KB
        block = np.tile(np.repeat(np.array([0.5, -0.5], dtype=np.float32), 4096), 323)  # 60.0004 s
        total = 44_100 * 600
        blocks = (block[: min(len(block), total - start)] for start in range(0, total, len(block)))
        write_blocks(inputs["square wave, 10 min (82 KB FLAC)"], 44_100, 1, blocks, {"subtype": "PCM_16"})
    return inputs


def write_blocks(path: Path, rate: int, channels: int, blocks: Iterator[np.ndarray], options: dict) -> None:
    """Write a long file block by block, under a temporary name until it is complete."""
    partial = path.with_name("partial-" + path.name)
    with sf.SoundFile(partial, "w", rate, channels, **options) as f:
        for block in blocks:
            for start in range(0, len(block), 65_536):  # libsndfile's encoders crash on huge writes
                f.write(block[start : start + 65_536])
    partial.rename(path)


def library(inputs: dict[str, Path], before: Path | None, baseline: tuple[str, Path] | None) -> None:
    print("\n## Library, one fresh process per measurement")
    print("| input | call | analysed / source | time | peak RSS above start |")
    print("| --- | --- | --- | --- | --- |")
    warm_up = str(inputs["normal 30 s clip"])
    calls = [("predict", "GenreClassifier.predict (decode + mel + model)", None)]
    if baseline is not None:
        calls.append(("baseline", f"GenreClassifier.predict at {baseline[0]}", baseline[1]))
    calls.append(("decode", "load_audio", None))
    if before is not None:
        calls.append(("before", "load_audio before this work", before))
    for name, path in inputs.items():
        for mode, label, extra in calls:
            done = subprocess.run(
                [sys.executable, "-c", LIBRARY_SCRIPT, mode, str(path), warm_up, str(extra)],
                capture_output=True,
                text=True,
                cwd=extra if mode == "baseline" else ROOT,
            )
            if done.returncode != 0:
                print(f"| {name} | {label} | failed: {done.stderr.strip().splitlines()[-1]} | | |")
                continue
            r = json.loads(done.stdout)
            span = f"{r['duration']:.0f} s / {r['source_duration']:.0f} s"
            print(f"| {name} | {label} | {span} | {r['seconds']:.2f} s | {r['peak_mb']:.0f} MB |")


def cli(inputs: dict[str, Path]) -> None:
    print("\n## CLI: genrewiz predict FILE -j 1 (peak RSS of the whole process, model included)")
    print("| input | exit | time | peak RSS |")
    print("| --- | --- | --- | --- |")
    wrapper = "import resource, subprocess, sys; rc = subprocess.run(sys.argv[1:]).returncode; " \
        "print(rc, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)"
    env = os.environ | {"HF_HUB_OFFLINE": "1", "GENREWIZ_MODEL": str(BUNDLED_DIR)}
    for name, path in inputs.items():
        command = [sys.executable, "-m", "genrewiz", "predict", str(path), "-j", "1", "-q", "--format", "json"]
        start = time.perf_counter()
        done = subprocess.run([sys.executable, "-c", wrapper, *command], capture_output=True, text=True, env=env)
        seconds = time.perf_counter() - start
        rc, max_kb = done.stdout.strip().splitlines()[-1].split()
        print(f"| {name} | {rc} | {seconds:.1f} s | {int(max_kb) / 1024:.0f} MB |")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def disk_bytes(folder: Path) -> int:
    """Bytes of the files under ``folder`` (files that vanish while counted are skipped)."""
    total = 0
    for base, _, names in os.walk(folder):
        for name in names:
            try:
                total += os.lstat(os.path.join(base, name)).st_size
            except FileNotFoundError:
                pass
    return total


class Server:
    """``python app.py`` with its Gradio cache and temp files in folders of its own."""

    def __init__(self, work: Path) -> None:
        self.temp = Path(tempfile.mkdtemp(prefix="server-", dir=work))
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/"
        env = os.environ | {
            "GENREWIZ_MODEL": str(BUNDLED_DIR),
            "HF_HUB_OFFLINE": "1",
            "GRADIO_SERVER_PORT": str(self.port),
            "GRADIO_TEMP_DIR": str(self.temp / "gradio"),
            "GRADIO_EXAMPLES_CACHE": str(self.temp / "examples-cache"),
            "TMPDIR": str(self.temp / "tmp"),
        }
        (self.temp / "tmp").mkdir()
        self.log = open(self.temp / "app.log", "wb")
        self.process = subprocess.Popen([sys.executable, "app.py"], cwd=ROOT, env=env, stdout=self.log, stderr=subprocess.STDOUT)

    def client(self) -> Client:
        """A client, once the server has finished starting (examples cached: it answers before that)."""
        deadline = time.monotonic() + 300
        while "To create a public link" not in (self.temp / "app.log").read_text():  # launch()'s last line
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError((self.temp / "app.log").read_text())
            time.sleep(0.5)
        return Client(self.url, verbose=False, download_files=str(self.temp / "downloads"))

    def rss_mb(self, key: str = "VmRSS:") -> float:
        status = Path(f"/proc/{self.process.pid}/status").read_text().splitlines()
        return next(int(line.split()[1]) for line in status if line.startswith(key)) / 1024

    def reset_peak(self) -> float:
        """Reset the server's peak RSS to its current size, and return that size."""
        Path(f"/proc/{self.process.pid}/clear_refs").write_text("5")
        return self.rss_mb()

    def disk(self) -> int:
        return disk_bytes(self.temp / "gradio") + disk_bytes(self.temp / "tmp")

    def stop(self) -> None:
        self.process.send_signal(signal.SIGTERM)
        self.process.wait(timeout=60)
        self.log.close()


def timed(call: Callable[[], object]) -> tuple[float, object]:
    start = time.perf_counter()
    try:
        result: object = call()
    except Exception as err:  # noqa: BLE001 - the benchmark reports what the client got
        result = err
    return time.perf_counter() - start, result


def served(inputs: dict[str, Path], work: Path, requests: int) -> None:
    server = Server(work)
    try:
        client = server.client()
        print(f"\n## Served app (python app.py), idle server RSS {server.rss_mb():.0f} MB")
        print("| input | latency | answer | server peak RSS above idle |")
        print("| --- | --- | --- | --- |")
        for name, path in inputs.items():
            idle = server.reset_peak()
            seconds, result = timed(lambda: client.predict(handle_file(str(path)), api_name="/predict"))
            answer = result[0]["label"] if isinstance(result, tuple) else f"error: {result}"
            print(f"| {name} | {seconds:.2f} s | {answer} | {server.rss_mb('VmHWM:') - idle:.0f} MB |")
        starvation(client, inputs)
        flood(server, client, inputs)
        time.sleep(60)
        print(f"- a minute after the last long request: server RSS {server.rss_mb():.0f} MB")
        upload_attempt(server)
        bare_uploads(server)
        disk_per_request(server, client, work, requests)
    finally:
        if server.process.poll() is None:
            server.stop()
    print(f"- after SIGTERM: {disk_bytes(server.temp / 'gradio') / MB:.1f} MB left in Gradio's cache, "
          f"{disk_bytes(server.temp / 'tmp') / MB:.1f} MB in TMPDIR")


def starvation(client: Client, inputs: dict[str, Path]) -> None:
    """A normal request's latency alone, and sent while two hostile ones are being analysed."""
    normal = handle_file(str(inputs["normal 30 s clip"]))
    alone, _ = timed(lambda: client.predict(normal, api_name="/predict"))
    for name in ("384 kHz 8-channel FLAC, 10 min", "10-hour MP3 (8 kHz mono)", "ordinary song, 10 min (44.1 kHz stereo FLAC)"):
        hostile = handle_file(str(inputs[name]))
        jobs = [client.submit(hostile, api_name="/predict") for _ in range(2)]
        while not all(job.status().code == Status.PROCESSING for job in jobs):  # both slots taken
            time.sleep(0.01)
        behind, _ = timed(lambda: client.predict(normal, api_name="/predict"))
        for job in jobs:
            job.result(timeout=600)
        print(f"- a normal 30 s request: {alone:.2f} s alone, {behind:.2f} s sent while two {name} requests ran")


FLOOD = 10
"""Long songs one client sends at once: what it may hold (2 running, 8 waiting; one more is HTTP 429)."""


def flood(server: Server, client: Client, inputs: dict[str, Path], tries: int = 3) -> None:
    """A normal 30 s request from another client (another loopback address) while one client floods with 10-minute songs."""
    normal = inputs["normal 30 s clip"]
    long_song = handle_file(str(inputs["ordinary song, 10 min (44.1 kHz stereo FLAC)"]))
    other = httpx.Client(transport=httpx.HTTPTransport(local_address="127.0.0.2"), timeout=600)

    def other_request() -> float:
        """Upload, call and answer, as ``gradio_client`` does them."""
        start = time.perf_counter()
        uploaded = other.post(f"{server.url}gradio_api/upload", files={"files": (normal.name, normal.read_bytes())})
        uploaded.raise_for_status()
        body = {"data": [{"path": uploaded.json()[0], "meta": {"_type": "gradio.FileData"}}]}
        event = other.post(f"{server.url}gradio_api/call/predict", json=body).json()["event_id"]
        streamed = other.get(f"{server.url}gradio_api/call/predict/{event}").text
        if "event: complete" not in streamed:
            raise RuntimeError(streamed)
        return time.perf_counter() - start

    alone = other_request()
    jobs = [client.submit(long_song, api_name="/predict") for _ in range(FLOOD)]
    deadline = time.monotonic() + 300
    while sum(job.status().code == Status.PROCESSING for job in jobs) < 2:  # the flood runs
        if time.monotonic() > deadline:
            raise RuntimeError("the flood never started")
        time.sleep(0.05)
    during = [other_request() for _ in range(tries)]
    for job in jobs:  # the whole flood, so that the memory figures after it are the idle server's
        with contextlib.suppress(Exception):
            job.result(timeout=600)
    other.close()
    print(
        f"- fairness: a normal 30 s request from another client took {alone:.2f} s alone and "
        f"{', '.join(f'{s:.2f}' for s in during)} s while one client flooded with {FLOOD} 10-minute songs "
        f"(target: within 3 s)"
    )


class Zeros:
    """A file-like object of ``size`` zero bytes, read in chunks: a 1 GB upload without 1 GB of memory."""

    def __init__(self, size: int) -> None:
        self.left = size

    def read(self, n: int = -1) -> bytes:
        n = self.left if n < 0 else min(n, self.left)
        self.left -= n
        return bytes(n)


def upload_attempt(server: Server) -> None:
    """POST 1 GB to the upload route while sampling the server's disk and memory."""
    idle_disk, idle_rss = server.disk(), server.reset_peak()
    most = [0]
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            most[0] = max(most[0], server.disk() - idle_disk)
            time.sleep(0.05)

    sampler = threading.Thread(target=sample)
    sampler.start()
    start = time.perf_counter()
    try:
        response = httpx.post(
            f"{server.url}gradio_api/upload", files={"files": ("huge.wav", Zeros(UPLOAD_BYTES))}, timeout=600
        )
        outcome = f"HTTP {response.status_code}"
    except httpx.HTTPError as err:
        outcome = f"{type(err).__name__}"
    seconds = time.perf_counter() - start
    stop.set()
    sampler.join()
    print(
        f"- 1 GB upload attempt: {outcome} after {seconds:.1f} s; at most {most[0] / MB:.0f} MB on disk during it, "
        f"{(server.disk() - idle_disk) / MB:.1f} MB after; server peak RSS +{server.rss_mb('VmHWM:') - idle_rss:.0f} MB"
    )


def bare_uploads(server: Server, count: int = 5, size: int = 110 * MB) -> None:
    """Uploads that no prediction follows: the worst case for disk, kept until they expire."""
    idle = server.disk()
    start = time.perf_counter()
    for i in range(count):
        response = httpx.post(f"{server.url}gradio_api/upload", files={"files": (f"big_{i}.wav", Zeros(size))}, timeout=600)
        response.raise_for_status()
    seconds = time.perf_counter() - start
    print(f"- {count} uploads of {size // MB} MB with no prediction: {(server.disk() - idle) / MB:.0f} MB on disk after {seconds:.1f} s")


def disk_per_request(server: Server, client: Client, work: Path, requests: int) -> None:
    """Predict ``requests`` distinct 30 s clips and report what they leave on the server's disk."""
    clips = [write_clip(work / "distinct" / f"clip_{i:03d}.wav", "pad", 30, seed=i) for i in range(requests)]
    idle = server.disk()
    png_folder = server.temp / "gradio" / "genrewiz-spectrograms"
    earlier = set(png_folder.glob("*.png"))
    for clip in clips:
        client.predict(handle_file(str(clip)), api_name="/predict")
    used = server.disk() - idle
    pngs = list(set(png_folder.glob("*.png")) - earlier)
    print(
        f"- after {requests} predictions of distinct 30 s WAVs ({sum(c.stat().st_size for c in clips) / MB:.1f} MB uploaded): "
        f"{used / MB:.1f} MB on disk ({used / requests / MB:.2f} MB a request; {len(pngs)} spectrogram PNGs, "
        f"{sum(p.stat().st_size for p in pngs) / len(pngs) / 1024:.0f} KB each), kept until DELETE_CACHE expires them"
    )


STOP_AFTER_RENAME = """
import os, signal, sys
from genrewiz import cli
target = sys.argv[1]
rename = os.replace
def replace_then_kill(source, destination, *args, **kwargs):
    rename(source, destination, *args, **kwargs)
    if os.fspath(destination).endswith(target):
        os.kill(os.getpid(), signal.SIGKILL)
os.replace = replace_then_kill
sys.exit(cli.main(sys.argv[2:]))
"""
"""``genrewiz tag`` killed (SIGKILL) right after the tagged copy of the file named argv[1] replaced it."""


def tagging_robustness(inputs: dict[str, Path], work: Path, trials: int, seed: int = 22) -> None:
    """Large-file versions of tests/test_tag_guards.py's kills and tests/test_hostile_paths.py's devices.

    Four copies of the 10-minute FLAC, each with a genre of its own, are tagged with ``--overwrite``
    into one JSON Lines undo record by ``trials`` runs killed at random moments (each resuming the
    last) and one killed right after a rename; then a run finishes the rest. Every file must
    decode to its original samples, ``--restore`` must give every file its own genre back, and a
    later run removes the temporary copies the kills left (once they are a minute old).
    """
    import random

    import mutagen

    from genrewiz.tags import STALE_AFTER_S, TEMP_SUFFIX

    print(f"\n## Tagging under kills: 4 x 10-minute FLAC, {trials} random SIGKILLs + 1 right after a rename")
    folder = work / "tag-kills"
    if folder.exists():
        subprocess.run(["rm", "-rf", str(folder)], check=True)
    folder.mkdir(parents=True)
    songs = []
    for i in range(4):
        song = folder / f"song_{i}.flac"
        song.write_bytes(inputs["ordinary song, 10 min (44.1 kHz stereo FLAC)"].read_bytes())
        audio = mutagen.File(song)
        audio["GENRE"] = f"Mine {i}"
        audio.save()
        songs.append(song)
    def digest(song: Path) -> str:
        return hashlib.sha256(sf.read(song, dtype="float32")[0].tobytes()).hexdigest()

    samples = {song: digest(song) for song in songs}
    rows = work / "tag-kills.jsonl"
    rows.unlink(missing_ok=True)
    env = os.environ | {"HF_HUB_OFFLINE": "1", "GENREWIZ_MODEL": str(BUNDLED_DIR)}
    args = ["tag", str(folder), "--overwrite", "--min-confidence", "0", "--format", "jsonl", "--output", str(rows), "-j", "1"]
    rng = random.Random(seed)
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", STOP_AFTER_RENAME, songs[0].name, *args, "-q"], env=env, capture_output=True)
    killed_after_rename = done.returncode == -signal.SIGKILL
    for _ in range(trials):
        run = subprocess.Popen([sys.executable, "-m", "genrewiz", *args, "--resume", "-q"], env=env, stderr=subprocess.DEVNULL)
        time.sleep(rng.uniform(2.0, 20.0))
        run.kill()
        run.wait()
    leftovers = len(list(folder.glob(f".*{TEMP_SUFFIX}")))
    for copy in folder.glob(f".*{TEMP_SUFFIX}"):
        os.utime(copy, (time.time() - 2 * STALE_AFTER_S,) * 2)
    finish = subprocess.run([sys.executable, "-m", "genrewiz", *args, "--resume"], env=env, capture_output=True, text=True)
    intact = sum(digest(song) == samples[song] for song in songs)
    tagged = sum(mutagen.File(song)["GENRE"] != [f"Mine {i}"] for i, song in enumerate(songs))
    undo = subprocess.run([sys.executable, "-m", "genrewiz", "tag", "--restore", str(rows), "-q"], env=env, capture_output=True, text=True)
    back = sum(mutagen.File(song)["GENRE"] == [f"Mine {i}"] for i, song in enumerate(songs))
    pending = sum(1 for line in rows.read_text().splitlines() if json.loads(line).get("pending"))
    print(f"- killed right after a rename: {killed_after_rename}; leftover temporary copies after the kills: {leftovers}, "
          f"removed by the next run: {'removed' in finish.stderr} ({finish.stderr.strip().splitlines()[:1]})")
    print(f"- audio intact: {intact} of {len(songs)}; tagged after the last run: {tagged} of {len(songs)}; "
          f"journal entries: {pending}; --restore exit {undo.returncode}, own genre back: {back} of {len(songs)}; "
          f"{time.perf_counter() - start:.0f} s in all")


def hostile_inputs(work: Path) -> None:
    """``tag --dry-run`` and ``predict`` over a FIFO and links to /dev/zero and /dev/urandom named like audio: time and peak RSS."""
    print("\n## Hostile folder: a FIFO and links to /dev/zero, /dev/urandom named like audio")
    folder = work / "hostile"
    if folder.exists():
        subprocess.run(["rm", "-rf", str(folder)], check=True)
    folder.mkdir(parents=True)
    write_clip(folder / "good.wav", "pad", 30)
    os.mkfifo(folder / "pipe.mp3")
    (folder / "zero.mp3").symlink_to("/dev/zero")
    (folder / "noise.flac").symlink_to("/dev/urandom")
    wrapper = "import resource, subprocess, sys; rc = subprocess.run(sys.argv[1:], timeout=300).returncode; " \
        "print(rc, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)"
    env = os.environ | {"HF_HUB_OFFLINE": "1", "GENREWIZ_MODEL": str(BUNDLED_DIR)}
    print("| command | exit | time | peak RSS | error rows |")
    print("| --- | --- | --- | --- | --- |")
    for command in (["predict"], ["tag", "--dry-run"]):
        full = [sys.executable, "-m", "genrewiz", *command, str(folder), "--format", "jsonl", "-q"]
        start = time.perf_counter()
        done = subprocess.run([sys.executable, "-c", wrapper, *full], capture_output=True, text=True, env=env)
        seconds = time.perf_counter() - start
        lines = done.stdout.strip().splitlines()
        rc, max_kb = lines[-1].split()
        errors = sum(1 for line in lines[:-1] if not json.loads(line)["ok"])
        print(f"| genrewiz {' '.join(command)} | {rc} | {seconds:.1f} s | {int(max_kb) / 1024:.0f} MB | {errors} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "genrewiz-bench-robustness")
    parser.add_argument("--requests", type=int, default=20, help="predictions for the disk figure (default 20)")
    parser.add_argument("--before", metavar="REV", help="git revision whose genrewiz/audio.py to measure too")
    parser.add_argument("--baseline", metavar="REV", help="git revision whose whole package (and model) to measure too")
    parser.add_argument("--skip-app", action="store_true", help="the library and the CLI only")
    parser.add_argument("--app-only", action="store_true", help="the served app only")
    parser.add_argument("--tagging", action="store_true", help="only the tagger under kills and a hostile folder (large files)")
    parser.add_argument("--kills", type=int, default=6, help="random kills of the tagging run (default 6)")
    args = parser.parse_args()
    inputs = make_inputs(args.work)
    baseline = None
    if args.baseline:
        tree = args.work / f"tree_{args.baseline}"
        if not tree.is_dir():
            tree.mkdir(parents=True)
            archive = subprocess.run(["git", "archive", args.baseline, "genrewiz"], cwd=ROOT, capture_output=True, check=True)
            subprocess.run(["tar", "-x", "-C", str(tree)], input=archive.stdout, check=True)
        baseline = (args.baseline, tree)
    before = None
    if args.before:
        before = args.work / f"audio_{args.before}.py"
        source = subprocess.run(["git", "show", f"{args.before}:genrewiz/audio.py"], cwd=ROOT, capture_output=True, check=True)
        before.write_bytes(source.stdout)
    print("inputs: " + ", ".join(f"{name} ({path.stat().st_size / MB:.0f} MB)" for name, path in inputs.items()))
    print(f"machine: {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f} at start")
    if args.tagging:
        tagging_robustness(inputs, args.work, args.kills)
        hostile_inputs(args.work)
        return
    if not args.app_only:
        library(inputs, before, baseline)
        cli(inputs)
    if not args.skip_app:
        served(inputs, args.work, args.requests)
    print(f"load average {os.getloadavg()[0]:.1f} at the end")


if __name__ == "__main__":
    main()
