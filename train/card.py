"""The model card (``README.md`` in Hub conventions) and the finished checkpoint folder.

    python -m train.card --model runs/mini-all --evaluation runs/mini-cv --out genrewiz/weights

Copies the weights, ``config.json`` and ``history.json`` of ``--model`` and the evaluation
artifacts of ``--evaluation`` (``metrics.json``, plots, report) into ``--out``, then writes a
card from them: what the model is, how it was trained, its numbers with their protocol, its limits.
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

from huggingface_hub import EvalResult, ModelCard, ModelCardData

from genrewiz.model import PCRNN

EVALUATION_FILES = ("metrics.json", "confusion_matrix.png", "curves.png", "classification_report.txt")
MODEL_FILES = ("config.json", "model.safetensors", "history.json")

LIMITS = """\
- **GTZAN's known faults.** Sturm (2013, "The GTZAN dataset: its contents, its faults, their effects on
  evaluation") found exact and near repetitions, mislabelled clips, distorted recordings and many clips per
  artist in GTZAN. A random split puts an artist's songs on both sides and inflates accuracy; the
  artist-filtered split (Kereliuk, Sturm and Larsen 2015; lists in the public `coreyker/dnn-mgr` repository)
  is the fair protocol on the full set.
- **10 Western genres only** (blues, classical, country, disco, hiphop, jazz, metal, pop, reggae, rock), taken
  from recordings of around 2000. Any other music is forced into one of these ten; treat the output as
  "which of these ten does it sound closest to", not as a genre label for arbitrary music.
- **Small training set, small model.** An ~86k-parameter model trained from scratch on GTZAN alone; expect
  errors on production styles, recording quality and eras GTZAN does not cover.
