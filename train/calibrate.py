"""Confidences that mean what they say: temperature scaling, expected calibration error, reliability diagrams.

A network trained with cross-entropy on a few hundred clips, with dropout and class weights,
is rarely calibrated: its top probability can sit well below (or above) how often it is right.
One temperature dividing the logits (Guo et al., 2017) fixes most of that without changing
any answer. It must be fitted on predictions the weights did not train on: the valid list for
train-only weights, out-of-fold predictions (cross-fitting) for weights trained on everything.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from genrewiz.model import PCRNN

ECE_BINS = 10


def rescale(window_probabilities: np.ndarray, temperature: float) -> np.ndarray:
    """Window probabilities as they would be with ``temperature`` dividing the logits that produced them.

    ``log p`` equals the logits up to a constant per row, so ``softmax(log p / T)`` is exactly
    ``softmax(logits / T)``.
    """
    logits = np.log(np.clip(window_probabilities.astype(np.float64), 1e-30, None)) / temperature
    logits -= logits.max(axis=-1, keepdims=True)
    scaled = np.exp(logits)
    return scaled / scaled.sum(axis=-1, keepdims=True)


def clip_probabilities(windows: list[np.ndarray], temperature: float = 1.0) -> np.ndarray:
    """Whole-clip probabilities ``(clips, labels)``: the mean over each clip's windows, as the predictor takes it."""
    return np.stack([rescale(w, temperature).mean(axis=0) for w in windows])


def negative_log_likelihood(windows: list[np.ndarray], truth: np.ndarray, temperature: float) -> float:
    """Mean negative log-probability of the true genre, clip by clip."""
    probs = clip_probabilities(windows, temperature)
    return float(-np.log(np.clip(probs[np.arange(len(truth)), truth], 1e-12, None)).mean())


def fit_temperature(windows: list[np.ndarray], truth: np.ndarray, bounds: tuple[float, float] = (0.05, 20.0)) -> float:
    """The temperature that minimises the clips' negative log-likelihood (golden-section search on log T).

    ``windows`` holds each clip's window probabilities at temperature 1, ``truth`` its genre index.
    """
    low, high = np.log(bounds[0]), np.log(bounds[1])
    ratio = (np.sqrt(5) - 1) / 2
    a, b = high - ratio * (high - low), low + ratio * (high - low)
    fa, fb = (negative_log_likelihood(windows, truth, float(np.exp(t))) for t in (a, b))
    for _ in range(60):
        if fa < fb:
            high, b, fb = b, a, fa
            a = high - ratio * (high - low)
            fa = negative_log_likelihood(windows, truth, float(np.exp(a)))
        else:
            low, a, fa = a, b, fb
            b = low + ratio * (high - low)
            fb = negative_log_likelihood(windows, truth, float(np.exp(b)))
    return float(np.exp((low + high) / 2))


def reliability(probabilities: np.ndarray, truth: np.ndarray, bins: int = ECE_BINS) -> dict:
    """Expected calibration error of the top answer and the per-bin table behind it.

    Bins are equal-width on the top probability; ECE is the clip-weighted mean gap between a
    bin's mean confidence and its accuracy.
    """
    confidence = probabilities.max(axis=1)
    correct = probabilities.argmax(axis=1) == truth
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.clip(np.digitize(confidence, edges[1:-1]), 0, bins - 1)
    table, ece = [], 0.0
    for b in range(bins):
        members = which == b
        if members.any():
            gap = abs(float(confidence[members].mean()) - float(correct[members].mean()))
            ece += gap * members.mean()
            table.append({"low": float(edges[b]), "high": float(edges[b + 1]), "n": int(members.sum()),
                          "confidence": float(confidence[members].mean()), "accuracy": float(correct[members].mean())})
    return {"ece": float(ece), "mean_confidence": float(confidence.mean()), "accuracy": float(correct.mean()),
            "bins": table}


def plot_reliability(curves: dict[str, dict], path: Path, title: str) -> None:
    """A reliability diagram: accuracy against confidence per bin, one line per condition, the diagonal for reference."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.2, 5.0), dpi=90)
    ax.plot([0, 1], [0, 1], color="grey", linestyle="--", linewidth=1, label="perfectly calibrated")
    for name, curve in curves.items():
        bins = curve["bins"]
        ax.plot([b["confidence"] for b in bins], [b["accuracy"] for b in bins], marker="o",
                label=f"{name} (ECE {curve['ece']:.3f})")
    ax.set(xlim=(0, 1), ylim=(0, 1), xlabel="top probability (confidence)", ylabel="accuracy", title=title)
    ax.grid(alpha=0.3)
    ax.legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def reconfigured(model: PCRNN, **changes: float) -> PCRNN:
    """A copy of ``model`` with the same weights and some constructor settings changed (written to ``config.json`` on save).

    For the settings that act after training: ``temperature``, ``tag_evidence``.
    """
    calibrated = PCRNN(**(dict(model._hub_mixin_config) | changes))
    calibrated.load_state_dict(model.state_dict())
    return calibrated.eval()
