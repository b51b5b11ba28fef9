"""Ray Data's overhead: ``genrewiz predict --ray`` next to the plain CLI, in the same run, and a scaling model.

Over a folder of 30 s MP3s (44.1 kHz stereo, cut from the example clips) prints files/s of:

- the plain CLI as a fresh command (``--jobs`` decoding processes + the model in the main one),
- ``predict --ray`` as a fresh command (starts a local Ray instance with all cores),
- both in process, once started: ``predict_files`` with the model loaded, and ``predict_to`` on a
  warm ``ray.init(num_cpus=CORES)`` (second pass; the first starts Ray's workers),

with the Ray/CLI ratios, then the CPU cost of one file per stage (decode + log-mel, model; one
thread) and what it means for a million-track run: files/s per worker core, core-hours, and
the share of cores the model actors need.

    python benchmarks/bench_ray.py              # ~3 minutes on 2 cores
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import ray
import soundfile as sf
from threadpoolctl import threadpool_limits

from bench_inference import music
from genrewiz import GenreClassifier
from genrewiz.audio import find_audio_files
from genrewiz.batch import predict_files
from genrewiz.distributed import predict_to
from genrewiz.hub import BUNDLED_DIR
from genrewiz.predict import analyse

TRACKS = 1_000_000


def command_rate(args: list[str], files: int) -> float:
    """Files/s of one ``genrewiz`` command, start-up included."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "RAY_ADDRESS": "local"}
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "genrewiz", *args, "--model", str(BUNDLED_DIR), "-q"], check=True, env=env)
    return files / (time.perf_counter() - start)


def stage_seconds(classifier: GenreClassifier, files: list[Path]) -> tuple[float, float]:
    """Median CPU seconds of decode + log-mel and of the model for one file, one thread."""
    decode, model = [], []
    with threadpool_limits(1):
        for path in files:
            start = time.process_time()
            analysis = analyse(path, classifier.config)
            middle = time.process_time()
            classifier.classify(analysis)
            decode.append(middle - start)
            model.append(time.process_time() - middle)
    return statistics.median(decode), statistics.median(model)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=100, help="30 s MP3s in the folder (default 100)")
    parser.add_argument("--cores", type=int, default=os.cpu_count() or 1, help="CPUs for both (default: all)")
    args = parser.parse_args()

    classifier = GenreClassifier.from_pretrained(BUNDLED_DIR)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "library"
        folder.mkdir()
        for i in range(args.files):
            sf.write(folder / f"clip{i:04d}.mp3", music(30.0, offset=i)[i * 441 :], 44_100)
        files = find_audio_files([folder])
        n, cores = len(files), args.cores

        cli_cmd = command_rate(["predict", str(folder), "--format", "jsonl", "-o", f"{tmp}/cli.jsonl", "-j", str(cores)], n)
        ray_cmd = command_rate(["predict", "--ray", str(folder), "--format", "jsonl", "-o", f"{tmp}/ray_cmd"], n)

        start = time.perf_counter()
        rows = list(predict_files(classifier, files, top=3, jobs=cores))
        cli_warm = n / (time.perf_counter() - start)
        assert all(row.ok for row in rows)

        ray.init(num_cpus=cores, include_dashboard=False, log_to_driver=False)
        ray_warm = 0.0
        for _ in range(2):  # the first pass starts Ray's workers and imports torch in them
            shutil.rmtree(f"{tmp}/ray_warm", ignore_errors=True)
            start = time.perf_counter()
            counts = predict_to([str(folder)], f"{tmp}/ray_warm", fmt="jsonl", model=str(BUNDLED_DIR), quiet=True)
            ray_warm = n / (time.perf_counter() - start)
            assert counts.files == n and counts.failed == 0
        ray.shutdown()

        decode_s, model_s = stage_seconds(classifier, files[:20])

    load = " / ".join(f"{x:.1f}" for x in os.getloadavg())
    print(f"{n} x 30 s MP3, {cores} cores (load average {load} at the end), bundled weights "
          f"({classifier.model.cnn_branch} CNN branch)\n")
    print(f"{'':<34}{'plain CLI':>12}{'Ray Data':>12}{'Ray / CLI':>12}")
    print(f"{'fresh command (start-up included)':<34}{cli_cmd:>7.1f} f/s{ray_cmd:>7.1f} f/s{ray_cmd / cli_cmd:>11.2f}x")
    print(f"{'in process, once started':<34}{cli_warm:>7.1f} f/s{ray_warm:>7.1f} f/s{ray_warm / cli_warm:>11.2f}x")

    per_core = 1 / (decode_s + model_s)
    print(f"\none file, one thread: decode + log-mel {1000 * decode_s:.0f} ms, model {1000 * model_s:.0f} ms "
          f"-> {per_core:.1f} files/s per core if every core is busy")
    print(f"measured on Ray here: {ray_warm / cores:.1f} files/s per core ({ray_warm / cores / per_core:.0%} of that)")
    rate = ray_warm / cores
    core_hours = TRACKS / rate / 3600
    print(f"{TRACKS:,} tracks at {rate:.1f} files/s per core: {core_hours:.0f} core-hours; "
          f"on 10 x 16 cores {core_hours / 160 * 60:.0f} min, on 100 x 16 cores {core_hours / 1600 * 60:.0f} min "
          f"(+ reading {TRACKS * 0.5 / 1e6:.1f} TB of 30 s MP3s at 0.5 MB each)")
    print(f"model actors need about {model_s / (decode_s + model_s):.0%} of the cores, decoding tasks the rest")


if __name__ == "__main__":
    main()
