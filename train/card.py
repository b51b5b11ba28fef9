"""The model card (``README.md`` in Hub conventions) and the finished checkpoint folder.

    python -m train.card --model runs/final --evaluation runs/filtered --also runs/mini-cv --out runs/bundle

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

EVALUATION_FILES = ("metrics.json", "confusion_matrix.png", "curves.png", "classification_report.txt", "reliability.png")
MODEL_FILES = ("config.json", "model.safetensors", "model.onnx", "history.json")

CREDITS = """\
The CNN branch of a `cnn_branch: musicnn` checkpoint is **musicnn**'s `MSD_musicnn` tagger: J. Pons and
X. Serra, "musicnn: Pre-trained convolutional neural networks for music audio tagging", ISMIR 2019 LBD
(Music Technology Group, Universitat Pompeu Fabra; ISC licence), trained on the **Million Song Dataset**
(Bertin-Mahieux et al., ISMIR 2011). Its weights come from the `musicnn==0.1.0` wheel on PyPI, converted to
safetensors by GenreWiz's `train/convert_musicnn.py` (outputs match TensorFlow's within 2e-5). GTZAN:
G. Tzanetakis and P. Cook, "Musical genre classification of audio signals", IEEE TSAP 2002.
"""

LIMITS = """\
- **GTZAN's known faults.** Sturm (2013, "The GTZAN dataset: its contents, its faults, their effects on
  evaluation") found exact and near repetitions, mislabelled clips, distorted recordings and many clips per
  artist in GTZAN. A random split puts an artist's songs on both sides and inflates accuracy; the
  artist-filtered split (Kereliuk, Sturm and Larsen 2015; lists in the public `coreyker/dnn-mgr` repository)
  is the fair protocol on the full set.
- **10 Western genres only** (blues, classical, country, disco, hiphop, jazz, metal, pop, reggae, rock), taken
  from recordings of around 2000. Any other music is forced into one of these ten; treat the output as
  "which of these ten does it sound closest to", not as a genre label for arbitrary music.
- **Small training set.** The genre layers saw a few hundred GTZAN clips at most; expect errors on production
  styles, recording quality and eras GTZAN does not cover. A pretrained branch knows more music (a million
  songs of tags) but the genre decision on top of it is still GTZAN's.
"""


def architecture_text(model: PCRNN) -> str:
    """One paragraph on the checkpoint's architecture and input, for either CNN branch, with or without the AudioSet ear."""
    f = model.features
    params = sum(p.numel() for p in model.parameters())
    if model.cnn_branch == "musicnn":
        branch = (f"its CNN branch is musicnn's `MSD_musicnn` trunk (pretrained on the Million Song Dataset, kept "
                  "frozen) over the window's 3-second patches, their 200-unit embeddings mean- and max-pooled into "
                  "400 features")
        scale = "musicnn's `log10(1 + 10000 * power)` compression"
    else:
        branch = "its CNN branch is five Conv2d/MaxPool blocks trained from scratch (256 features)"
        scale = "dB relative to the clip's peak"
    ear, joined = "", "the two are"
    if model.ear is not None:
        a = model.audioset_features
        ear = (f"; a second pretrained ear, EfficientAT's mn04 AudioSet tagger (kept frozen), hears each window as "
               f"{a.patches_per_window} 10-s patches at {a.sample_rate} Hz: its {model.ear.out_features}-unit hidden layer "
               "joins the others, "
               f"its own AudioSet genre log-probabilities are added to the logits with weight {model.audioset_prior:g}, "
               "and a logistic layer over its music, speech, silence, noise and test-tone classes gives the "
               "probability that the input is music at all")
        joined = "the three are"
    level = "" if f.level_db is None else f" Each song is first brought to a level of {f.level_db:g} dB below full scale."
    return (
        f"A parallel CNN-RNN (PCRNN, {params:,} parameters): {branch}; a bidirectional GRU reads the same log-mel "
        f"window{ear}; {joined} concatenated into one linear layer. The input is a window of "
        f"{f.window_frames} frames x {f.n_mels} mel bands ({f.window_seconds:.1f} s at {f.sample_rate} Hz, hop "
        f"{f.hop_length}, {scale}); a song is cut into windows every {f.window_hop_frames} frames and the window "
        f"probabilities are averaged.{level} `config.json` carries the labels, the branches and the exact feature "
        "settings."
    )


