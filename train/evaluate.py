"""Score a checkpoint as users meet it: clean GTZAN clips, the same clips recorded, and songs from outside GTZAN.

    python -m train.evaluate --model runs/filtered --data GTZAN --split filtered --split-dir SPLITS \\
        --allow-missing --field FIELD

Every clip goes through :meth:`genrewiz.GenreClassifier.predict` (decode, log-mel, windows,
mean of window probabilities): no shortcut the app does not take. Three conditions, side by side:

- ``clean``: the split's clips as they are;
- ``recorded``: the same clips through each fixed recording chain of
  :data:`train.arrival.EVAL_CHAINS` (a room, a phone or laptop microphone, noise, a codec);
- ``songs``: real songs from outside GTZAN by artists it was not trained on (``--songs``, a
  folder with a ``manifest.csv``; its ``--songs-split``, by default ``dev``);
- ``field``: a folder of real songs from outside GTZAN (``--field``, ``<genre>/<files>``).

For each: accuracy, balanced accuracy, macro-F1, per-genre recall, how often rock is heard as
metal, calibration (expected calibration error of the top answer), and the page's own promise:
how many answers are "Most likely X" rather than "Not sure" (:mod:`genrewiz.verdict`) and how
often those are right; with the AudioSet ear, how many songs it would call "not music". Writes
``classification_report.txt``, ``confusion_matrix.png`` (clean), ``reliability.png``,
``curves.png`` (from the checkpoint's ``history.json``) and ``metrics.json`` into ``--out``
(default: the checkpoint folder).
"""

from __future__ import annotations

import argparse
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from sklearn.metrics import f1_score, recall_score
from tqdm.auto import tqdm

from genrewiz.audio import AudioError
from genrewiz.predict import GenreClassifier, decode_rate
from genrewiz.verdict import MUSIC_BELOW, is_unsure
from train import calibrate, data, report
from train.arrival import EVAL_CHAINS, Arrival

logger = logging.getLogger("train")


@dataclass
class Outcome:
    """Clip-level results of one condition: true genres, window probabilities, and the clips that could not be read."""

    truth: list[str]
    windows: list[np.ndarray]
    skipped: list[dict]
    music: list[float | None] = field(default_factory=list)

    def probabilities(self) -> np.ndarray:
        return calibrate.clip_probabilities(self.windows)


def select_clips(args: argparse.Namespace) -> tuple[list[data.Clip], str, list[str]]:
    """The clips of the requested split and subset, a description of them, and listed-but-absent clips."""
    clips = data.scan_gtzan(args.data)
    if args.split == "filtered":
        chosen, missing = data.filtered_subset(clips, args.split_dir, args.subset, args.allow_missing)
        return chosen, f"artist-filtered {args.subset} split", missing
    if args.split == "random":
        split = data.random_split(clips, args.valid_fraction, args.seed)
        return split.valid, f"{split.name} held-out part", []
    return clips, "all clips", []


def predict_clips(
    classifier: GenreClassifier, clips: list[data.Clip], arrival: Arrival | None = None, progress: bool = True
) -> Outcome:
    """Each readable clip's window probabilities, as heard clean or through ``arrival``'s recording chain."""
    outcome = Outcome([], [], [])
    desc = f"predicting ({arrival.chain})" if arrival else "predicting"
    for clip in tqdm(clips, desc=desc, unit="clip", disable=not progress):
        try:
            if arrival is None:
                prediction = classifier.predict(clip.path)
            else:
                rate = decode_rate(classifier.config, classifier.audioset_config)
                recorded = data.arrived(clip.path, rate, arrival, clip.key, classifier.max_duration)
                prediction = classifier.predict(recorded, rate)
        except AudioError as err:
            logger.warning("skipped unreadable clip %s: %s", clip.path, err)
            outcome.skipped.append({"clip": clip.key, "reason": str(err)})
            continue
        outcome.truth.append(clip.label)
        outcome.windows.append(prediction.window_probabilities)
        outcome.music.append(prediction.music)
    return outcome


