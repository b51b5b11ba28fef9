"""The musicnn PCRNN's graph before and after the exact rewrite (and int8), side by side in one process.

For a 30 s and a 150 s MP3 (44.1 kHz stereo, real music from the example clips), prints the
median decode and log-mel times and, for each graph, the model's median time, the end-to-end
estimate (decode + mel + model), its ratio to decoding (the issue's target: at most 2.5x for
30 s) and the 150 s / 30 s cost ratio (target: at most 5x); then each graph's answers against
the first's. The graphs' runs are interleaved round by round, so a busy machine slows them
alike; the load average is printed with the figures.

- ``--baseline REV``: the bundled ``model.onnx`` of git revision REV, run as that revision ran
  it (inputs ``x, patches, index``: all windows' distinct patches at once, 16 windows a batch);
- the bundled checkpoint of this tree, through :class:`genrewiz.engine.OnnxEngine` (with its
  AudioSet ear's patches where it has that ear: then its answers are another model's, and only
  the timings compare);
- ``--int8 DIR``: a checkpoint folder quantised by ``python -m train.quantize``.

    python benchmarks/bench_graphs.py --baseline efb9071 --int8 /tmp/int8-checkpoint   # ~2 minutes
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnxruntime as ort
import soundfile as sf

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from genrewiz.audio import load_audio  # noqa: E402
from genrewiz.engine import OnnxEngine, distinct_patches, softmax  # noqa: E402
from genrewiz.features import audioset_windows, log_mel, make_windows  # noqa: E402
from genrewiz.hub import BUNDLED_DIR  # noqa: E402
from genrewiz.predict import analyse  # noqa: E402

EXAMPLES = sorted((ROOT / "examples").glob("*.ogg"))


def music(path: Path, seconds: float, rate: int = 44_100) -> Path:
    """Real music from the example clips, looped to ``seconds``, written as a 44.1 kHz stereo MP3."""
    song = np.resize(np.concatenate([load_audio(p, rate).samples for p in EXAMPLES]), int(seconds * rate))
    sf.write(path, np.stack([song, 0.8 * song], axis=1), rate, format="MP3")
    return path


Runner = Callable[[np.ndarray, "np.ndarray | None"], np.ndarray]
"""A graph's window probabilities from musicnn windows and (for a graph with the AudioSet ear) its patches."""


def engine_runner(engine: OnnxEngine) -> Runner:
    """An engine's window probabilities, fed the ear's patches only where it has that ear."""
    return lambda windows, ear: engine.window_probabilities(windows, ear_patches=ear if engine.audioset_config else None)


def baseline_runner(onnx_path: Path) -> Runner:
    """A graph of inputs ``(x, patches, index)`` run as GenreWiz ran it before the two-stage graph."""
    options = ort.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads = 1, 1
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.log_severity_level = 3
    session = ort.InferenceSession(str(onnx_path), options, providers=["CPUExecutionProvider"])

    def run(windows: np.ndarray, ear: np.ndarray | None) -> np.ndarray:
        logits = []
        for i in range(0, len(windows), 16):
            x = np.ascontiguousarray(windows[i : i + 16])
            patches, index = distinct_patches(x, 187)
            logits.append(session.run(None, {"x": x, "patches": patches, "index": index})[0])
        return softmax(np.concatenate(logits))

    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline", metavar="REV", help="git revision whose bundled model.onnx to compare with")
    parser.add_argument("--int8", type=Path, metavar="DIR", help="a checkpoint folder quantised by train.quantize")
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()
    print(f"machine: {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f} at start")
    work = Path(tempfile.mkdtemp(prefix="bench-graphs-"))
    current = OnnxEngine.for_checkpoint(BUNDLED_DIR)
    assert current is not None and current.config is not None
    config = current.config
    graphs: dict[str, Runner] = {}
    if args.baseline:
        old = work / "baseline.onnx"
        blob = subprocess.run(["git", "show", f"{args.baseline}:genrewiz/weights/model.onnx"], cwd=ROOT, capture_output=True, check=True)
        old.write_bytes(blob.stdout)
        graphs[f"{args.baseline} graph"] = baseline_runner(old)
    graphs["this graph (exact rewrite)"] = engine_runner(current)
    if args.int8:
        quantised = OnnxEngine.for_checkpoint(args.int8)
        if quantised is None or quantised.quantization is None:
            parser.error(f"{args.int8} holds no quantised graph of its weights")
        graphs["this graph + int8 timbral"] = engine_runner(quantised)

    songs = {"30 s": music(work / "30s.mp3", 30.0), "150 s": music(work / "150s.mp3", 150.0)}
    stages: dict[str, dict[str, float]] = {}
    model_ms: dict[str, dict[str, list[float]]] = {name: {song: [] for song in songs} for name in graphs}
    answers: dict[str, dict[str, np.ndarray]] = {name: {} for name in graphs}
    for song, path in songs.items():
        decode, mel = [], []
        for _ in range(args.rounds):
            start = time.perf_counter()
            samples = load_audio(path, config.sample_rate).samples
            decode.append(time.perf_counter() - start)
            start = time.perf_counter()
            spectrogram = log_mel(samples, config)
            mel.append(time.perf_counter() - start)
        stages[song] = {"decode": 1000 * statistics.median(decode), "mel": 1000 * statistics.median(mel)}
        cut = make_windows(spectrogram, config)
        windows, ear = cut.data, None
        if current.audioset_config is not None:
            ear_mel = analyse(path, config, ear=current.audioset_config).ear_mel
            ear = audioset_windows(ear_mel, cut.start_frames * config.frame_seconds, config.window_seconds,
                                   current.audioset_config)
        for name, run in graphs.items():
            answers[name][song] = run(windows, ear).mean(axis=0)  # warm-up, and the answer
        for _ in range(args.rounds):
            for name, run in graphs.items():
                start = time.perf_counter()
                run(windows, ear)
                model_ms[name][song].append(1000 * (time.perf_counter() - start))

    print("\n| graph | song | decode | mel | model | end to end | / decode | 150 s / 30 s |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    first = next(iter(graphs))
    for name in graphs:
        total = {s: stages[s]["decode"] + stages[s]["mel"] + statistics.median(model_ms[name][s]) for s in songs}
        for song in songs:
            ratio = f"{total['150 s'] / total['30 s']:.2f}x" if song == "150 s" else ""
            print(f"| {name} | {song} | {stages[song]['decode']:.0f} ms | {stages[song]['mel']:.0f} ms | "
                  f"{statistics.median(model_ms[name][song]):.0f} ms | {total[song]:.0f} ms | "
                  f"{total[song] / stages[song]['decode']:.1f}x | {ratio} |")
    for name in graphs:
        speedup = {s: statistics.median(model_ms[first][s]) / statistics.median(model_ms[name][s]) for s in songs}
        gap = max(float(np.abs(answers[name][s] - answers[first][s]).max()) for s in songs)
        print(f"- {name}: model {speedup['30 s']:.2f}x / {speedup['150 s']:.2f}x as fast as {first} (30 s / 150 s); "
              f"largest probability difference from it {gap:.1e}")
    print(f"load average {os.getloadavg()[0]:.1f} at the end")


if __name__ == "__main__":
    main()