def eval_results(metrics: dict) -> list[EvalResult]:
    """``model-index`` entries that carry the protocol (split, clip count, what was unseen), not a bare number."""
    kfold = metrics.get("split") == "kfold"
    config = f"{metrics.get('folds')}-fold CV" if kfold else "artist-filtered" if "filtered" in str(metrics.get("split")) else "random"
    split = "kfold" if kfold else str(metrics.get("split", "?")).split("/")[-1]
    where = f"{metrics.get('protocol', '?')}; {metrics.get('n_clips', '?')} clips"
    return [
        EvalResult(task_type="audio-classification", dataset_type="gtzan", dataset_name="GTZAN", dataset_config=config,
                   dataset_split=split, metric_type=key, metric_name=f"{name} ({where})",
                   metric_value=round(metrics[key], 4))
        for key, name in (("accuracy", "accuracy"), ("balanced_accuracy", "balanced accuracy"), ("macro_f1", "macro-F1"))
        if isinstance(metrics.get(key), float)
    ]


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
    kfold = metrics.get("split") == "kfold"
    pretrained = model.cnn_branch == "musicnn"
    data = ModelCardData(
        library_name="genrewiz",
        license="mit",
        pipeline_tag="audio-classification",
        tags=["audio-classification", "music-genre-classification", "gtzan", "pytorch", "pcrnn"]
        + (["musicnn", "million-song-dataset"] if pretrained else []),
        datasets=["gtzan"],
        metrics=["accuracy", "f1"],
        model_name="GenreWiz PCRNN (GTZAN)",
        eval_results=eval_results(metrics)
        + [r for other in metrics.get("other_evaluations", []) for r in eval_results(other)],
    )
    recipe = history.get("recipe") or metrics.get("recipe") or {}
    recipe_rows = "\n".join(f"| `{k}` | {v} |" for k, v in recipe.items())
    per_class = "\n".join(f"| {label} | {score:.2f} |" for label, score in metrics.get("per_class_f1", {}).items())
    n_train = history.get("n_train", "?")
    train_time = history.get("training_time_s")
    lines = [
        "# GenreWiz PCRNN: 10-genre music classifier trained on GTZAN",
        "",
        architecture_text(model),
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
        "`genrewiz.predict.analyse`, the same code the app runs. Optimiser RMSprop with "
        + ("class-balanced " if recipe.get("balance") else "") + "cross-entropy"
        + (", SpecAugment-style time/frequency masking" if recipe.get("specaugment") else "")
        + (", mixup" if recipe.get("mixup_alpha") else "")
        + (f", feature dropout {recipe['dropout']}" if recipe.get("dropout") else "")
        + "; learning rate warmed up, then cosine-decayed. "
        + ("The frozen musicnn branch's outputs for a few fixed circular shifts of each clip were computed once "
           "and cached; only the GRU branch and the linear layer were trained."
           if pretrained else "Random crops of circularly shifted songs."),
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
        f"| balanced accuracy | {_fmt(metrics.get('balanced_accuracy'))} |",
        f"| macro-F1 | {_fmt(metrics['macro_f1'], metrics.get('macro_f1_std'), pct=False)} |",
    ]
    if str(metrics.get("split", "")).startswith("filtered"):
        lines += [
            "",
            "The artist-filtered lists keep every artist on one side, so these clips are by artists the scored model "
            "never heard. The scored model is the same recipe trained on the train list only"
            + (" (the shipped weights add the valid clips)" if history.get("split", "").endswith("valid") else "")
            + "; the recipe was chosen on these clips, so the figure is mildly optimistic. With a handful of valid "
            "clips in most genres, per-genre figures move by tens of points per clip.",
        ]
    lines += conditions_text(metrics, history)
    for other in metrics.get("other_evaluations", []):
        lines += [
            "",
            f"Also, {other.get('protocol', '?')}: accuracy "
            f"{_fmt(other.get('accuracy'), other.get('accuracy_std'))}, balanced accuracy "
            f"{_fmt(other.get('balanced_accuracy'))}, macro-F1 {_fmt(other.get('macro_f1'), pct=False)}.",
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
        *(["## Credits", "", CREDITS] if pretrained else []),
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


def conditions_text(metrics: dict, history: dict) -> list[str]:
    """Card lines on the clips as users bring them (recorded through microphones, songs from outside GTZAN) and calibration."""
    columns = [("clean", metrics)] + [(name, metrics[name]) for name in ("songs", "recorded", "field") if name in metrics]
    fitted_here = (metrics.get("calibration") or {}).get("fitted_on", "").endswith("valid")

    def ece_text(condition: dict) -> str:
        if condition is metrics and fitted_here:  # the temperature was fitted on these very clips
            return f"{metrics['calibration']['ece_after_cross_fitted']:.3f} (cross-fitted)"
        return f"{condition['ece']:.3f}" if "ece" in condition else "n/a"

    lines: list[str] = []
    if len(columns) > 1:
        rows = [("clips", lambda c: str(c["n_clips"])), ("accuracy", lambda c: _fmt(c["accuracy"])),
                ("balanced accuracy", lambda c: _fmt(c["balanced_accuracy"])),
                ("macro-F1", lambda c: _fmt(c["macro_f1"], pct=False)),
                ("expected calibration error", ece_text),
                ("rock heard as metal", lambda c: c.get("rock_as_metal") or "n/a"),
                ("'Most likely' answers", lambda c: _fmt(c["most_likely_share"]) if "most_likely_share" in c else "n/a"),
                ("'Most likely' right", lambda c: _fmt(c["most_likely_right"]) if c.get("most_likely_right") is not None
                 else "n/a"),
                ("called not music", lambda c: c.get("not_music") or "n/a")]
        lines += [
            "", "### As users bring it: real songs, recorded and field audio", "",
            "| | " + " | ".join(name for name, _ in columns) + " |", "|---|" + "---|" * len(columns),
            *[f"| {title} | " + " | ".join(fmt(c) for _, c in columns) + " |" for title, fmt in rows],
            "",
            "`songs`: real songs from outside GTZAN by artists the model never trained on (the dev split of a "
            "set of 30 s excerpts of commercial recordings, labelled by AllMusic genre or artist). "
            "`recorded`: the same clips played into a simulated room and picked up by a phone, a laptop and a "
            "video-call chain (`train/arrival.py`, `EVAL_CHAINS`: band limits, resonances, noise, gain control, "
            "codecs; rooms training never used). `field`: real recordings from outside GTZAN, labelled by their "
            "file names; a small set, so read it with care. \"Most likely\" answers are those the app states as a "
            "verdict rather than \"Not sure\"; \"called not music\" counts songs whose music probability fell under "
            "the app's threshold.",
        ]
    calibration = history.get("calibration")
    if calibration:
        lines += [
            "", "### Calibration", "",
            f"The logits are divided by a temperature of {calibration['temperature']:.3f}, fitted on "
            f"{calibration['fitted_on']} ({calibration['n_clips']} clips the weights did not train on): expected "
            f"calibration error {calibration['ece_before']:.3f} before, {calibration['ece_after_cross_fitted']:.3f} "
            "after (cross-fitted). A top probability of 70 % then means the answer is right about 7 times in 10.",
            "", "![reliability diagram](reliability.png)",
        ]
    return lines


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
    also: list[Path] | None = None,
) -> Path:
    """Gather weights and evaluation artifacts into ``out_dir`` and write its ``README.md`` card.

    ``also`` are further evaluation folders (e.g. a k-fold CV on another set) whose headline
    numbers join ``metrics.json`` as ``other_evaluations`` and the card.
    """
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
    metrics = json.loads(metrics_file.read_text(encoding="utf-8"))
    if evaluation_dir and history_file.is_file():
        history = json.loads(history_file.read_text(encoding="utf-8"))
        metrics["shipped_model"] = {k: history.get(k) for k in ("split", "n_train", "training_time_s", "device", "command")}
        metrics["shipped_model"]["epochs"] = len(history.get("epochs", []))
    if also:
        keys = ("protocol", "split", "folds", "n_clips", "accuracy", "accuracy_std", "balanced_accuracy", "macro_f1",
                "macro_f1_std", "pooled_accuracy", "per_fold", "seconds_per_fold")
        others = [json.loads((folder / "metrics.json").read_text(encoding="utf-8")) for folder in also]
        metrics["other_evaluations"] = [{k: other[k] for k in keys if k in other} for other in others]
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
    parser.add_argument("--also", type=Path, action="append", metavar="DIR",
                        help="another evaluation folder (metrics.json) to report beside the main one; repeatable")
    args = parser.parse_args(argv)
    out = finish_checkpoint(args.model, args.evaluation, args.out, args.about_data, args.reproduce, args.also)
    print(f"wrote {out / 'README.md'}")
    return out


if __name__ == "__main__":
    main()
