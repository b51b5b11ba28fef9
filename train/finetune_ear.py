"""A study, not part of the recipe: what does fine-tuning the AudioSet ear (mn04) add, and what does it cost?

    python -m train.finetune_ear --gtzan ../shared/gtzan --splits ../shared/gtzan-splits \\
        --songs ../shared/realsongs [--epochs 4] [--variants 1 2 0] [--cache DIR] [--out runs/finetune_ear.json]

The shipped PCRNN keeps mn04 frozen: its outputs are cached once per clip and only the head
learns. This asks whether the ear itself would do better on real songs if it learnt our ten
genres, heard ALONE (no musicnn, no GRU), against its own zero-shot opinion:

- ``zero-shot``: :class:`~genrewiz.audioset.AudioSetBranch`'s AudioSet genre logits, averaged over
  the clip's three 10-s patches (the library's :func:`~genrewiz.features.audioset_windows` over
  the whole clip), argmax over the ten;
- fine-tuned variants (:data:`VARIANTS`): mn04 with a ten-genre output layer initialised from its
  own AudioSet genre rows (so epoch 0 *is* the zero-shot ear), trained on random 10-s crops at a
  random gain, with a class-balanced loss, few epochs and small learning rates (AdamW); the
  variants differ in how much of the network learns and whether a distillation term (KL towards
  the zero-shot genre softmax of the same crop) keeps what it knew.

Training: the GTZAN artist-filtered train list (the test list always excluded) and the real
songs' high-confidence train split. Scored on the real songs' dev split (high confidence) and
the GTZAN valid list; never on a test-list clip. Every clip is decoded once at 32 kHz and held
in memory (``--cache`` keeps them on disk for the next run). Prints a markdown table and writes
it with every clip's prediction as JSON to ``--out``, rewritten after each variant so a long run
on a busy machine leaves what it has. Costs are given as wall and CPU seconds per epoch (one
thread): on a shared machine the CPU seconds are the comparable figure.
"""

from __future__ import annotations

import argparse
import copy
import hashlib
import json
import logging
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from genrewiz.audio import load_audio
from genrewiz.audioset import AUDIOSET_GENRES, AudioSetBranch
from genrewiz.features import AudioSetFeatures, audioset_log_mel, audioset_windows
from genrewiz.mn04 import EMBEDDING_SIZE, MN04
from train.data import SPLIT_LISTS, Clip, exclude_listed, filtered_split, scan_gtzan, scan_songs
from train.report import scores as named_scores
from train.train import class_weights

logger = logging.getLogger("train")

GENRES: tuple[str, ...] = tuple(AUDIOSET_GENRES)
EAR = AudioSetFeatures()
"""The ear's front end as the checkpoints store it (32 kHz, 10-s patches of 1,000 frames)."""


@dataclass(frozen=True)
class Variant:
    """How much of mn04 learns: ``train_from`` is the first trainable stage of ``MN04.features``
    (``None``: only the ten-genre layer); ``distill`` weighs the KL towards the zero-shot ear."""

    name: str
    train_from: int | None
    distill: float


VARIANTS: tuple[Variant, ...] = (
    Variant("head only + distill 1", None, 1.0),
    Variant("last 3 blocks + head + distill 1", 13, 1.0),
    Variant("whole network, no distill", 0, 0.0),
)
"""Stage 13 is the third-last inverted-residual block: from there on (3 blocks, the 1x1 conv to
384 channels, the hidden layer, the genre layer) is 80 % of the ten-genre ear's 718 k weights
but a small share of its compute (the map there is 8 x 63 for a 10-s patch)."""


@dataclass(frozen=True)
class Settings:
    """Training knobs shared by every variant (the same for all, so they differ only as :class:`Variant` says)."""

    epochs: int = 4
    batch_size: int = 16
    lr: float = 1e-4
    """For mn04's own trainable layers: small, so the pretrained weights move a little."""
    head_lr: float = 5e-4
    weight_decay: float = 1e-3
    crop_seconds: float = 10.0
    gain_db: float = 10.0
    """Each crop's waveform is scaled by a gain drawn from +-gain_db: mn04's log-mel is not level-normalised."""
    seed: int = 0