def condition_scores(outcome: Outcome, labels: list[str]) -> dict:
    """Accuracy, balanced accuracy, macro-F1, per-genre recall, rock heard as metal, and calibration.

    Macro-F1 averages over the genres the condition's clips have: a field set of four genres is
    not marked down for the six it holds no clips of.
    """
    probs = outcome.probabilities()
    predicted = [labels[i] for i in probs.argmax(axis=1)]
    truth = outcome.truth
    present = [label for label in labels if label in truth]
    recall = recall_score(truth, predicted, labels=present, average=None, zero_division=0)
    curve = calibrate.reliability(probs, np.array([labels.index(t) for t in truth]))
    rock = [p for t, p in zip(truth, predicted) if t == "rock"]
    order = np.argsort(-probs, axis=1)
    sure = np.array([not is_unsure([(labels[o[0]], p[o[0]]), (labels[o[1]], p[o[1]])]) for o, p in zip(order, probs)])
    right = np.array([p == t for p, t in zip(predicted, truth)])
    music = [m for m in outcome.music if m is not None]
    return {
        **report.scores(truth, predicted, labels),
        "macro_f1": float(f1_score(truth, predicted, labels=present, average="macro", zero_division=0)),
        "n_clips": len(truth),
        "per_class_recall": {label: float(r) for label, r in zip(present, recall)},
        "per_class_n": {label: truth.count(label) for label in present},
        "rock_as_metal": f"{rock.count('metal')}/{len(rock)}" if rock else None,
        "ece": curve["ece"],
        "mean_confidence": curve["mean_confidence"],
        "most_likely_share": float(sure.mean()),
        "most_likely_right": float(right[sure].mean()) if sure.any() else None,
        "not_music": f"{sum(m < MUSIC_BELOW for m in music)}/{len(music)}" if music else None,
        "reliability": curve["bins"],
        "skipped": outcome.skipped,
    }


def pooled(outcomes: list[Outcome]) -> Outcome:
    """One outcome from several (the recording chains together)."""
    return Outcome(sum((o.truth for o in outcomes), []), sum((o.windows for o in outcomes), []),
                   sum((o.skipped for o in outcomes), []), sum((o.music for o in outcomes), []))