"""


def _fmt(value: float | None, std: float | None = None, pct: bool = True) -> str:
    if value is None:
        return "n/a"
    scale, unit = (100, " %") if pct else (1, "")
    text = f"{value * scale:.1f}" if pct else f"{value:.3f}"
    if std is not None:
        text += f" ± {std * scale:.1f}" if pct else f" ± {std:.3f}"
    return text + unit


def card_text(model_dir: Path, about_data: str | None = None, reproduce: str | None = None) -> str:
    """The card for a checkpoint folder holding ``config.json``, ``metrics.json`` and ``history.json``.

    ``about_data`` says in a sentence which audio the model saw (e.g. a named subset of GTZAN);
    ``reproduce`` replaces the recorded training commands in the "Reproduce" section.
    """
    metrics = json.loads((model_dir / "metrics.json").read_text(encoding="utf-8"))
    history_file = model_dir / "history.json"
    history = json.loads(history_file.read_text(encoding="utf-8")) if history_file.is_file() else {}
    model = PCRNN.from_pretrained(model_dir)
    params = sum(p.numel() for p in model.parameters())
    f = model.features
    kfold = metrics.get("split") == "kfold"
    split_name = f"{metrics.get('folds')}-fold cross-validation" if kfold else metrics.get("split", "?")
    data = ModelCardData(
        library_name="genrewiz",
        license="mit",
        pipeline_tag="audio-classification",
        tags=["audio-classification", "music-genre-classification", "gtzan", "pytorch", "pcrnn"],
        datasets=["gtzan"],
        metrics=["accuracy", "f1"],
        model_name="GenreWiz PCRNN (GTZAN)",
        eval_results=[
            EvalResult(task_type="audio-classification", dataset_type="gtzan", dataset_name="GTZAN",
                       dataset_split=split_name, metric_type="accuracy", metric_value=round(metrics["accuracy"], 4)),
            EvalResult(task_type="audio-classification", dataset_type="gtzan", dataset_name="GTZAN",
                       dataset_split=split_name, metric_type="f1", metric_name="macro-F1",
                       metric_value=round(metrics["macro_f1"], 4)),
        ],
    )
    recipe = history.get("recipe") or metrics.get("recipe") or {}
    recipe_rows = "\n".join(f"| `{k}` | {v} |" for k, v in recipe.items())
    per_class = "\n".join(f"| {label} | {score:.2f} |" for label, score in metrics.get("per_class_f1", {}).items())
    n_train = history.get("n_train", "?")
    train_time = history.get("training_time_s")
    lines = [
        "# GenreWiz PCRNN: 10-genre music classifier trained on GTZAN",
        "",
        f"A parallel CNN-RNN ({params:,} parameters) over log-mel spectrograms: five Conv2d/MaxPool blocks and a "
        "bidirectional GRU read the same window, their features are concatenated into one linear layer. The input "
        f"is a window of {f.window_frames} frames x {f.n_mels} mel bands ({f.window_seconds:.1f} s at {f.sample_rate} Hz, "
        f"hop {f.hop_length}); a song is cut into windows every {f.window_hop_frames} frames and the window "
        "probabilities are averaged. `config.json` carries the labels and the exact feature settings.",
        "",
        "```python",
        "from genrewiz import GenreClassifier",
        "",
        "classifier = GenreClassifier.from_pretrained()  # or a Hub repo id / a local folder",
        "print(classifier.predict(\"song.mp3\").top(3))",
        "```",
        "",
        "## Training",
        "",
        *([f"Data: {about_data}", ""] if about_data else []),
        f"Trained on **{n_train} clips** ({history.get('split', '?')}) in {_fmt_time(train_time)} on "
        f"{history.get('device', '?')}, {len(history.get('epochs', []))} epochs. Spectrograms come from "
        "`genrewiz.predict.analyse`, the same code the app runs. Optimiser RMSprop with cross-entropy on "
        "random 640-frame crops of circularly shifted songs, SpecAugment-style time/frequency masking and mixup; "
        "learning rate warmed up, then cosine-decayed.",
        "",
        "| setting | value |",
        "|---|---|",
        recipe_rows,
        "",
        "## Evaluation",
        "",
        f"Protocol: {metrics.get('protocol', '?')}. {metrics.get('n_clips', '?')} clips scored.",
        "",
        "| metric | value |",
        "|---|---|",
        f"| clip accuracy | {_fmt(metrics['accuracy'], metrics.get('accuracy_std'))} |",
        f"| macro-F1 | {_fmt(metrics['macro_f1'], metrics.get('macro_f1_std'), pct=False)} |",
    ]
    if kfold:
        lines += [
            f"| pooled accuracy (all held-out predictions) | {_fmt(metrics.get('pooled_accuracy'))} |",
            f"| pooled macro-F1 | {_fmt(metrics.get('pooled_macro_f1'), pct=False)} |",
            f"| training time per fold | {_fmt_time(metrics.get('seconds_per_fold'))} |",
            "",
            "Mean ± standard deviation over folds. Each fold trains the same fixed-length recipe from scratch and "
            "its final weights are scored on its held-out clips; the shipped weights are that recipe trained on all "
            f"{metrics.get('n_clips', '?')} clips, so they have no held-out score of their own.",
            "",
            "**These numbers are optimistic.** Consecutive GTZAN ids often share an artist (sometimes the same "
            "song), and a stratified random fold puts them on both sides, so the model is partly scored on artists "
            "it was trained on. The fair protocol, the artist-filtered split on the full 1000-clip set, typically "
            "gives clearly lower accuracy. The evaluation set is also tiny: one clip is several points of accuracy.",
        ]
    lines += [
        "",
        "Per-class F1" + (" (pooled over folds)" if kfold else "") + ":",
        "",
        "| genre | F1 |",
        "|---|---|",
        per_class,
        "",
        "![confusion matrix](confusion_matrix.png)",
        "",
        "![training curves](curves.png)",
        "",
        "## Limitations",
        "",
        LIMITS,
        "## Reproduce",
        "",
        "From a GenreWiz checkout (commit " + f"`{(metrics.get('git_commit') or '?')[:10]}`):",
        "",
        "```bash",
        *([reproduce] if reproduce else [c for c in (metrics.get("command"), history.get("command")) if c]),
        "```",
        "",
    ]
    card = ModelCard(f"---\n{data.to_yaml()}\n---\n\n" + "\n".join(lines))
    return str(card)


def _fmt_time(seconds: float | None) -> str:
    if seconds is None:
        return "n/a"
    return f"{seconds / 60:.1f} min" if seconds >= 90 else f"{seconds:.0f} s"


def finish_checkpoint(
    model_dir: Path,
    evaluation_dir: Path | None = None,
    out_dir: Path | None = None,
    about_data: str | None = None,
    reproduce: str | None = None,
) -> Path:
    """Gather weights and evaluation artifacts into ``out_dir`` and write its ``README.md`` card."""
    out_dir = out_dir or model_dir
    out_dir.mkdir(parents=True, exist_ok=True)
    sources = [(model_dir, MODEL_FILES)] + ([(evaluation_dir, EVALUATION_FILES)] if evaluation_dir else [])
    for folder, names in sources:
        for name in names:
            if (folder / name).is_file() and (folder / name).resolve() != (out_dir / name).resolve():
                shutil.copy2(folder / name, out_dir / name)
    metrics_file, history_file = out_dir / "metrics.json", out_dir / "history.json"
    if not metrics_file.is_file():
        raise FileNotFoundError(f"no metrics.json in {out_dir}: run python -m train.evaluate first, or pass --evaluation")
    if evaluation_dir and history_file.is_file():
        metrics = json.loads(metrics_file.read_text(encoding="utf-8"))
        history = json.loads(history_file.read_text(encoding="utf-8"))
        metrics["shipped_model"] = {k: history.get(k) for k in ("split", "n_train", "training_time_s", "device", "command")}
        metrics["shipped_model"]["epochs"] = len(history.get("epochs", []))
        metrics_file.write_text(json.dumps(metrics, indent=2) + "\n", encoding="utf-8")
    (out_dir / "README.md").write_text(card_text(out_dir, about_data, reproduce), encoding="utf-8")
    return out_dir


def main(argv: list[str] | None = None) -> Path:
    parser = argparse.ArgumentParser(prog="python -m train.card", description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True, type=Path, help="trained checkpoint folder")
    parser.add_argument("--evaluation", type=Path, help="folder with metrics.json and plots (default: --model)")
    parser.add_argument("--out", type=Path, help="finished checkpoint folder (default: --model)")
    parser.add_argument("--about-data", help="one sentence on the audio trained and scored on, for the card")
    parser.add_argument("--reproduce", help="the command that rebuilds this checkpoint, for the card")
    args = parser.parse_args(argv)
    out = finish_checkpoint(args.model, args.evaluation, args.out, args.about_data, args.reproduce)
    print(f"wrote {out / 'README.md'}")
    return out


if __name__ == "__main__":
    main()