class FineTunedEar(nn.Module):
    """mn04 with its 527-class output cut to the rows of our genres: at initialisation it says exactly
    what :class:`AudioSetBranch`'s genre logits say, so training starts from the zero-shot ear.

    Stages before ``train_from`` are frozen and run without gradients; ``None`` freezes all of
    mn04 but the genre layer. Every batch norm stays in eval mode, trainable or not: its
    statistics are AudioSet's, from two million clips, and a batch of 16 crops of ours would
    only make them noisy (its scale and shift still learn where the stage trains).
    """

    def __init__(self, branch: AudioSetBranch, train_from: int | None) -> None:
        super().__init__()
        trunk: MN04 = branch.trunk
        split = len(trunk.features) if train_from is None else train_from
        self.frozen = trunk.features[:split]
        self.tail = nn.Sequential(*trunk.features[split:], *trunk.classifier[:4])
        self.dropout = trunk.classifier[4]
        self.head = nn.Linear(EMBEDDING_SIZE, len(branch.genre_index))
        with torch.no_grad():
            self.head.weight.copy_(trunk.classifier[5].weight[branch.genre_index])
            self.head.bias.copy_(trunk.classifier[5].bias[branch.genre_index])
        self.tail_trains = train_from is not None
        self.frozen.requires_grad_(False)
        self.tail.requires_grad_(self.tail_trains)

    def train(self, mode: bool = True) -> FineTunedEar:
        """Frozen stages and every batch norm stay in eval mode whatever the rest does."""
        super().train(mode)
        self.frozen.eval()
        if not self.tail_trains:
            self.tail.eval()
        for module in self.tail.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.eval()
        return self

    def prefix(self, mel: torch.Tensor) -> torch.Tensor:
        """``(batch, frames, mels)`` -> the frozen stages' map, without gradients (what the teacher shares)."""
        with torch.no_grad():
            return self.frozen(mel.transpose(1, 2).unsqueeze(1))

    def from_prefix(self, x: torch.Tensor) -> torch.Tensor:
        """The trainable rest: the frozen prefix's map -> ten genre logits."""
        with torch.set_grad_enabled(self.tail_trains and torch.is_grad_enabled()):
            hidden = self.tail(x)
        return self.head(self.dropout(hidden))

    def forward(self, mel: torch.Tensor) -> torch.Tensor:
        return self.from_prefix(self.prefix(mel))


def pretrained_branch() -> AudioSetBranch:
    """A fresh AudioSet ear with the shipped mn04 weights (each variant fine-tunes its own copy)."""
    branch = AudioSetBranch(GENRES, frozen=False)
    branch.load_pretrained()
    return branch.eval()


def random_crops(waves: list[np.ndarray], rng: np.random.Generator, settings: Settings) -> torch.Tensor:
    """One random ``crop_seconds`` crop of each waveform at a random gain -> ``(n, frames, mels)`` log-mels."""
    length = int(settings.crop_seconds * EAR.sample_rate)
    mels = []
    for wave in waves:
        if len(wave) < length:
            wave = np.resize(wave, length)  # loop a short clip, as the library loops short windows
        start = int(rng.integers(0, len(wave) - length + 1))
        gain = np.float32(10 ** (rng.uniform(-settings.gain_db, settings.gain_db) / 20))
        mels.append(audioset_log_mel(wave[start : start + length] * gain, EAR))
    return torch.from_numpy(np.stack(mels))


@dataclass
class EpochLog:
    """One epoch's mean loss, wall-clock seconds and this process's CPU seconds (the cost on a shared machine)."""

    loss: float
    seconds: float
    cpu_seconds: float