def summary_table(conditions: dict[str, dict], labels: list[str]) -> str:
    """The conditions side by side, one column each: what a reader compares first."""
    names = list(conditions)
    rows = [("clips", lambda c: str(c["n_clips"])), ("accuracy", lambda c: f"{c['accuracy']:.1%}"),
            ("balanced accuracy", lambda c: f"{c['balanced_accuracy']:.1%}"), ("macro-F1", lambda c: f"{c['macro_f1']:.3f}"),
            ("ECE", lambda c: f"{c['ece']:.3f}"), ("mean confidence", lambda c: f"{c['mean_confidence']:.1%}"),
            ("rock heard as metal", lambda c: c["rock_as_metal"] or "-"),
            ("'Most likely' answers", lambda c: f"{c['most_likely_share']:.0%}"),
            ("'Most likely' right", lambda c: "-" if c["most_likely_right"] is None else f"{c['most_likely_right']:.1%}"),
            ("called not music", lambda c: c["not_music"] or "-")]
    rows += [(f"recall {label}", lambda c, label=label: f"{c['per_class_recall'][label]:.0%} of {c['per_class_n'][label]}"
              if label in c["per_class_recall"] else "-") for label in labels]
    width = max(len(r[0]) for r in rows)
    lines = [" " * width + "".join(f"{n:>16}" for n in names)]
    lines += [f"{title:<{width}}" + "".join(f"{fmt(conditions[n]):>16}" for n in names) for title, fmt in rows]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    """Evaluate from the command line; returns the metrics written to ``metrics.json``."""
    parser = argparse.ArgumentParser(prog="python -m train.evaluate", description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True, type=Path, help="checkpoint folder (save_pretrained output)")
    parser.add_argument("--data", required=True, type=Path, help="GTZAN folder")
    parser.add_argument("--split", required=True, choices=("random", "filtered", "all"))
    parser.add_argument("--subset", default="valid", choices=("valid", "test"), help="filtered: which list to score")
    parser.add_argument("--split-dir", type=Path, help="folder with the *_filtered.txt lists")
    parser.add_argument("--allow-missing", action="store_true", help="filtered: leave out listed clips that are absent")
    parser.add_argument("--valid-fraction", type=float, default=0.2, help="random: must match training")
    parser.add_argument("--seed", type=int, default=0, help="random: must match training")
    parser.add_argument("--recorded", nargs="*", default=sorted(EVAL_CHAINS), choices=sorted(EVAL_CHAINS),
                        metavar="CHAIN", help=f"recording chains to score the split through (default: all of "
                                              f"{', '.join(sorted(EVAL_CHAINS))}; none: give the flag alone)")
    parser.add_argument("--songs", type=Path, metavar="DIR",
                        help="real songs from outside GTZAN: a folder with manifest.csv (file, split, genre, confidence)")
    parser.add_argument("--songs-split", default="dev", help="--songs: which of its splits to score (default dev)")
    parser.add_argument("--songs-low-confidence", action="store_true",
                        help="--songs: score its low-confidence labels too (default: high-confidence clips only)")
    parser.add_argument("--field", type=Path, help="folder of real songs from outside GTZAN, <genre>/<files>")
    parser.add_argument("--out", type=Path, help="where to write the artifacts (default: --model)")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    if args.split == "filtered" and args.split_dir is None:
        parser.error("--split filtered needs --split-dir")
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    clips, described, missing = select_clips(args)
    classifier = GenreClassifier.from_pretrained(args.model, num_threads=None)
    labels = list(classifier.labels)
    progress = not args.no_progress
    clean = predict_clips(classifier, clips, progress=progress)
    chains = {name: predict_clips(classifier, clips, Arrival(name), progress) for name in args.recorded}
    field = predict_clips(classifier, data.scan_gtzan(args.field), progress=progress) if args.field else None
    songs = (predict_clips(classifier, data.scan_songs(args.songs, (args.songs_split,), args.songs_low_confidence),
                           progress=progress) if args.songs else None)

    conditions = {"clean": condition_scores(clean, labels)}
    if chains:
        conditions["recorded"] = condition_scores(pooled(list(chains.values())), labels)
        conditions["recorded"]["chains"] = {name: condition_scores(o, labels) for name, o in chains.items()}
    if songs is not None:
        conditions["songs"] = condition_scores(songs, labels) | {"data": f"{args.songs} ({args.songs_split})"}
    if field is not None:
        conditions["field"] = condition_scores(field, labels) | {"data": str(args.field)}

    history_file = args.model / "history.json"
    history = json.loads(history_file.read_text(encoding="utf-8")) if history_file.is_file() else {}
    meta = {
        "protocol": f"whole-clip prediction on the {described}",
        "split": args.split if args.split != "filtered" else f"filtered/{args.subset}",
        "training_split": history.get("split"),
        "training_time_s": history.get("training_time_s"),
        "best_epoch": history.get("best_epoch"),
        "recipe": history.get("recipe"),
        "temperature": json.loads((args.model / "config.json").read_text(encoding="utf-8")).get("temperature", 1.0),
        "calibration": history.get("calibration"),
        "missing": missing,
        "skipped": clean.skipped,
    }
    title = f"{described}, {len(clean.truth)} clips"
    out = args.out or args.model
    predicted = [labels[i] for i in clean.probabilities().argmax(axis=1)]
    metrics = report.write_evaluation(out, clean.truth, predicted, labels, [history] if history else [], meta, title)
    extra = {k: v for k, v in conditions["clean"].items() if k not in metrics}
    metrics.update(extra, **{name: scores for name, scores in conditions.items() if name != "clean"})
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n", encoding="utf-8")
    table = summary_table(conditions, labels)
    with (out / "classification_report.txt").open("a", encoding="utf-8") as file:
        file.write(f"\nConditions side by side (recorded: {', '.join(args.recorded) or 'none'}; "
                   f"songs: {f'{args.songs} ({args.songs_split})' if args.songs else 'none'}; "
                   f"field: {args.field or 'none'})\n\n{table}\n")
    calibrate.plot_reliability({name: {"ece": c["ece"], "bins": c["reliability"]} for name, c in conditions.items()},
                               out / "reliability.png", f"{described}: reliability")
    print(f"{title}\n{table}")
    return metrics


if __name__ == "__main__":
    main()
