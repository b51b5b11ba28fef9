"""App serving speed: cold start of ``python app.py`` and /predict latency through gradio_client.

Prints:

- a bare ``import gradio`` in a fresh interpreter (the floor for any Gradio app's start);
- cold start: process start -> server answering -> first successful client prediction, with the
  example results computed at start-up (a fresh example cache, as on a new Space);
- p50/p95 latency of ``/predict`` for a 30 s clip (upload + decode + model + spectrogram PNG +
  download) at 1 and 8 concurrent clients, each client its own ``gradio_client.Client``;
- the latency of a cached example (``/load_example``);
- the issue's targets (p50 <= 300 ms at 1 client, >= 4 requests/s at 8, cached example <= 100 ms), met or not.

``--branch scratch`` serves a from-scratch PCRNN (random weights, same compute) instead of the
bundled checkpoint's architecture.

    python benchmarks/bench_app.py [--branch scratch|musicnn]      # ~2-3 minutes on 2 cores
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import soundfile as sf
from gradio_client import Client, handle_file

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

import app  # noqa: E402  (the app's own example listing, not a copy)
from benchmarks.bench_inference import checkpoint  # noqa: E402  (the same checkpoints as the inference benchmark)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def bare_gradio_import(runs: int) -> float:
    """Median seconds of ``python -c "import gradio"``."""
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        subprocess.run([sys.executable, "-c", "import gradio"], check=True)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def thirty_second_clip(folder: Path) -> Path:
    """The first example of about 30 s; a synthetic one if ``examples/`` has none."""
    for path in app.list_examples():
        if 25 <= sf.info(path).duration <= 31:
            return Path(path)
    from synthetic import write_clip

    return write_clip(folder / "pad_30s.wav", "pad", 30)


class Server:
    """``python app.py`` in a subprocess, timed from process start."""

    def __init__(self, workdir: Path, model: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/"
        self.log_path = workdir / f"app-{self.port}.log"
        env = os.environ | {
            "GRADIO_SERVER_PORT": str(self.port),
            "GRADIO_EXAMPLES_CACHE": str(workdir / f"cache-{self.port}"),
            "GENREWIZ_MODEL": str(model),
        }
        self.log = open(self.log_path, "wb")
        self.started = time.perf_counter()
        self.process = subprocess.Popen(
            [sys.executable, "app.py"], cwd=ROOT, env=env, stdout=self.log, stderr=subprocess.STDOUT
        )

    def wait_for_client(self, timeout: float = 300) -> tuple[Client, float]:
        """A connected client and the seconds since process start when the server first answered."""
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(f"app.py exited:\n{self.log_path.read_text()}")
            try:
                client = Client(self.url, verbose=False)
                return client, time.perf_counter() - self.started
            except (httpx.HTTPError, ValueError):
                if time.perf_counter() - self.started > timeout:
                    raise TimeoutError(f"app.py not up after {timeout} s:\n{self.log_path.read_text()}") from None
                time.sleep(0.1)

    def model_note(self) -> str:
        """The page's "Weights: ..." line (in its About accordion)."""
        config = httpx.get(f"{self.url}config", timeout=30).json()
        about = [c["props"]["value"] for c in config["components"] if c.get("props", {}).get("elem_id") == "about-text"]
        return about[0].rsplit("\n\n", 1)[-1] if about else "?"

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=30)
        self.log.close()


def cold_start(workdir: Path, clip: Path, model: Path) -> tuple[float, float, Server, Client]:
    """(seconds to first answer, seconds to first prediction) for a fresh ``python app.py``."""
    server = Server(workdir, model)
    client, answering = server.wait_for_client()
    client.predict(handle_file(str(clip)), api_name="/predict")
    return answering, time.perf_counter() - server.started, server, client


def latencies(url: str, clip: Path, clients: int, requests_each: int) -> tuple[list[float], float]:
    """Per-request seconds of ``/predict`` from ``clients`` concurrent clients, and the wall time."""
    connected = [Client(url, verbose=False) for _ in range(clients)]
    for client in connected:  # warm-up: one request each, not timed
        client.predict(handle_file(str(clip)), api_name="/predict")
    times: list[float] = []
    lock = threading.Lock()
    barrier = threading.Barrier(clients)

    def run(client: Client) -> None:
        barrier.wait()
        for _ in range(requests_each):
            start = time.perf_counter()
            label, _ = client.predict(handle_file(str(clip)), api_name="/predict")
            elapsed = time.perf_counter() - start
            assert len(label["confidences"]) == 5
            with lock:
                times.append(elapsed)

    threads = [threading.Thread(target=run, args=(c,)) for c in connected]
    start = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return times, time.perf_counter() - start


def summary(times: list[float]) -> str:
    p50, p95 = np.percentile(times, [50, 95])
    return f"p50 {1000 * p50:6.0f} ms   p95 {1000 * p95:6.0f} ms   (n={len(times)})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cold-runs", type=int, default=2, help="fresh app.py starts to time (default 2)")
    parser.add_argument("--requests", type=int, default=20, help="requests in the one-client run (default 20)")
    parser.add_argument("--requests-each", type=int, default=5, help="requests per client at 8 clients (default 5)")
    parser.add_argument("--branch", choices=("scratch", "musicnn"), help="CNN branch to serve (default: the bundled one's)")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        model = checkpoint(args.branch, workdir) if args.branch else ROOT / "genrewiz" / "weights"
        clip = thirty_second_clip(workdir)
        load = os.getloadavg()
        print(f"machine: {os.cpu_count()} CPUs, load average {load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f} (1/5/15 min)")
        print(f"clip: {clip.name} ({sf.info(clip).duration:.1f} s, {clip.stat().st_size / 1024:.0f} KiB)")
        print(f"examples cached at start-up: {len(app.list_examples())}")

        gradio_import = bare_gradio_import(3)
        print(f"\nbare `import gradio` (median of 3):       {gradio_import:6.2f} s")

        server = client = None
        for run in range(args.cold_runs):
            if server is not None:
                server.stop()
            answering, first, server, client = cold_start(workdir, clip, model)
            print(f"cold start {run + 1}: server answering {answering:6.2f} s, first prediction {first:6.2f} s")
        assert server is not None and client is not None
        print(f"weights: {server.model_note()}")

        try:
            times, wall = latencies(server.url, clip, 1, args.requests)
            one_p50 = float(np.percentile(times, 50))
            print(f"\n/predict, 1 client:   {summary(times)}   {len(times) / wall:.2f} req/s")
            times, wall = latencies(server.url, clip, 8, args.requests_each)
            eight_rate = len(times) / wall
            print(f"/predict, 8 clients:  {summary(times)}   {eight_rate:.2f} req/s")
            cached = []
            for index in range(len(app.list_examples())):
                start = time.perf_counter()
                client.predict(index, api_name="/load_example")
                cached.append(time.perf_counter() - start)
            if cached:
                print(f"cached example:       {summary(cached)}")
        finally:
            server.stop()
        verdicts = [
            f"p50 at 1 client {1000 * one_p50:.0f} ms (target <= 300 ms): {'met' if one_p50 <= 0.3 else 'NOT met'}",
            f"8 clients {eight_rate:.2f} requests/s (target >= 4): {'met' if eight_rate >= 4 else 'NOT met'}",
        ]
        if cached:
            cached_p50 = float(np.percentile(cached, 50))
            verdicts.append(f"cached example p50 {1000 * cached_p50:.0f} ms (target <= 100 ms): {'met' if cached_p50 <= 0.1 else 'NOT met'}")
        print("targets:\n  " + "\n  ".join(verdicts))


if __name__ == "__main__":
    main()
