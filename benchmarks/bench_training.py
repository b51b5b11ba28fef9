"""Training speed of the from-scratch PCRNN: its CNN branch as computed now against the original formulation.

Times one training step (forward, cross-entropy, backward, RMSprop) on a batch of 640 x 128
windows, with :class:`~genrewiz.model.ScratchCNN` (pool before ReLU, channels-last) and with
the original NCHW Conv2d -> ReLU -> MaxPool (``tests/test_speed_equivalence.py`` proves them
equal), interleaved in the same run with the same weights and data, and
prints the medians and the epoch time they give for ``--clips`` training clips (one window per
clip and step of ``--batch``, as ``train/train.py --cnn-branch scratch`` runs). Also times one
song's inference windows through the CNN branch alone.

    python benchmarks/bench_training.py            # ~2 minutes on 2 cores
"""

from __future__ import annotations

import argparse
import copy
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from genrewiz.model import PCRNN

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from test_speed_equivalence import original_scratch_cnn  # noqa: E402  (the reference the tests prove equal)


def original(model: PCRNN) -> PCRNN:
    """A copy of ``model`` whose CNN branch is computed as first written."""
    legacy = copy.deepcopy(model)
    legacy.cnn = original_scratch_cnn(model.cnn)
    return legacy


def step_seconds(model: PCRNN, optimizer: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor) -> float:
    start = time.perf_counter()
    loss = F.cross_entropy(model(x), y)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=16, help="windows per step (train.py's default: 16)")
    parser.add_argument("--steps", type=int, default=7, help="timed steps per layout (after one warm-up each)")
    parser.add_argument("--clips", type=int, default=800, help="training clips per epoch for the estimate (GTZAN: 800 of 1000)")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    fast = PCRNN().train()
    slow = original(fast)
    x = torch.randn(args.batch, 1, fast.features.window_frames, fast.features.n_mels)
    y = torch.randint(0, len(fast.labels), (args.batch,))
    optimizers = {name: torch.optim.RMSprop(m.parameters(), lr=1e-4) for name, m in (("original", slow), ("now", fast))}
    models = {"original": slow, "now": fast}
    times: dict[str, list[float]] = {name: [] for name in models}
    for name in models:  # warm-up: oneDNN picks and caches its kernels on the first call
        step_seconds(models[name], optimizers[name], x, y)
    for _ in range(args.steps):
        for name in models:
            times[name].append(step_seconds(models[name], optimizers[name], x, y))
    steps = -(-args.clips // args.batch)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} thread(s); batch {args.batch}, medians of {args.steps} steps")
    medians = {name: statistics.median(t) for name, t in times.items()}
    for name, median in medians.items():
        print(f"{name:<14} step {1000 * median:7.0f} ms   epoch of {args.clips} clips ~{steps * median:6.1f} s")
    print(f"speed-up: {medians['original'] / medians['now']:.2f}x per training step")

    song = torch.randn(12, 1, fast.features.window_frames, fast.features.n_mels)  # a 3-minute song's windows
    cnn_ms = {}
    with torch.inference_mode():
        for name, model in (("original", slow.eval()), ("now", fast.eval())):
            model.cnn(song)
            cnn_ms[name] = 1000 * statistics.median(
                [(lambda s: (model.cnn(song), time.perf_counter() - s)[1])(time.perf_counter()) for _ in range(args.steps)]
            )
    print(f"CNN branch on 12 windows (inference, torch): {cnn_ms['original']:.0f} ms original, {cnn_ms['now']:.0f} ms now")


if __name__ == "__main__":
    main()
