"""Evaluation artifacts a reader needs to trust a number: report, confusion matrix, curves, metrics.json."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from sklearn.metrics import (  # noqa: E402
    accuracy_score,
    balanced_accuracy_score,
    classification_report,
    confusion_matrix,
    f1_score,
)

REPO_ROOT = Path(__file__).resolve().parents[1]


def scores(truth: list[str], predicted: list[str], labels: list[str]) -> dict:
    """Accuracy, balanced accuracy (mean per-class recall), macro-F1 and per-class F1 of clip-level predictions.

    GTZAN copies are often unbalanced, where accuracy alone flatters a model that favours the big classes.
    """
    per_class = f1_score(truth, predicted, labels=labels, average=None, zero_division=0)
    return {
        "accuracy": float(accuracy_score(truth, predicted)),
        "balanced_accuracy": float(balanced_accuracy_score(truth, predicted)),
        "macro_f1": float(f1_score(truth, predicted, labels=labels, average="macro", zero_division=0)),
        "per_class_f1": {label: float(f) for label, f in zip(labels, per_class)},
    }


def git_commit() -> dict:
    """The commit the code ran from, and whether the working tree had changes, for the record."""
    def git(*args: str) -> str | None:
        try:
            return subprocess.run(["git", *args], cwd=REPO_ROOT, capture_output=True, text=True, check=True).stdout.strip()
        except (OSError, subprocess.CalledProcessError):
            return None

    status = git("status", "--porcelain", "--untracked-files=no")
    return {"git_commit": git("rev-parse", "HEAD"), "git_dirty": bool(status) if status is not None else None}


def plot_confusion(truth: list[str], predicted: list[str], labels: list[str], path: Path, title: str) -> None:
    """Counts per (true, predicted) genre; rows are the true genre."""
    matrix = confusion_matrix(truth, predicted, labels=labels)
    fig, ax = plt.subplots(figsize=(6.4, 5.6), dpi=90)
    ax.imshow(matrix, cmap="Blues")
    ax.set(xticks=range(len(labels)), yticks=range(len(labels)), xlabel="predicted", ylabel="true", title=title)
    ax.set_xticklabels(labels, rotation=45, ha="right")
    ax.set_yticklabels(labels)
    for (i, j), count in np.ndenumerate(matrix):
        if count:
            ax.text(j, i, str(count), ha="center", va="center", color="white" if count > matrix.max() / 2 else "black")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def plot_curves(histories: list[dict], path: Path, title: str) -> None:
    """Accuracy and loss per epoch, train and validation; one faint line per run, their mean bold."""
    fig, axes = plt.subplots(1, 2, figsize=(10, 4), dpi=80)
    for ax, metric in zip(axes, ("accuracy", "loss")):
        for part, color in (("train", "tab:blue"), ("valid", "tab:orange")):
            key = f"{part}_{metric}"
            runs = [[row[key] for row in h["epochs"] if key in row] for h in histories]
            runs = [r for r in runs if r]
            if not runs:
                continue
            for run in runs if len(runs) > 1 else []:
                ax.plot(range(1, len(run) + 1), run, color=color, alpha=0.25, linewidth=0.8)
            length = min(len(r) for r in runs)
            mean = np.mean([r[:length] for r in runs], axis=0)
            name = "held-out" if part == "valid" and len(runs) > 1 else part
            ax.plot(range(1, length + 1), mean, color=color, linewidth=2, label=f"{name}" + (" (mean)" if len(runs) > 1 else ""))
        ax.set(xlabel="epoch", ylabel=metric, title=metric)
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def write_evaluation(
    out_dir: Path,
    truth: list[str],
    predicted: list[str],
    labels: list[str],
    histories: list[dict],
    meta: dict,
    title: str,
) -> dict:
    """Write classification_report.txt, confusion_matrix.png, curves.png and metrics.json; return the metrics."""
    out_dir.mkdir(parents=True, exist_ok=True)
    text = classification_report(truth, predicted, labels=labels, digits=3, zero_division=0)
    (out_dir / "classification_report.txt").write_text(f"{title}\n\n{text}", encoding="utf-8")
    plot_confusion(truth, predicted, labels, out_dir / "confusion_matrix.png", title)
    if any(h.get("epochs") for h in histories):
        plot_curves(histories, out_dir / "curves.png", title)
    metrics = {**meta, **scores(truth, predicted, labels), "n_clips": len(truth), "labels": labels, **git_commit()}
    metrics["confusion_matrix"] = confusion_matrix(truth, predicted, labels=labels).tolist()
    (out_dir / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n", encoding="utf-8")
    return metrics


def write_cv_report(
    out_dir: Path, truth: list[str], predicted: list[str], labels: list[str], folds: list[dict], histories: list[dict]
) -> dict:
    """The k-fold report: mean ± std over folds, pooled confusion matrix and report, every fold's curves."""
    accuracy = [f["accuracy"] for f in folds]
    macro_f1 = [f["macro_f1"] for f in folds]
    balanced = [f["balanced_accuracy"] for f in folds]
    times = [f["training_time_s"] for f in folds]
    n = len(truth)
    meta = {
        "protocol": f"stratified {len(folds)}-fold cross-validation over {n} clips; each fold's final weights "
                    "scored on its held-out clips (no model selection on them)",
        "split": "kfold",
        "folds": len(folds),
        "per_fold": folds,
        "accuracy_std": float(np.std(accuracy)),
        "macro_f1_std": float(np.std(macro_f1)),
        "seconds_per_fold": float(np.mean(times)),
        "training_time_s": float(np.sum(times)),
        "recipe": histories[0]["recipe"],
        "epochs_per_fold": len(histories[0]["epochs"]),
    }
    title = f"{len(folds)}-fold CV, {n} clips (pooled held-out predictions)"
    metrics = write_evaluation(out_dir, truth, predicted, labels, histories, meta, title)
    pooled = {"pooled_accuracy": metrics["accuracy"], "pooled_macro_f1": metrics["macro_f1"],
              "pooled_balanced_accuracy": metrics["balanced_accuracy"]}
    metrics.update(pooled, accuracy=float(np.mean(accuracy)), macro_f1=float(np.mean(macro_f1)),
                   balanced_accuracy=float(np.mean(balanced)))
    (out_dir / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n", encoding="utf-8")
    return metrics