def fine_tune(model: FineTunedEar, waves: list[np.ndarray], labels: np.ndarray, distill: float,
              settings: Settings) -> list[EpochLog]:
    """Train ``model`` on random crops of ``waves`` (``labels`` index :data:`GENRES`); the mean loss and time of each epoch.

    Cross-entropy weighted by inverse class frequency as the PCRNN's training weighs it
    (:func:`train.train.class_weights`; GTZAN's blues and jazz outnumber its other genres three to one), plus ``distill`` times KL(zero-shot || model) on the same crop, the
    zero-shot logits coming from a frozen copy of the trainable part at its initial weights.
    """
    rng = np.random.default_rng(settings.seed)
    torch.manual_seed(settings.seed)
    weights = class_weights(labels, len(GENRES))
    teacher = copy.deepcopy(nn.Sequential(model.tail, model.head)).eval().requires_grad_(False) if distill else None
    head_params = list(model.head.parameters())
    tail_params = [p for p in model.tail.parameters() if p.requires_grad]
    optimiser = torch.optim.AdamW([{"params": head_params, "lr": settings.head_lr},
                                   {"params": tail_params, "lr": settings.lr}], weight_decay=settings.weight_decay)
    target = torch.from_numpy(labels.astype(np.int64))
    logs = []
    for epoch in range(settings.epochs):
        started, cpu_started = time.perf_counter(), time.process_time()
        model.train()
        order = rng.permutation(len(waves))
        total = 0.0
        for first in range(0, len(order), settings.batch_size):
            batch = order[first : first + settings.batch_size]
            prefix = model.prefix(random_crops([waves[i] for i in batch], rng, settings))
            logits = model.from_prefix(prefix)
            loss = F.cross_entropy(logits, target[batch], weight=weights)
            if teacher is not None:
                with torch.no_grad():
                    zero_shot = F.log_softmax(teacher(prefix), dim=1)
                loss = loss + distill * F.kl_div(F.log_softmax(logits, dim=1), zero_shot, log_target=True,
                                                 reduction="batchmean")
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            total += loss.item() * len(batch)
        logs.append(EpochLog(total / len(order), time.perf_counter() - started, time.process_time() - cpu_started))
        logger.info("epoch %d/%d: loss %.4f, %.1f s (%.1f s CPU)", epoch + 1, settings.epochs, logs[-1].loss,
                    logs[-1].seconds, logs[-1].cpu_seconds)
    return logs


def clip_patches(wave: np.ndarray) -> torch.Tensor:
    """The clip as the library hears a one-window clip: ``patches_per_window`` 10-s patches spread over it."""
    mel = audioset_log_mel(wave, EAR)
    return torch.from_numpy(audioset_windows(mel, np.zeros(1), len(wave) / EAR.sample_rate, EAR)[0])


@torch.inference_mode()
def zero_shot_predictions(branch: AudioSetBranch, patches: list[torch.Tensor]) -> np.ndarray:
    """AudioSet's own genre logits, mean over each clip's patches, argmax over the ten genres."""
    logits = [branch.split(branch.patch_summaries(p).unsqueeze(0))[1][0] for p in patches]
    return torch.stack(logits).argmax(dim=1).numpy()


@torch.inference_mode()
def predictions(model: FineTunedEar, patches: list[torch.Tensor]) -> np.ndarray:
    """The fine-tuned ear's genre logits, mean over each clip's patches, argmax."""
    model.eval()
    return torch.stack([model(p).mean(dim=0) for p in patches]).argmax(dim=1).numpy()


def scores(truth: np.ndarray, predicted: np.ndarray) -> dict:
    """Accuracy, balanced accuracy (mean recall over the genres present, :func:`train.report.scores`) and per-genre right/clips."""
    recall = {GENRES[g]: [int((predicted[truth == g] == g).sum()), int((truth == g).sum())]
              for g in range(len(GENRES)) if (truth == g).any()}
    named = named_scores([GENRES[i] for i in truth], [GENRES[i] for i in predicted], list(GENRES))
    return {"accuracy": named["accuracy"], "balanced": named["balanced_accuracy"],
            "recall": recall, "predicted": predicted.tolist()}


