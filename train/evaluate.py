"""Score a checkpoint on a GTZAN split exactly as the app would classify each clip.

    python -m train.evaluate --model runs/filtered --data DATA --split filtered --split-dir SPLITS

Every clip goes through :meth:`genrewiz.GenreClassifier.predict` (decode, log-mel, windows,
mean of window probabilities): no shortcut the app does not take. Writes
``classification_report.txt``, ``confusion_matrix.png``, ``curves.png`` (from the checkpoint's
``history.json``) and ``metrics.json`` into ``--out`` (default: the checkpoint folder).
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

from tqdm.auto import tqdm

from genrewiz.audio import AudioError
from genrewiz.model import PCRNN
from genrewiz.predict import GenreClassifier
from train import data, report

logger = logging.getLogger("train")


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


def evaluate(
    classifier: GenreClassifier, clips: list[data.Clip], progress: bool = True
) -> tuple[list[str], list[str], list[dict]]:
    """True and predicted genres for every readable clip, and the clips that could not be read."""
    truth, predicted, skipped = [], [], []
    for clip in tqdm(clips, desc="predicting", unit="clip", disable=not progress):
        try:
            predicted.append(classifier.predict(clip.path).genre)
        except AudioError as err:
            logger.warning("skipped unreadable clip %s: %s", clip.path, err)
            skipped.append({"clip": clip.key, "reason": str(err)})
            continue
        truth.append(clip.label)
    return truth, predicted, skipped


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
    parser.add_argument("--out", type=Path, help="where to write the artifacts (default: --model)")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    if args.split == "filtered" and args.split_dir is None:
        parser.error("--split filtered needs --split-dir")
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    clips, described, missing = select_clips(args)
    classifier = GenreClassifier(PCRNN.from_pretrained(args.model), num_threads=None)
    truth, predicted, skipped = evaluate(classifier, clips, not args.no_progress)
    history_file = args.model / "history.json"
    history = json.loads(history_file.read_text(encoding="utf-8")) if history_file.is_file() else {}
    meta = {
        "protocol": f"whole-clip prediction on the {described}",
        "split": args.split if args.split != "filtered" else f"filtered/{args.subset}",
        "training_split": history.get("split"),
        "training_time_s": history.get("training_time_s"),
        "best_epoch": history.get("best_epoch"),
        "recipe": history.get("recipe"),
        "missing": missing,
        "skipped": skipped,
    }
    title = f"{described}, {len(truth)} clips"
    histories = [history] if history else []
    metrics = report.write_evaluation(
        args.out or args.model, truth, predicted, list(classifier.labels), histories, meta, title
    )
    print(f"{title}: accuracy {metrics['accuracy']:.3f}, macro-F1 {metrics['macro_f1']:.3f}")
    return metrics


if __name__ == "__main__":
    main()
