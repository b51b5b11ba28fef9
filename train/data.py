"""GTZAN on disk -> labelled clips, train/valid splits, and log-mel spectrograms cached on disk.

Spectrograms come from :func:`genrewiz.predict.analyse`, the function the app runs on every
upload, so the model trains on exactly what it will be served. They are computed once and
cached, keyed by a hash of the :class:`~genrewiz.features.FeatureConfig` and of each file's
path, size and modification time, so an epoch reads arrays, never audio. A frozen pretrained
CNN branch's outputs are cached the same way (:func:`load_branch_features`), keyed on the
branch and its weights too, so an epoch never runs the pretrained network.
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import multiprocessing
import os
import warnings
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from sklearn.model_selection import StratifiedKFold, train_test_split
import torch
from tqdm.auto import tqdm

from genrewiz.audio import DEFAULT_MAX_DURATION, SUPPORTED_EXTENSIONS, AudioError, load_audio
from genrewiz.features import AudioSetFeatures, FeatureConfig, audioset_windows, make_windows
from genrewiz.model import PCRNN
from genrewiz.predict import analyse, decode_rate
from train.arrival import Arrival
from train.augment import view

logger = logging.getLogger("train")

LAYOUTS = ("genres", "genres_original")
"""Folder holding one sub-folder per genre: original GTZAN, Kaggle copy."""
SPLIT_LISTS = {"train": "train_filtered.txt", "valid": "valid_filtered.txt", "test": "test_filtered.txt"}
"""The artist-filtered split files of ``coreyker/dnn-mgr`` (``gtzan/*_filtered.txt``)."""
DEFAULT_CACHE_ROOT = Path("~/.cache/genrewiz/features")


@dataclass(frozen=True)
class Clip:
    """One labelled audio file; ``key`` (``jazz/jazz.00054``) names it independently of format."""

    path: Path
    label: str

    @property
    def key(self) -> str:
        return f"{self.label}/{self.path.stem}"


@dataclass
class Split:
    """Clips to train on and clips to select the model by (empty when training on everything)."""

    name: str
    train: list[Clip]
    valid: list[Clip] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)


class SplitError(ValueError):
    """A split that cannot be built from the data given, with a message that says what to do."""


def genre_root(data_dir: str | os.PathLike[str]) -> Path:
    """The folder with one sub-folder per genre, in either common GTZAN layout or given directly."""
    data_dir = Path(data_dir).expanduser()
    if not data_dir.is_dir():
        raise FileNotFoundError(f"GTZAN folder not found: {data_dir}")
    for name in LAYOUTS:
        if (data_dir / name).is_dir():
            return data_dir / name
    if any(_audio_files(sub) for sub in data_dir.iterdir() if sub.is_dir()):
        return data_dir
    raise FileNotFoundError(
        f"no GTZAN audio under {data_dir}: expected {' or '.join(f'{n}/<genre>/<audio files>' for n in LAYOUTS)}"
    )


def scan_gtzan(data_dir: str | os.PathLike[str]) -> list[Clip]:
    """Every audio file under the genre folders, labelled by its folder name, in a stable order."""
    root = genre_root(data_dir)
    clips = [
        Clip(path, genre.name)
        for genre in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
        for path in _audio_files(genre)
    ]
    if len({c.label for c in clips}) < 2:
        raise FileNotFoundError(f"need audio in at least two genre folders under {root}")
    return clips


SONG_MANIFEST = "manifest.csv"
"""A song folder's list of its clips: ``file`` (relative path), ``split``, ``genre`` and ``confidence`` columns."""


def scan_songs(
    songs_dir: str | os.PathLike[str], splits: tuple[str, ...], low_confidence: bool = False
) -> list[Clip]:
    """The clips a song folder's :data:`SONG_MANIFEST` puts in ``splits``, labelled as it says.

    Only clips labelled with high confidence are taken unless ``low_confidence``: an arguable
    label (hardcore punk as rock, bluegrass as country) teaches the model less than it costs.
    """
    import csv

    root = Path(songs_dir).expanduser()
    manifest = root / SONG_MANIFEST
    if not manifest.is_file():
        raise FileNotFoundError(f"no {SONG_MANIFEST} in {root} (columns: file, split, genre, confidence)")
    with manifest.open(newline="", encoding="utf-8") as file:
        rows = list(csv.DictReader(file))
    return _sorted([Clip(root / r["file"], r["genre"]) for r in rows
                    if r["split"] in splits and (low_confidence or r["confidence"] == "high")])


def labels_of(clips: list[Clip]) -> list[str]:
    """The genre names, sorted: the model's output order."""
    return sorted({c.label for c in clips})


def random_split(clips: list[Clip], valid_fraction: float = 0.2, seed: int = 0) -> Split:
    """Stratified random train/valid split, as the original project made it."""
    labels = [c.label for c in clips]
    train, valid = train_test_split(clips, test_size=valid_fraction, stratify=labels, random_state=seed)
    return Split(f"random {1 - valid_fraction:.0%}/{valid_fraction:.0%} (seed {seed})", _sorted(train), _sorted(valid))


def kfold_splits(clips: list[Clip], folds: int = 5, seed: int = 0) -> list[Split]:
    """Stratified k-fold cross-validation: every clip is held out exactly once."""
    labels = [c.label for c in clips]
    kfold = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    return [
        Split(f"fold {k + 1}/{folds}", [clips[i] for i in train], [clips[i] for i in valid])
        for k, (train, valid) in enumerate(kfold.split(clips, labels))
    ]


def read_split_list(path: str | os.PathLike[str]) -> list[str]:
    """Clip keys (``genre/genre.000NN``) from a split file of ``genre/genre.000NN.wav`` lines."""
    keys = []
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            name = Path(line)
            keys.append(f"{name.parent.name}/{name.stem}")
    return keys


def filtered_subset(
    clips: list[Clip], split_dir: str | os.PathLike[str], subset: str, allow_missing: bool = False
) -> tuple[list[Clip], list[str]]:
    """The clips an artist-filtered list names, and the listed keys absent from ``clips``.

    Raises:
        SplitError: the list file is missing, or it names clips that are not in the data
            (unless ``allow_missing``, which logs every absent clip and goes on without them).
    """
    path = Path(split_dir).expanduser() / SPLIT_LISTS[subset]
    if not path.is_file():
        raise SplitError(
            f"split list not found: {path} (the artist-filtered lists are gtzan/*_filtered.txt "
            "in the public coreyker/dnn-mgr repository; pass their folder with --split-dir)"
        )
    by_key = {c.key: c for c in clips}
    keys = read_split_list(path)
    missing = [k for k in keys if k not in by_key]
    if missing and not allow_missing:
        shown = ", ".join(missing[:5]) + (", ..." if len(missing) > 5 else "")
        raise SplitError(
            f"{len(missing)} of the {len(keys)} clips listed in {path.name} are not in the data ({shown}). "
            "The artist-filtered split needs the full 1000-clip GTZAN; pass --allow-missing to use "
            "only the listed clips that are present, or --split kfold for a small set."
        )
    if missing:
        logger.warning("%s: %d of %d listed clips are missing and left out (e.g. %s; all in history.json)",
                       path.name, len(missing), len(keys), ", ".join(missing[:3]))
    return [by_key[k] for k in keys if k in by_key], missing


def filtered_split(clips: list[Clip], split_dir: str | os.PathLike[str], allow_missing: bool = False) -> Split:
    """The artist-filtered train (443) / valid (197) split of Kereliuk, Sturm and Larsen."""
    train, missing_train = filtered_subset(clips, split_dir, "train", allow_missing)
    valid, missing_valid = filtered_subset(clips, split_dir, "valid", allow_missing)
    if not train or not valid:
        raise SplitError("the artist-filtered split has no clips present in the data for train or valid")
    return Split("artist-filtered", train, valid, missing_train + missing_valid)


def filtered_trainval(clips: list[Clip], split_dir: str | os.PathLike[str], allow_missing: bool = False) -> Split:
    """The artist-filtered train and valid lists together, to train the final model once a recipe is chosen."""
    chosen = filtered_split(clips, split_dir, allow_missing)
    return Split("artist-filtered train + valid", _sorted(chosen.train + chosen.valid), [], chosen.missing)


def exclude_listed(clips: list[Clip], list_file: str | os.PathLike[str]) -> list[Clip]:
    """``clips`` without those a split list names (e.g. the artist-filtered test list, which is never trained on)."""
    banned = set(read_split_list(list_file))
    kept = [c for c in clips if c.key not in banned]
    logger.info("left out %d clips listed in %s", len(clips) - len(kept), Path(list_file).name)
    return kept


def feature_cache_dir(
    config: FeatureConfig, root: str | os.PathLike[str] | None = None, arrival: Arrival | None = None,
    rate: int | None = None,
) -> Path:
    """``root/<hash of the FeatureConfig and the decoding rate>[/<arrival tag>]``: a changed setting gets a fresh cache, never stale arrays."""
    key = {**config.to_dict(), "decoded_at": rate or config.sample_rate}
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
    cache = Path(root or DEFAULT_CACHE_ROOT).expanduser() / digest
    return cache / arrival.tag if arrival else cache


def load_features(
    clips: list[Clip],
    config: FeatureConfig,
    cache_root: str | os.PathLike[str] | None = None,
    workers: int = 1,
    progress: bool = True,
    arrival: Arrival | None = None,
    ear: AudioSetFeatures | None = None,
) -> tuple[dict[Path, np.ndarray], list[tuple[Clip, str]]]:
    """Log-mel spectrograms for every readable clip, and the unreadable clips with why.

    Each clip is decoded as the predictor decodes it for a model with the AudioSet ear ``ear``
    (at :func:`~genrewiz.predict.decode_rate`), so the cache holds what serving computes. With
    ``arrival``, the waveform first goes through that chain at that rate (:mod:`train.arrival`):
    the spectrogram of the clip as recorded, or a training variant. Uncached clips are decoded
    in ``workers`` processes (one pass, with a progress bar); unreadable ones are logged and
    skipped, never fatal.
    """
    rate = decode_rate(config, ear)
    cache = feature_cache_dir(config, cache_root, arrival, rate)
    cache.mkdir(parents=True, exist_ok=True)
    (cache / "feature_config.json").write_text(json.dumps(config.to_dict(), sort_keys=True, indent=2))
    files = {c.path: _cache_file(cache, c.path) for c in clips}
    keys = {c.path: c.key for c in clips}
    todo = [p for p, f in files.items() if not f.is_file()]
    errors: dict[Path, str] = {}
    if todo:
        jobs = [(str(p), str(files[p]), config, rate, arrival, keys[p]) for p in todo]
        what = f"log-mel, {arrival.chain} arrival {arrival.variant}" if arrival else "log-mel"
        bar = dict(total=len(todo), desc=f"{what} (first pass)", unit="clip", disable=not progress)
        if workers > 1 and len(todo) > 1:
            context = multiprocessing.get_context("spawn")
            with ProcessPoolExecutor(min(workers, len(todo)), mp_context=context) as pool:
                results = list(tqdm(pool.map(_compute, jobs, chunksize=4), **bar))
        else:
            results = [_compute(job) for job in tqdm(jobs, **bar)]
        errors = {p: err for p, err in zip(todo, results) if err}
    features, skipped = {}, []
    for clip in clips:
        if clip.path in errors:
            skipped.append((clip, errors[clip.path]))
            logger.warning("skipped unreadable clip %s: %s", clip.path, errors[clip.path])
        else:
            features[clip.path] = np.load(files[clip.path])
    return features, skipped


def load_branch_features(
    clips: list[Clip],
    features: dict[Path, np.ndarray],
    model: PCRNN,
    shifts: list[int] | None,
    cache_root: str | os.PathLike[str] | None = None,
    progress: bool = True,
    arrival: Arrival | None = None,
) -> dict[Path, np.ndarray]:
    """A frozen CNN branch's patch embeddings ``(windows, patches, dims)`` for every clip with features.

    With ``shifts``, one training view per shift (:func:`train.augment.view`); without, the
    windows the predictor cuts (:func:`genrewiz.features.make_windows`), for validation.
    ``features`` are the spectrograms of the clips as they arrived through ``arrival`` (if any).
    Cached under a key of the feature settings, the branch, its frozen trunk's weights, the
    views and the arrival chain. The trunk runs in ONNX Runtime (:func:`trunk_embedder`).
    """
    config = model.features
    digest = hashlib.sha256(json.dumps({"features": config.to_dict(), "branch": model.cnn_branch, "views": shifts,
                                        "arrival": arrival.tag if arrival else None,
                                        "decoded_at": decode_rate(config, model.audioset_features)},
                                       sort_keys=True).encode())
    digest.update(_trunk_digest(model).encode())
    cache = Path(cache_root or DEFAULT_CACHE_ROOT).expanduser() / f"branch-{digest.hexdigest()[:16]}"
    cache.mkdir(parents=True, exist_ok=True)
    result: dict[Path, np.ndarray] = {}
    todo = [c for c in clips if c.path in features]
    missing = [c for c in todo if not _cache_file(cache, c.path).is_file()]
    embed = trunk_embedder(model, cache_root) if missing else None
    what = f"{model.cnn_branch} branch ({'views' if shifts else 'windows'}{f', {arrival.tag}' if arrival else ''})"
    for clip in tqdm(missing, desc=what, unit="clip", disable=not progress):
        mel = features[clip.path]
        if shifts:
            windows = np.stack([view(mel, config, s) for s in shifts])[:, None]
        else:
            windows = make_windows(mel, config).data
        _save_atomically(_cache_file(cache, clip.path), embed(windows))
    for clip in todo:
        result[clip.path] = np.load(_cache_file(cache, clip.path))
    return result


def load_ear_features(
    clips: list[Clip],
    mels: dict[Path, np.ndarray],
    model: PCRNN,
    cache_root: str | os.PathLike[str] | None = None,
    workers: int = 1,
    progress: bool = True,
    arrival: Arrival | None = None,
) -> dict[Path, np.ndarray]:
    """The AudioSet ear's patch summaries ``(windows, patches, summary)`` of every clip with a spectrogram in ``mels``.

    The predictor's windows (those :func:`~genrewiz.features.make_windows` cuts from each
    clip's spectrogram in ``mels``) are heard by the frozen ear as :func:`~genrewiz.predict.analyse`
    gives it the song, the clip going through ``arrival`` first if given. Decoding and the ear's
    front end run in ``workers`` processes, the ear in this one; cached like
    :func:`load_branch_features`, keyed on what the ear hears (not on the other front end's
    settings, such as its level, which leave the ear's input alone).
    """
    ear, config = model.audioset_features, model.features
    windows = {"sample_rate": config.sample_rate, "hop_length": config.hop_length,
               "window_frames": config.window_frames, "window_hop_frames": config.window_hop_frames}
    digest = hashlib.sha256(json.dumps({"ear": ear.to_dict(), "windows": windows,
                                        "decoded_at": decode_rate(config, ear),
                                        "arrival": arrival.tag if arrival else None}, sort_keys=True).encode())
    digest.update(_weights_digest(model.ear.trunk).encode())
    cache = Path(cache_root or DEFAULT_CACHE_ROOT).expanduser() / f"ear-{digest.hexdigest()[:16]}"
    cache.mkdir(parents=True, exist_ok=True)
    todo = [c for c in clips if c.path in mels]
    missing = [c for c in todo if not _cache_file(cache, c.path).is_file()]
    if missing:
        jobs = [(str(c.path), make_windows(mels[c.path], config).start_frames * config.frame_seconds,
                 config, ear, arrival, c.key) for c in missing]
        what = f"{model.audioset_branch} ear ({arrival.tag if arrival else 'clean'})"
        context = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(max(1, min(workers, len(jobs))), mp_context=context) as pool:
            for clip, patches in tqdm(zip(missing, pool.map(_ear_patches, jobs)), total=len(jobs), desc=what,
                                      unit="clip", disable=not progress):
                with torch.inference_mode():
                    flat = torch.from_numpy(patches.reshape(-1, *patches.shape[2:]))
                    summaries = model.ear.patch_summaries(flat).numpy().reshape(*patches.shape[:2], -1)
                _save_atomically(_cache_file(cache, clip.path), summaries)
    return {c.path: np.load(_cache_file(cache, c.path)) for c in todo}


def _ear_patches(job: tuple) -> np.ndarray:
    """Analyse one clip as the predictor does (through its arrival chain) and cut the ear's patches for the given windows."""
    path, starts, config, ear, arrival, key = job
    rate = decode_rate(config, ear)
    analysis = analyse(arrived(path, rate, arrival, key), config, rate, ear=ear)
    return audioset_windows(analysis.ear_mel, starts, config.window_seconds, ear)


def arrived(
    path: str | os.PathLike[str], rate: int, arrival: Arrival | None, key: str, max_duration: float = DEFAULT_MAX_DURATION
) -> np.ndarray:
    """The clip ``key``'s waveform decoded at ``rate`` and, with ``arrival``, as it arrives through that chain.

    The one way training's caches and the evaluation hear a clip through a chain: at the rate
    the predictor decodes songs at, so both ears hear the same chained waveform.

    Raises:
        AudioError: the file cannot be decoded.
    """
    samples = load_audio(path, rate, max_duration).samples
    return samples if arrival is None else arrival.apply(samples, rate, key)


def trunk_embedder(model: PCRNN, cache_root: str | os.PathLike[str] | None = None):
    """``(n, 1, frames, mels)`` windows -> ``(n, patches, 200)`` patch embeddings of the model's frozen trunk.

    The trunk is exported once per set of weights to ONNX, with the served graph's exact front-end
    rewrite, and run by ONNX Runtime, many times faster than torch eager on a CPU, so building the training caches of many augmented views
    takes minutes rather than an hour. Its outputs equal torch's within float32 rounding.
    """
    import onnxruntime as ort

    from genrewiz.export import OPSET
    from genrewiz.musicnn import PATCH_FRAMES

    path = Path(cache_root or DEFAULT_CACHE_ROOT).expanduser() / f"trunk-exact-{_trunk_digest(model)[:16]}.onnx"
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_suffix(f".{os.getpid()}.partial")
        trunk = _TrunkEmbedding(copy.deepcopy(model.cnn.trunk).cpu().eval(), model.features.n_mels)
        with warnings.catch_warnings():  # the TorchScript exporter's notes on constant folding
            warnings.simplefilter("ignore")
            torch.onnx.export(trunk, (torch.zeros(2, PATCH_FRAMES, model.features.n_mels),), str(partial),
                              input_names=["patches"], output_names=["embeddings"],
                              dynamic_axes={"patches": {0: "p"}, "embeddings": {0: "p"}}, opset_version=OPSET,
                              dynamo=False)
        os.replace(partial, path)
    options = ort.SessionOptions()
    options.intra_op_num_threads = os.cpu_count() or 1
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")  # never steal the cores training shares
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    per_window = model.cnn.patches

    def embed(windows: np.ndarray) -> np.ndarray:
        n, _, _, mels = windows.shape
        patches = np.ascontiguousarray(windows[:, 0, : per_window * PATCH_FRAMES]).reshape(n * per_window, PATCH_FRAMES, mels)
        return session.run(None, {"patches": patches})[0].reshape(n, per_window, -1)

    return embed


class _TrunkEmbedding(torch.nn.Module):
    """The frozen trunk's patch embedding as a module of its own, for export, with the served graph's exact front end.

    :class:`genrewiz.export.ExactFrontEnd` gives the trunk's front-end maps (to float rounding)
    at a fraction of the work, so the cache holds what serving computes, sooner.
    """

    def __init__(self, trunk: torch.nn.Module, n_mels: int) -> None:
        super().__init__()
        from genrewiz.export import ExactFrontEnd

        self.trunk = trunk
        self.frontend = ExactFrontEnd(trunk, n_mels)

    def forward(self, patches: torch.Tensor) -> torch.Tensor:
        return self.trunk.embed_frontend(self.frontend(patches))


def _trunk_digest(model: PCRNN) -> str:
    return _weights_digest(model.cnn.trunk)


def _weights_digest(module: torch.nn.Module) -> str:
    """SHA-256 of a frozen network's weights: what keys the caches of its outputs."""
    digest = hashlib.sha256()
    for tensor in module.state_dict().values():
        digest.update(tensor.cpu().numpy().tobytes())
    return digest.hexdigest()


def _compute(job: tuple[str, str, FeatureConfig, int, Arrival | None, str]) -> str | None:
    """Decode one file at ``rate`` (through its arrival chain) and cache its spectrogram; return the error message if it is unreadable."""
    path, target, config, rate, arrival, key = job
    try:
        mel = analyse(arrived(path, rate, arrival, key), config, rate).mel
    except AudioError as err:
        return str(err)
    _save_atomically(Path(target), mel)
    return None


def _save_atomically(target: Path, array: np.ndarray) -> None:
    """Write ``array`` to ``target`` through a temporary file, so a killed run never leaves half a cache entry."""
    tmp = f"{target}.{os.getpid()}.tmp.npy"
    np.save(tmp, array)
    os.replace(tmp, target)


def _cache_file(cache: Path, path: Path) -> Path:
    stat = path.stat()
    key = f"{path.resolve()}|{stat.st_size}|{stat.st_mtime_ns}"
    return cache / f"{path.stem}-{hashlib.sha256(key.encode()).hexdigest()[:16]}.npy"


def _audio_files(folder: Path) -> list[Path]:
    """Audio files of every format genrewiz reads: GTZAN's ``.au``, Kaggle's ``.wav``, ``.ogg`` copies, ..."""
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in SUPPORTED_EXTENSIONS and not p.name.startswith("."))


def _sorted(clips: list[Clip]) -> list[Clip]:
    return sorted(clips, key=lambda c: c.key)
