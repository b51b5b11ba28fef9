"""Train the GenreWiz PCRNN on GTZAN.

    python -m train.train --data DATA --split filtered --split-dir SPLITS --out runs/filtered
    python -m train.train --data DATA --split kfold --folds 5 --out runs/cv
    python -m train.train --data DATA --split all --out runs/all --cnn-branch scratch

``random`` and ``filtered`` keep the checkpoint with the best validation accuracy and stop
early; ``kfold`` trains the same fixed-length recipe on each fold and scores the final weights
on the held-out fold (no selection on the clips it is scored on); ``all`` trains that recipe on
every clip. The output folder is a ``save_pretrained`` checkpoint plus ``history.json`` and
``train.log``; ``kfold`` writes one per fold and the pooled evaluation report beside them.

Each epoch leaves ``checkpoint.pt`` in the output folder (weights, optimizer, schedule, random
states, history), so ``--resume`` continues a killed run from its last finished epoch with the
same result as a run never stopped; ``--device`` picks the CPU or the GPU.

``--cnn-branch musicnn`` (the default) starts the CNN branch from musicnn's Million Song Dataset
weights and keeps it frozen: its outputs for a few fixed views of each clip are computed once
and cached, so an epoch trains only the GRU branch and the linear layer. ``--finetune`` trains
the branch too (slow on a CPU); ``--cnn-branch scratch`` is the original from-scratch PCRNN.
``--arrivals N`` adds N variants of every clip as users' audio arrives (modern mastering, a
room and a microphone, codecs: :mod:`train.arrival`), cached like the clean views.

The saved checkpoint is calibrated: a temperature dividing its logits is fitted on predictions
its weights did not train on (the valid clips, or for ``trainval``/``all`` the out-of-fold
predictions of ``--calibration-folds`` models of the same recipe) and stored in ``config.json``;
``history.json`` records it with the calibration error before and after.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import math
import os
import shlex
import sys
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from genrewiz.engine import TorchEngine
from genrewiz.features import AudioSetFeatures, FeatureConfig, make_windows
from genrewiz.model import AUDIOSET_BRANCHES, BRANCH_PRESETS, CNN_BRANCHES, PCRNN
from train import calibrate, data, music, report
from train.arrival import Arrival
from train.augment import crop, mixup, spec_augment, view

logger = logging.getLogger("train")


@dataclass
class Recipe:
    """The training settings; every one is a command-line flag and is saved in ``history.json``.

    Defaults: the original's RMSprop with cross-entropy, plus warmup and cosine decay instead
    of hand-tuned drops, class-balanced loss weights (GTZAN copies are often unbalanced), and
    for a frozen pretrained branch ``views`` cached views per clip. ``arrivals`` adds that many
    variants of each clip as it would reach the app (:func:`train.arrival.random_arrival`:
    modern mastering, a room and a microphone, codecs), drawn once per clip and cached.
    ``tag_evidence`` is the weight of the MSD tagger's rock-versus-metal judgement, added to the
    trained model's logits (:class:`~genrewiz.model.PCRNN`), not learnt from GTZAN's labels.
    ``audioset_prior`` (with the AudioSet ear) is the weight of that ear's zero-shot genre
    log-probabilities, added to the logits in training too, so the genre layer learns what the
    prior misses rather than unlearning what AudioSet knows. The ear hears the first
    ``ear_arrivals`` arrival variants as they arrive (the same chained waveform musicnn hears:
    each variant is made once, at the rate the song is decoded at) and the clean clip in the
    others' views. ``nonmusic_each`` generated clips of
    each kind of non-music teach its music detector (:mod:`train.music`).
    Small sets want ``batch_size`` 8 (more updates per epoch).
    """

    epochs: int = 50
    batch_size: int = 16
    lr: float = 5e-4
    weight_decay: float = 0.0
    dropout: float = 0.0
    schedule: str = "cosine"
    warmup_epochs: int = 2
    patience: int = 15
    balance: bool = True
    crop: bool = True
    specaugment: bool = True
    time_masks: int = 2
    time_width: int = 48
    freq_masks: int = 2
    freq_width: int = 16
    mixup_alpha: float = 0.2
    views: int = 4
    arrivals: int = 0
    tag_evidence: float = 0.0
    audioset_prior: float = 0.0
    ear_arrivals: int = 0
    nonmusic_each: int = 24
    finetune: bool = False
    seed: int = 0


@dataclass(frozen=True)
class Example:
    """A cached spectrogram with its label index, ready for batching.

    ``variants`` are the spectrograms of the clip's arrival variants. With a frozen CNN branch,
    ``views`` holds its patch embeddings for the training views, ``view_inputs`` the spectrogram
    and circular shift each view was cut from (the RNN branch's input), and ``windows`` the
    embeddings of the predictor's windows (validation). With the AudioSet ear, ``ear_views`` and
    ``ear_windows`` are its patch summaries for the same views (each view hears its clip's or
    variant's first window) and windows.
    """

    key: str
    mel: np.ndarray
    label: int
    views: np.ndarray | None = None
    windows: np.ndarray | None = None
    variants: tuple[np.ndarray, ...] = ()
    view_inputs: tuple[tuple[np.ndarray, int], ...] = ()
    ear_views: np.ndarray | None = None
    ear_windows: np.ndarray | None = None


def seed_everything(seed: int) -> None:
    """Seed torch and ask it for deterministic kernels (a warning, not an error, where it has none)."""
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(True, warn_only=True)


DEVICES = ("auto", "cpu", "cuda")
CHECKPOINT = "checkpoint.pt"
"""The run's state after its last finished epoch, in its output folder: what ``--resume`` reads."""


def pick_device(choice: str = "auto") -> torch.device:
    """``cuda`` or ``cpu`` as asked; ``auto``: the GPU when there is one, else the CPU.

    Raises:
        ValueError: ``cuda`` was asked for and there is no usable CUDA GPU.
    """
    if choice == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda: no CUDA GPU is available here (torch.cuda.is_available() is False)")
    if choice == "auto":
        choice = "cuda" if torch.cuda.is_available() else "cpu"
    return torch.device(choice)


@dataclass(frozen=True)
class Setup:
    """What every split of a run shares: the labels, the front end, the CNN branch, the caches."""

    labels: list[str]
    features: FeatureConfig
    cnn_branch: str = "musicnn"
    cache_root: Path | None = None
    progress: bool = True
    device: str = "auto"
    resume: bool = False
    workers: int = 1
    audioset_branch: str | None = None

    @property
    def ear_features(self) -> AudioSetFeatures | None:
        """The AudioSet ear's front end, for a setup with that ear (songs are decoded for both front ends at once)."""
        return AudioSetFeatures() if self.audioset_branch else None


def build_model(setup: Setup, recipe: Recipe) -> PCRNN:
    """A seeded PCRNN with the setup's CNN branch; a pretrained branch gets its weights (frozen unless fine-tuned)."""
    seed_everything(recipe.seed)
    arch = BRANCH_PRESETS[setup.cnn_branch] | {"features": setup.features}
    if setup.audioset_branch:
        arch |= {"audioset_branch": setup.audioset_branch, "audioset_features": setup.ear_features,
                 "audioset_prior": recipe.audioset_prior}
    model = PCRNN(labels=setup.labels, cnn_branch=setup.cnn_branch, dropout=recipe.dropout, **arch)
    if setup.cnn_branch == "musicnn":
        model.cnn.load_pretrained()
        if recipe.finetune:
            model.cnn.unfreeze()
    if model.ear is not None:
        model.ear.load_pretrained()
    return model


def is_frozen(model: PCRNN) -> bool:
    """Whether the model's CNN branch is a frozen pretrained one, whose outputs training caches."""
    return bool(getattr(model.cnn, "frozen", False))


def make_examples(
    clips: list[data.Clip],
    mels: dict[Path, np.ndarray],
    setup: Setup,
    model: PCRNN,
    recipe: Recipe,
    views: bool = True,
    windows: bool = True,
) -> list[Example]:
    """Pair each readable clip's spectrogram with its label index (unreadable clips have none).

    With ``views``, the recipe's arrival variants come along (computed once and cached); with a
    frozen branch, its cached outputs for the training ``views`` (clean shifts, then one per
    arrival variant) and/or the predictor's ``windows``.
    """
    index = {label: i for i, label in enumerate(setup.labels)}
    clips = [c for c in clips if c.path in mels]
    frozen = is_frozen(model)
    variants: list[tuple[Arrival, dict[Path, np.ndarray]]] = []
    for v in range(recipe.arrivals if views else 0):
        arrival = Arrival("random", v, recipe.seed)
        variant, _ = data.load_features(clips, setup.features, setup.cache_root, setup.workers, setup.progress, arrival,
                                        setup.ear_features)
        variants.append((arrival, variant))
    by_view: dict[Path, list[np.ndarray]] = {c.path: [] for c in clips}
    ear_by_view: dict[Path, list[np.ndarray]] = {c.path: [] for c in clips}
    inputs: dict[Path, list[tuple[np.ndarray, int]]] = {c.path: [] for c in clips}
    has_ear = model.ear is not None

    def ear(source: dict[Path, np.ndarray], arrival: Arrival | None = None) -> dict[Path, np.ndarray]:
        return data.load_ear_features(clips, source, model, setup.cache_root, setup.workers, setup.progress, arrival)

    ear_clean = ear(mels) if has_ear and (views or windows) else {}
    if frozen and views:
        shifts = model.cnn.view_shifts(recipe.views)
        for path, embeddings in data.load_branch_features(clips, mels, model, shifts, setup.cache_root,
                                                          setup.progress).items():
            by_view[path].append(embeddings)
            inputs[path] += [(mels[path], s) for s in shifts]
            if has_ear:
                ear_by_view[path] += [ear_clean[path][:1]] * len(shifts)
        for v, (arrival, variant) in enumerate(variants):
            shift = shifts[v % len(shifts)]
            ear_variant = (ear(variant, arrival) if v < recipe.ear_arrivals else ear_clean) if has_ear else {}
            for path, embeddings in data.load_branch_features(clips, variant, model, [shift], setup.cache_root,
                                                              setup.progress, arrival).items():
                by_view[path].append(embeddings)
                inputs[path].append((variant[path], shift))
                if has_ear:
                    ear_by_view[path].append(ear_variant[path][:1])
    by_window = data.load_branch_features(clips, mels, model, None, setup.cache_root,
                                          setup.progress) if frozen and windows else {}
    return [
        Example(
            c.key, mels[c.path], index[c.label],
            views=np.concatenate(by_view[c.path]) if by_view[c.path] else None,
            windows=by_window.get(c.path),
            variants=tuple(variant[c.path] for _, variant in variants if c.path in variant),
            view_inputs=tuple(inputs[c.path]),
            ear_views=np.concatenate(ear_by_view[c.path]) if ear_by_view[c.path] else None,
            ear_windows=ear_clean.get(c.path) if windows else None,
        )
        for c in clips
    ]


def window_probabilities(model: PCRNN, examples: list[Example]) -> list[np.ndarray]:
    """Each clip's window probabilities, on the model's device, from the windows the predictor cuts.

    Frozen branches' cached window outputs stand in for running them (:meth:`TorchEngine.head_outputs`).
    """
    engine = TorchEngine(model)
    probabilities = []
    for e in examples:
        windows = make_windows(e.mel, model.features).data
        if e.windows is None:
            probabilities.append(engine.window_probabilities(windows))
            continue
        with torch.inference_mode():
            cnn = model.cnn.pool(torch.from_numpy(e.windows).to(next(model.parameters()).device)).cpu().numpy()
        probabilities.append(engine.head_outputs(windows, cnn, e.ear_windows).probabilities)
    return probabilities


def clip_probabilities(model: PCRNN, examples: list[Example]) -> np.ndarray:
    """Whole-clip probabilities ``(clips, labels)``: the mean of :func:`window_probabilities`, as the app takes it."""
    return calibrate.clip_probabilities(window_probabilities(model, examples))


MIN_CALIBRATION_CLIPS = 10
"""Held-out clips needed to fit a temperature: on fewer, it runs to its bounds and means nothing."""


def calibration_report(windows: list[np.ndarray], truth: np.ndarray, fitted_on: str) -> dict:
    """The temperature fitted on held-out ``windows``, and the calibration error before and after it.

    The error after is measured honestly, by cross-fitting: each half of the clips is scored
    with the temperature fitted on the other half.
    """
    temperature = calibrate.fit_temperature(windows, truth)
    halves = [np.flatnonzero(np.arange(len(truth)) % 2 == h) for h in (0, 1)]
    crossed = np.zeros((len(truth), windows[0].shape[1]))
    for mine, other in (halves, halves[::-1]):
        fitted = calibrate.fit_temperature([windows[i] for i in other], truth[other])
        crossed[mine] = calibrate.clip_probabilities([windows[i] for i in mine], fitted)
    before = calibrate.reliability(calibrate.clip_probabilities(windows), truth)
    after = calibrate.reliability(crossed, truth)
    logger.info("temperature %.3f fitted on %s: ECE %.3f -> %.3f (cross-fitted), mean confidence %.3f -> %.3f, "
                "accuracy %.3f", temperature, fitted_on, before["ece"], after["ece"], before["mean_confidence"],
                after["mean_confidence"], before["accuracy"])
    return {"temperature": temperature, "fitted_on": fitted_on, "n_clips": len(truth), "ece_before": before["ece"],
            "ece_after_cross_fitted": after["ece"], "mean_confidence_before": before["mean_confidence"],
            "mean_confidence_after": after["mean_confidence"], "accuracy": before["accuracy"]}


def cross_fitted_calibration(
    clips: list[data.Clip], mels: dict[Path, np.ndarray], setup: Setup, recipe: Recipe, out_dir: Path, folds: int
) -> dict:
    """Calibrate weights trained on every clip: out-of-fold predictions of the same recipe, ``folds`` times over."""
    windows, truth = [], []
    for k, split in enumerate(data.kfold_splits(clips, folds, recipe.seed), 1):
        model, _ = train_split(split, mels, setup, recipe, out_dir / f"fold{k}", select_best=False, music_detector=False)
        held_out = make_examples(split.valid, mels, setup, model, recipe, views=False)
        windows += window_probabilities(model, held_out)
        truth += [e.label for e in held_out]
    return calibration_report(windows, np.array(truth), f"out-of-fold predictions of {folds}-fold cross-fitting")


def class_weights(labels: list[int] | np.ndarray, n_labels: int) -> torch.Tensor:
    """Loss weights inversely proportional to class frequency, mean 1 over the examples with these label indices."""
    counts = np.bincount(np.asarray(labels, dtype=np.int64), minlength=n_labels).astype(np.float64)
    weights = len(labels) / (n_labels * np.maximum(counts, 1.0))
    return torch.tensor(weights, dtype=torch.float32)


def lr_factor(recipe: Recipe, steps_per_epoch: int):
    """Step -> learning-rate multiplier: linear warmup, then cosine decay to zero (or constant)."""
    warmup = recipe.warmup_epochs * steps_per_epoch
    total = max(recipe.epochs * steps_per_epoch, warmup + 1)

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        if recipe.schedule == "constant":
            return 1.0
        return 0.5 * (1 + math.cos(math.pi * (step - warmup) / (total - warmup)))

    return factor


def fit(
    model: PCRNN,
    train: list[Example],
    valid: list[Example],
    recipe: Recipe,
    out_dir: Path,
    select_best: bool = True,
    progress: bool = True,
    device: torch.device | None = None,
    resume: bool = False,
) -> dict:
    """Train ``model`` in place, save the checkpoint to ``out_dir``, and return the history.

    With ``select_best`` and validation clips, the saved weights are those of the epoch with the
    best validation accuracy (ties: lower loss) and training stops after ``patience`` epochs
    without improvement; otherwise the final weights are saved. Train accuracy is measured on
    the augmented batches against each mixed target's dominant label. After each epoch the
    whole state goes to :data:`CHECKPOINT`; with ``resume`` an existing one is loaded and
    training goes on from the epoch after it (a recipe that differs, but for ``epochs``, is an
    error).
    """
    device = device or pick_device()
    seed_everything(recipe.seed)
    rng = np.random.default_rng(recipe.seed)
    model.to(device)
    n_labels = len(model.labels)
    frozen = is_frozen(model)
    weights = class_weights([e.label for e in train], n_labels).to(device) if recipe.balance else None
    steps_per_epoch = math.ceil(len(train) / recipe.batch_size)
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.RMSprop(trainable, lr=recipe.lr, weight_decay=recipe.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_factor(recipe, steps_per_epoch))
    out_dir.mkdir(parents=True, exist_ok=True)
    history: dict = {"recipe": asdict(recipe), "device": str(device), "n_train": len(train), "n_valid": len(valid)}
    history.update(epochs=[], best_epoch=None, best_valid_accuracy=None, training_time_s=None)
    best = (-1.0, math.inf)
    first_epoch = 1
    if resume and (out_dir / CHECKPOINT).is_file():
        first_epoch, history, best = _load_checkpoint(out_dir / CHECKPOINT, model, optimizer, scheduler, rng, recipe)
        logger.info("resumed from %s after epoch %d", out_dir / CHECKPOINT, first_epoch - 1)
    started = time.perf_counter() - (history["training_time_s"] or 0.0)
    for epoch in range(first_epoch, recipe.epochs + 1):
        model.train()
        order = rng.permutation(len(train))
        loss_sum = correct = 0.0
        batches = range(0, len(train), recipe.batch_size)
        for start in tqdm(batches, desc=f"epoch {epoch}/{recipe.epochs}", leave=False, disable=not progress):
            items = [train[i] for i in order[start : start + recipe.batch_size]]
            ear = None
            if frozen:
                picks = [int(rng.integers(len(e.view_inputs))) if recipe.crop else 0 for e in items]
                x = torch.from_numpy(np.stack([view(e.view_inputs[v][0], model.features, e.view_inputs[v][1])
                                               for e, v in zip(items, picks)]))
                cnn = model.cnn.pool(torch.from_numpy(np.stack([e.views[v] for e, v in zip(items, picks)]))).to(device)
                ear = (torch.from_numpy(np.stack([e.ear_views[v] for e, v in zip(items, picks)])).to(device)
                       if model.ear is not None else None)
            else:
                sources = [(e.mel, *e.variants)[int(rng.integers(1 + len(e.variants)))] for e in items]
                x = torch.from_numpy(np.stack([crop(m, model.features, rng if recipe.crop else None) for m in sources]))
            x = x[:, None].to(device)
            y = F.one_hot(torch.tensor([e.label for e in items]), n_labels).float().to(device)
            if recipe.specaugment:
                x = spec_augment(x, rng, recipe.time_masks, recipe.time_width, recipe.freq_masks, recipe.freq_width)
            if recipe.mixup_alpha > 0:
                if frozen and ear is not None:
                    (x, cnn, ear), y = mixup([x, cnn, ear], y, recipe.mixup_alpha, rng)
                elif frozen:
                    (x, cnn), y = mixup([x, cnn], y, recipe.mixup_alpha, rng)
                else:
                    (x,), y = mixup([x], y, recipe.mixup_alpha, rng)
            logits = model.logits_from_cnn(cnn, x, ear) if frozen else model(x)
            loss = F.cross_entropy(logits, y, weight=weights)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            loss_sum += loss.item() * len(items)
            correct += (logits.argmax(1) == y.argmax(1)).sum().item()
        row = {"epoch": epoch, "lr": optimizer.param_groups[0]["lr"], "train_loss": loss_sum / len(train),
               "train_accuracy": correct / len(train), "seconds": time.perf_counter() - started}
        if valid:
            probs = clip_probabilities(model, valid)
            truth = np.array([e.label for e in valid])
            row["valid_loss"] = float(-np.log(np.clip(probs[np.arange(len(valid)), truth], 1e-8, None)).mean())
            row["valid_accuracy"] = float((probs.argmax(1) == truth).mean())
        history["epochs"].append(row)
        logger.info("epoch %d/%d %s", epoch, recipe.epochs,
                    " ".join(f"{k}={v:.4g}" for k, v in row.items() if k not in ("epoch", "seconds")))
        if select_best and valid:
            score = (row["valid_accuracy"], row["valid_loss"])
            if score[0] > best[0] or (score[0] == best[0] and score[1] < best[1]):
                best = score
                history.update(best_epoch=epoch, best_valid_accuracy=score[0])
                model.save_pretrained(out_dir)
            elif epoch - history["best_epoch"] >= recipe.patience:
                logger.info("early stop: no validation gain for %d epochs", recipe.patience)
                break
        history["training_time_s"] = time.perf_counter() - started
        _write_json(out_dir / "history.json", history)
        _save_checkpoint(out_dir / CHECKPOINT, epoch, model, optimizer, scheduler, rng, history, best)
    if not (select_best and valid):
        history["best_epoch"] = history["epochs"][-1]["epoch"]
        model.save_pretrained(out_dir)
    history["training_time_s"] = time.perf_counter() - started
    _write_json(out_dir / "history.json", history)
    model.cpu()
    if select_best and valid:
        model.load_state_dict(PCRNN.from_pretrained(out_dir).state_dict())
    return history


def _save_checkpoint(path: Path, epoch: int, model: PCRNN, optimizer: torch.optim.Optimizer,
                     scheduler: torch.optim.lr_scheduler.LRScheduler, rng: np.random.Generator, history: dict,
                     best: tuple[float, float]) -> None:
    """Everything a resumed run needs after ``epoch``, as tensors and JSON text (``weights_only`` loads it).

    Written to a temporary file and renamed, so a run killed while saving keeps the previous epoch's.
    """
    random = {"numpy": rng.bit_generator.state, "epoch": epoch, "history": history, "best": list(best)}
    state = {"model": model.state_dict(), "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
             "torch_rng": torch.get_rng_state(), "json": json.dumps(random)}
    if torch.cuda.is_available():
        state["cuda_rng"] = torch.cuda.get_rng_state_all()
    partial = path.with_suffix(".partial")
    torch.save(state, partial)
    partial.replace(path)


def _load_checkpoint(path: Path, model: PCRNN, optimizer: torch.optim.Optimizer,
                     scheduler: torch.optim.lr_scheduler.LRScheduler, rng: np.random.Generator,
                     recipe: Recipe) -> tuple[int, dict, tuple[float, float]]:
    """Restore :func:`_save_checkpoint`'s state in place; returns the next epoch, the history and the best score."""
    state = torch.load(path, map_location="cpu", weights_only=True)
    saved = json.loads(state["json"])
    others = {k: v for k, v in saved["history"]["recipe"].items() if k != "epochs"}
    if others != {k: v for k, v in asdict(recipe).items() if k != "epochs"}:
        raise ValueError(f"--resume: {path} was written with another recipe ({saved['history']['recipe']}); "
                         "resume with the same options (only --epochs may change) or train into a new --out")
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    torch.set_rng_state(state["torch_rng"])
    if "cuda_rng" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda_rng"])
    rng.bit_generator.state = saved["numpy"]
    history = saved["history"] | {"recipe": asdict(recipe)}
    return saved["epoch"] + 1, history, (saved["best"][0], saved["best"][1])


def train_split(
    split: data.Split,
    mels: dict[Path, np.ndarray],
    setup: Setup,
    recipe: Recipe,
    out_dir: Path,
    select_best: bool = True,
    music_detector: bool = True,
) -> tuple[PCRNN, dict]:
    """Build a seeded PCRNN and :func:`fit` it on one split; the model comes back on the CPU, in eval mode.

    With the AudioSet ear, its music detector is fitted too unless ``music_detector`` is off (the
    calibration folds' models, which only give genre probabilities).
    """
    model = build_model(setup, recipe)
    train = make_examples(split.train, mels, setup, model, recipe, windows=False)
    valid = make_examples(split.valid, mels, setup, model, recipe, views=False)
    logger.info("%s: %d train / %d valid clips, %s CNN branch%s, %d parameters (%d trained)", split.name, len(train),
                len(valid), setup.cnn_branch, " (frozen)" if is_frozen(model) else "",
                sum(p.numel() for p in model.parameters()), sum(p.numel() for p in model.parameters() if p.requires_grad))
    history = fit(model, train, valid, recipe, out_dir, select_best, setup.progress, pick_device(setup.device), setup.resume)
    if model.ear is not None and music_detector:
        history["music_detector"] = music.fit(model, np.concatenate([e.ear_views for e in train]), recipe.seed,
                                              recipe.nonmusic_each)
        model.save_pretrained(out_dir)
    if recipe.tag_evidence:
        model = calibrate.reconfigured(model, tag_evidence=recipe.tag_evidence)
        model.save_pretrained(out_dir)
    history.update(split=split.name, missing=split.missing)
    _write_json(out_dir / "history.json", history)
    return model.eval(), history


def cross_validate(
    splits: list[data.Split], mels: dict[Path, np.ndarray], setup: Setup, recipe: Recipe, out_dir: Path
) -> dict:
    """Train each fold from scratch, score its final weights on its held-out clips, report the pool.

    Held-out clips are scored through :meth:`genrewiz.GenreClassifier.classify` on their cached
    analysis, the predictor's own path.
    """
    truth, predicted, folds, histories = [], [], [], []
    for k, split in enumerate(splits, 1):
        model, history = train_split(split, mels, setup, recipe, out_dir / f"fold{k}", select_best=False)
        held_out = make_examples(split.valid, mels, setup, model, recipe, views=False)
        fold_truth = [setup.labels[e.label] for e in held_out]
        probs = clip_probabilities(model, held_out)
        fold_pred = [setup.labels[i] for i in probs.argmax(axis=1)]
        scores = report.scores(fold_truth, fold_pred, setup.labels)
        folds.append({"fold": k, "n_clips": len(fold_truth), "training_time_s": history["training_time_s"],
                      "accuracy": scores["accuracy"], "macro_f1": scores["macro_f1"],
                      "balanced_accuracy": scores["balanced_accuracy"]})
        logger.info("fold %d/%d: accuracy %.3f, macro-F1 %.3f on %d held-out clips, %.0f s", k, len(splits),
                    scores["accuracy"], scores["macro_f1"], len(fold_truth), history["training_time_s"])
        truth += fold_truth
        predicted += fold_pred
        histories.append(history)
    return report.write_cv_report(out_dir, truth, predicted, setup.labels, folds, histories)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m train.train", description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", required=True, type=Path, help="GTZAN folder (genres/ or genres_original/ layout)")
    parser.add_argument("--split", required=True, choices=("random", "filtered", "trainval", "kfold", "all"),
                        help="filtered: artist-filtered train/valid lists (select by valid); trainval: both lists "
                             "trained on, no selection (the final model); random: stratified --valid-fraction "
                             "hold-out; kfold: --folds-fold CV of a fixed recipe; all: train on every clip")
    parser.add_argument("--exclude", type=Path, metavar="LIST",
                        help="leave out the clips a split list names, e.g. test_filtered.txt (never train on test clips)")
    parser.add_argument("--cnn-branch", choices=CNN_BRANCHES, default="musicnn",
                        help="musicnn: pretrained on the Million Song Dataset, frozen unless --finetune; "
                             "scratch: the original PCRNN's CNN (default musicnn)")
    parser.add_argument("--audioset-branch", choices=(*AUDIOSET_BRANCHES, "none"), default="none",
                        help="a second pretrained ear, trained on AudioSet (frozen): mn04; it also fits the music "
                             "detector (default none)")
    parser.add_argument("--songs", type=Path, metavar="DIR",
                        help="real songs to train on beside GTZAN: a folder with manifest.csv (file, split, genre, "
                             "confidence); its train clips join the training clips, and with trainval/all its dev "
                             "clips too")
    parser.add_argument("--songs-low-confidence", action="store_true",
                        help="--songs: take its low-confidence labels too (default: high-confidence clips only)")
    parser.add_argument("--split-dir", type=Path, help="folder with {train,valid,test}_filtered.txt (--split filtered)")
    parser.add_argument("--allow-missing", action="store_true", help="filtered: leave out listed clips that are absent")
    parser.add_argument("--valid-fraction", type=float, default=0.2, help="random: held-out fraction")
    parser.add_argument("--folds", type=int, default=5, help="kfold: number of folds")
    parser.add_argument("--out", required=True, type=Path, help="output checkpoint folder")
    parser.add_argument("--cache-dir", type=Path, help=f"feature cache root (default {data.DEFAULT_CACHE_ROOT})")
    parser.add_argument("--features", help="FeatureConfig overrides as JSON on top of the branch's front end, "
                                           "e.g. '{\"window_hop_frames\": 160}'")
    parser.add_argument("--level-db", type=float, metavar="DB",
                        help="bring every song to this gated level (dB below full scale) before the CNN branch's "
                             "log-mel, in training and serving alike (saved in the FeatureConfig; default: as recorded)")
    parser.add_argument("--workers", type=int, default=min(2, os.cpu_count() or 1), help="decoding processes")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch CPU threads (default 1: on shared cores more threads made GRU epochs 10-50x slower)")
    parser.add_argument("--keep-last", action="store_true",
                        help="random/filtered: keep the final epoch, not the best on valid, so the valid score "
                             "measures the fixed recipe rather than a selection")
    parser.add_argument("--device", choices=DEVICES, default="auto",
                        help="where to train: auto (the GPU when there is one), cpu or cuda (default auto)")
    parser.add_argument("--resume", action="store_true",
                        help=f"continue a killed run from the {CHECKPOINT} its --out folder holds (its last finished "
                             "epoch), with the same options; --epochs may be raised")
    parser.add_argument("--calibration-folds", type=int, default=4, metavar="K",
                        help="trainval/all: fit the temperature on out-of-fold predictions of K models of the same "
                             "recipe (0: leave it at 1); splits with valid clips fit it on those (default 4)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    defaults = Recipe()
    for f in fields(Recipe):
        flag = "--" + f.name.replace("_", "-")
        default = getattr(defaults, f.name)
        if f.type == "bool" and default:
            parser.add_argument(f"--no-{f.name.replace('_', '-')}", dest=f.name, action="store_false",
                                help=f"switch off {f.name}")
        elif f.type == "bool":
            parser.add_argument(flag, dest=f.name, action="store_true", help=f"switch on {f.name}")
        else:
            kind = {"int": int, "float": float, "str": str}[f.type]
            choices = ("cosine", "constant") if f.name == "schedule" else None
            parser.add_argument(flag, type=kind, default=default, choices=choices, help=f"(default {default})")
    args = parser.parse_args(argv)
    if args.split in ("filtered", "trainval") and args.split_dir is None:
        parser.error(f"--split {args.split} needs --split-dir (the folder of *_filtered.txt lists)")
    if args.songs and args.split == "kfold":
        parser.error("--songs joins a split's training clips: use it with filtered, random, trainval or all")
    if args.audioset_branch != "none" and args.cnn_branch != "musicnn":
        parser.error("--audioset-branch joins the musicnn branch: use --cnn-branch musicnn")
    if args.audioset_prior and args.audioset_branch == "none":
        parser.error("--audioset-prior needs --audioset-branch")
    try:
        pick_device(args.device)
    except ValueError as err:
        parser.error(str(err))
    return args


def choose_splits(args: argparse.Namespace, clips: list[data.Clip], labels: list[str]) -> list[data.Split]:
    """The splits a command line asks for: GTZAN's clips (less ``--exclude``'s), and ``--songs`` joining the training clips.

    What a run trains and selects on is decided here alone, so a recorded command can be checked
    against it (``tests/test_shipped.py``).
    """
    if args.exclude:
        clips = data.exclude_listed(clips, args.exclude)
    logger.info("%d clips in %d genres under %s", len(clips), len(labels), args.data)
    if args.split == "kfold":
        return data.kfold_splits(clips, args.folds, args.seed)
    if args.split == "random":
        splits = [data.random_split(clips, args.valid_fraction, args.seed)]
    elif args.split == "filtered":
        splits = [data.filtered_split(clips, args.split_dir, args.allow_missing)]
    elif args.split == "trainval":
        splits = [data.filtered_trainval(clips, args.split_dir, args.allow_missing)]
    else:
        splits = [data.Split("all clips", clips)]
    if args.songs:
        song_splits = ("train",) if splits[0].valid else ("train", "dev")
        songs = data.scan_songs(args.songs, song_splits, args.songs_low_confidence)
        unknown = sorted({c.label for c in songs} - set(labels))
        if unknown:
            raise SystemExit(f"--songs: genres {unknown} are not among the GTZAN genres {labels}")
        splits[0] = dataclasses.replace(splits[0], name=f"{splits[0].name} + {len(songs)} songs ({'+'.join(song_splits)})",
                                        train=splits[0].train + songs)
        logger.info("%d songs of %s (%s) join the training clips", len(songs), args.songs, "+".join(song_splits))
    return splits


def main(argv: list[str] | None = None) -> dict:
    """Run one training job from the command line; returns its history (or CV report)."""
    args = parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    _setup_logging(args.out / "train.log")
    torch.set_num_threads(args.threads)
    recipe = Recipe(**{f.name: getattr(args, f.name) for f in fields(Recipe)})
    config = dataclasses.replace(BRANCH_PRESETS[args.cnn_branch]["features"], **json.loads(args.features or "{}"))
    if args.level_db is not None:
        config = dataclasses.replace(config, level_db=args.level_db)
    started = time.perf_counter()
    clips = data.scan_gtzan(args.data)
    labels = data.labels_of(clips)
    splits = choose_splits(args, clips, labels)
    needed = {c.path: c for s in splits for c in s.train + s.valid}
    setup = Setup(labels, config, args.cnn_branch, args.cache_dir, not args.no_progress, args.device, args.resume,
                  args.workers, None if args.audioset_branch == "none" else args.audioset_branch)
    mels, skipped = data.load_features(list(needed.values()), config, args.cache_dir, args.workers,
                                       not args.no_progress, ear=setup.ear_features)
    skipped_info = [{"clip": c.key, "reason": why} for c, why in skipped]
    if args.split == "kfold":
        result = cross_validate(splits, mels, setup, recipe, args.out)
        summary = f"CV accuracy {result['accuracy']:.3f} ± {result['accuracy_std']:.3f}"
    else:
        model, result = train_split(splits[0], mels, setup, recipe, args.out,
                                    select_best=bool(splits[0].valid) and not args.keep_last)
        held_out_clips = len(splits[0].valid) if splits[0].valid else len(splits[0].train) * (args.calibration_folds > 1)
        if held_out_clips < MIN_CALIBRATION_CLIPS:
            logger.warning("temperature left at 1: %d held-out clips, %d needed to fit one", held_out_clips,
                           MIN_CALIBRATION_CLIPS)
        elif splits[0].valid:
            held_out = make_examples(splits[0].valid, mels, setup, model, recipe, views=False)
            result["calibration"] = calibration_report(window_probabilities(model, held_out),
                                                       np.array([e.label for e in held_out]), f"{splits[0].name} valid")
        else:
            result["calibration"] = cross_fitted_calibration(splits[0].train, mels, setup, recipe,
                                                             args.out / "calibration", args.calibration_folds)
        if "calibration" in result:
            calibrate.reconfigured(model, temperature=result["calibration"]["temperature"]).save_pretrained(args.out)
        best, last = result.get("best_valid_accuracy"), result["epochs"][-1].get("valid_accuracy")
        if best is not None:
            summary = f"best valid accuracy {best:.3f} (epoch {result['best_epoch']})"
        else:
            summary = f"final valid accuracy {last:.3f}" if last is not None else "no validation"
    result.update(data=str(args.data), skipped=skipped_info, total_time_s=time.perf_counter() - started,
                  command=shlex.join(["python", "-m", "train.train", *(argv if argv is not None else sys.argv[1:])]))
    _write_json(args.out / ("metrics.json" if args.split == "kfold" else "history.json"), result)
    logger.info("done in %.0f s: %s; wrote %s", result["total_time_s"], summary, args.out)
    return result


def _setup_logging(log_file: Path) -> None:
    """Log to stderr and to the run's ``train.log`` (which lists any skipped files)."""
    logger.setLevel(logging.INFO)
    for handler in list(logger.handlers):
        logger.removeHandler(handler)
        handler.close()
    formatter = logging.Formatter("%(asctime)s %(levelname)s %(message)s", "%H:%M:%S")
    for handler in (logging.StreamHandler(), logging.FileHandler(log_file, encoding="utf-8")):
        handler.setFormatter(formatter)
        logger.addHandler(handler)
    logger.propagate = False


def _write_json(path: Path, payload: dict) -> None:
    path.write_text(json.dumps(payload, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