def decode(clips: list[Clip], cache: Path | None) -> list[np.ndarray]:
    """Each clip's waveform at the ear's 32 kHz, decoded once (and kept in ``cache``, if given, for the next run)."""
    started = time.perf_counter()
    waves = []
    for clip in clips:
        stat = clip.path.stat()
        key = hashlib.sha256(f"{clip.path.resolve()}|{stat.st_size}|{stat.st_mtime_ns}|{EAR.sample_rate}".encode())
        stored = cache / f"{key.hexdigest()[:20]}.npy" if cache else None
        if stored and stored.is_file():
            waves.append(np.load(stored))
            continue
        waves.append(load_audio(clip.path, EAR.sample_rate).samples)
        if stored:
            np.save(stored, waves[-1])
    logger.info("read %d clips in %.0f s", len(clips), time.perf_counter() - started)
    return waves


def select(args: argparse.Namespace) -> dict[str, list[Clip]]:
    """Training clips (GTZAN train list + songs train) and the two evaluation sets; the test list never enters."""
    gtzan = exclude_listed(scan_gtzan(args.gtzan), Path(args.splits) / SPLIT_LISTS["test"])
    split = filtered_split(gtzan, args.splits, allow_missing=True)
    sets = {"train": split.train + scan_songs(args.songs, ("train",)),
            "songs dev": scan_songs(args.songs, ("dev",)), "gtzan valid": split.valid}
    if args.limit:
        rng = np.random.default_rng(args.seed)
        sets = {k: [v[i] for i in sorted(rng.permutation(len(v))[: args.limit])] for k, v in sets.items()}
    return sets


def pct(x: float) -> str:
    return f"{100 * x:.1f}"


