"""Inference speed: where the time goes per song, the CLI's throughput, and a DistilHuBERT peer.

Prints, for a 30 s and a 3 min MP3 (44.1 kHz stereo, cut from the example clips): decode, mel,
model and end-to-end times (medians), the total/decode ratio, and the same songs through a
DistilHuBERT-sized ``HubertForSequenceClassification`` (random weights: same compute as the
Hugging Face audio course's GTZAN model, no download). Then files/s of ``genrewiz predict``
over a folder of 50 clips, in-process (model loaded) and as a fresh command.

    python benchmarks/bench_inference.py            # ~3 minutes on 2 cores
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

from genrewiz import GenreClassifier
from genrewiz.audio import load_audio
from genrewiz.cli import find_audio_files, predict_files
from genrewiz.features import log_mel, make_windows
from genrewiz.hub import BUNDLED_DIR

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = sorted((ROOT / "examples").glob("*.ogg"))
PEER_RATE = 16_000
PEER_CHUNK_S = 30.0


def median_ms(fn: Callable[[], object], repeats: int) -> float:
    """Median wall time of ``fn`` in milliseconds, after one warm-up call."""
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times)


def music(seconds: float, rate: int = 44_100, offset: int = 0) -> np.ndarray:
    """Real music from the example clips, looped to ``seconds``, as 44.1 kHz stereo."""
    clips = [load_audio(p, rate).samples for p in EXAMPLES]
    song = np.concatenate(clips[offset % len(clips) :] + clips[: offset % len(clips)])
    song = np.resize(song, int(seconds * rate))
    return np.stack([song, 0.8 * song], axis=1)


def peer_model() -> torch.nn.Module:
    """DistilHuBERT-sized audio classifier (2 transformer layers of 768, conv feature encoder)."""
    from transformers import HubertConfig, HubertForSequenceClassification

    config = HubertConfig(num_hidden_layers=2, hidden_size=768, num_attention_heads=12, intermediate_size=3072, num_labels=10)
    torch.manual_seed(0)
    return HubertForSequenceClassification(config).eval()


def peer_predict(model: torch.nn.Module, path: Path) -> np.ndarray:
    """Whole-song peer prediction: 16 kHz waveform in 30 s chunks (its training length), mean of softmax."""
    samples = load_audio(path, PEER_RATE).samples
    chunk = int(PEER_CHUNK_S * PEER_RATE)
    pieces = [samples[i : i + chunk] for i in range(0, len(samples), chunk)]
    with torch.inference_mode():
        probs = [torch.softmax(model(torch.from_numpy(p)[None]).logits, dim=-1) for p in pieces]
    return torch.cat(probs).mean(dim=0).numpy()


def bench_song(classifier: GenreClassifier, peer: torch.nn.Module | None, path: Path, repeats: int) -> dict[str, float]:
    config = classifier.config
    audio = load_audio(path, config.sample_rate)
    mel = log_mel(audio.samples, config)
    figures = {
        "decode": median_ms(lambda: load_audio(path, config.sample_rate), repeats),
        "mel": median_ms(lambda: log_mel(audio.samples, config), repeats),
        "model": median_ms(lambda: classifier.window_probabilities(make_windows(mel, config).data), repeats),
        "total": median_ms(lambda: classifier.predict(path), repeats),
    }
    if peer is not None:
        figures["peer_decode"] = median_ms(lambda: load_audio(path, PEER_RATE), repeats)
        figures["peer_total"] = median_ms(lambda: peer_predict(peer, path), max(1, repeats // 2))
    return figures


def bench_folder(classifier: GenreClassifier, folder: Path, jobs: int) -> tuple[float, float]:
    """Files/s in-process (model already loaded) and as a fresh ``genrewiz predict`` command."""
    files = find_audio_files([folder])
    start = time.perf_counter()
    rows = list(predict_files(classifier, files, top=3, jobs=jobs))
    in_process = len(rows) / (time.perf_counter() - start)
    assert all(row.ok for row in rows)
    command = [sys.executable, "-m", "genrewiz", "predict", str(folder), "-q", "--format", "csv", "--jobs", str(jobs)]
    command += ["--model", str(BUNDLED_DIR), "--output", str(folder / "out.csv")]
    start = time.perf_counter()
    subprocess.run(command, check=True)
    return in_process, len(files) / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--files", type=int, default=50)
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--no-peer", action="store_true", help="skip the DistilHuBERT comparison")
    args = parser.parse_args()

    classifier = GenreClassifier.from_pretrained(BUNDLED_DIR)
    peer = None if args.no_peer else peer_model()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; times are medians of {args.repeats} runs\n")
    with tempfile.TemporaryDirectory() as tmp:
        tmp_dir = Path(tmp)
        header = f"{'clip':<12}{'decode':>9}{'mel':>9}{'model':>9}{'total':>9}{'tot/dec':>9}"
        print(header + (f"{'peer':>10}{'speed-up':>10}" if peer else ""))
        for name, seconds in (("30 s mp3", 30.0), ("3 min mp3", 180.0)):
            path = tmp_dir / f"{seconds:.0f}s.mp3"
            sf.write(path, music(seconds), 44_100)
            f = bench_song(classifier, peer, path, args.repeats)
            line = f"{name:<12}{f['decode']:>7.0f}ms{f['mel']:>7.0f}ms{f['model']:>7.0f}ms{f['total']:>7.0f}ms"
            line += f"{f['total'] / f['decode']:>8.2f}x"
            if peer:
                line += f"{f['peer_total']:>8.0f}ms{f['peer_total'] / f['total']:>9.1f}x"
            print(line)

        mel = log_mel(load_audio(tmp_dir / "180s.mp3", classifier.config.sample_rate).samples, classifier.config)
        windows = make_windows(mel, classifier.config).data
        by_threads = []
        for threads in (1, 2):
            torch.set_num_threads(threads)
            by_threads.append(median_ms(lambda: classifier.window_probabilities(windows), args.repeats))
        torch.set_num_threads(1)
        print(f"\nmodel on the 3 min song ({len(windows)} windows): {by_threads[0]:.0f} ms with 1 torch thread, "
              f"{by_threads[1]:.0f} ms with 2 ({by_threads[1] / by_threads[0]:.2f}x)")

        folder = tmp_dir / "library"
        folder.mkdir()
        for i in range(args.files):
            sf.write(folder / f"clip{i:03d}.mp3", music(30.0, offset=i)[i * 441 :], 44_100)
        in_process, command = bench_folder(classifier, folder, args.jobs)
        print(f"\nfolder of {args.files} x 30 s mp3, --jobs {args.jobs}: "
              f"{in_process:.1f} files/s with the model loaded, {command:.1f} files/s as a fresh command")


if __name__ == "__main__":
    main()