def table(results: list[dict], sizes: dict[str, int]) -> str:
    """The study's markdown: one row per ear, then songs-dev recall per genre."""
    base = results[0]
    head = (f"| ear | trainable params | epochs | s/epoch (CPU s) | songs dev ({sizes['songs dev']}) acc / bal | vs zero-shot "
            f"| GTZAN valid ({sizes['gtzan valid']}) acc / bal | vs zero-shot | songs fixed / broken | GTZAN fixed / broken |")
    lines = [head, "|" + " --- |" * 10]
    for r in results:
        cells = [r["name"], f"{r['trainable']:,}", str(r["epochs"]),
                 f"{r['seconds_per_epoch']:.0f} ({r['cpu_seconds_per_epoch']:.0f})" if r["epochs"] else "-"]
        for name in ("songs dev", "gtzan valid"):
            s, b = r[name], base[name]
            cells.append(f"{pct(s['accuracy'])} / {pct(s['balanced'])}")
            cells.append(f"{100 * (s['accuracy'] - b['accuracy']):+.1f} / {100 * (s['balanced'] - b['balanced']):+.1f}")
        for name in ("songs dev", "gtzan valid"):
            cells.append(f"{r['vs_zero_shot'][name]['fixed']} / {r['vs_zero_shot'][name]['broken']}")
        lines.append("| " + " | ".join(cells) + " |")
    genres = list(base["songs dev"]["recall"])
    lines += ["", "Songs dev, right / clips per genre:", "",
              "| ear | " + " | ".join(genres) + " |", "|" + " --- |" * (len(genres) + 1)]
    for r in results:
        recall = r["songs dev"]["recall"]
        lines.append(f"| {r['name']} | " + " | ".join(f"{recall[g][0]}/{recall[g][1]}" for g in genres) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(prog="python -m train.finetune_ear", description=__doc__.split("\n\n")[0])
    parser.add_argument("--gtzan", required=True, help="GTZAN folder (genres/<genre>/<clips>)")
    parser.add_argument("--splits", required=True, help="folder of the artist-filtered split lists")
    parser.add_argument("--songs", required=True, help="real-songs folder with manifest.csv (train and dev splits)")
    defaults = Settings()
    parser.add_argument("--epochs", type=int, default=defaults.epochs)
    parser.add_argument("--batch-size", type=int, default=defaults.batch_size)
    parser.add_argument("--lr", type=float, default=defaults.lr, help="learning rate of mn04's trainable layers")
    parser.add_argument("--head-lr", type=float, default=defaults.head_lr)
    parser.add_argument("--seed", type=int, default=defaults.seed)
    parser.add_argument("--variants", type=int, nargs="+", default=list(range(len(VARIANTS))),
                        help="which of " + "; ".join(f"{i}: {v.name}" for i, v in enumerate(VARIANTS)))
    parser.add_argument("--limit", type=int, default=0, help="at most this many clips per set (a quick check)")
    parser.add_argument("--out", type=Path, default=Path("runs/finetune_ear.json"))
    parser.add_argument("--cache", type=Path, help="folder to keep decoded waveforms in between runs (~4 MB a clip)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    torch.set_num_threads(1)  # several threads are far slower than one on a loaded two-core machine
    settings = Settings(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, head_lr=args.head_lr,
                        seed=args.seed)

    sets = select(args)
    index = {g: i for i, g in enumerate(GENRES)}
    truth = {k: np.array([index[c.label] for c in v]) for k, v in sets.items()}
    if args.cache:
        args.cache.mkdir(parents=True, exist_ok=True)
    train_waves = decode(sets["train"], args.cache)
    patches = {k: [clip_patches(w) for w in decode(sets[k], args.cache)] for k in ("songs dev", "gtzan valid")}

    branch = pretrained_branch()
    zero_shot = {k: zero_shot_predictions(branch, p) for k, p in patches.items()}
    sizes = {k: len(v) for k, v in sets.items()}

    def record(result: dict) -> dict:
        """Add ``result`` with its clips fixed and broken against zero-shot, and rewrite ``--out``: a long run leaves what it has."""
        right = {k: np.asarray(result[k]["predicted"]) == truth[k] for k in patches}
        result["vs_zero_shot"] = {k: {"fixed": int((right[k] & (zero_shot[k] != truth[k])).sum()),
                                      "broken": int((~right[k] & (zero_shot[k] == truth[k])).sum())} for k in patches}
        results.append(result)
        report = {"settings": asdict(settings), "clips": sizes, "genres": GENRES, "results": results,
                  "markdown": table(results, sizes)}
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=1), encoding="utf-8")
        return report

    results: list[dict] = []
    report = record({"name": "zero-shot mn04", "trainable": 0, "epochs": 0, "seconds_per_epoch": 0.0,
                     "cpu_seconds_per_epoch": 0.0, "losses": [],
                     **{k: scores(truth[k], zero_shot[k]) for k in patches}})
    for i in args.variants:
        variant = VARIANTS[i]
        logger.info("fine-tuning: %s", variant.name)
        model = FineTunedEar(pretrained_branch(), variant.train_from)
        logs = fine_tune(model, train_waves, truth["train"], variant.distill, settings)
        predicted = {k: predictions(model, p) for k, p in patches.items()}
        report = record({"name": variant.name, **asdict(variant),
                         "trainable": sum(p.numel() for p in model.parameters() if p.requires_grad),
                         "epochs": settings.epochs, "seconds_per_epoch": float(np.mean([log.seconds for log in logs])),
                         "cpu_seconds_per_epoch": float(np.mean([log.cpu_seconds for log in logs])),
                         "losses": [log.loss for log in logs], **{k: scores(truth[k], predicted[k]) for k in patches}})
        logger.info("%s: songs dev %.1f %%, GTZAN valid %.1f %%", variant.name,
                    100 * report["results"][-1]["songs dev"]["accuracy"],
                    100 * report["results"][-1]["gtzan valid"]["accuracy"])
    print(report["markdown"])
    logger.info("wrote %s", args.out)
    return report


if __name__ == "__main__":
    main()
