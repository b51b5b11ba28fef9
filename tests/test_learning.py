"""The real PCRNN, trained by train/'s own loop on synthetic "genres", learns to tell them apart.

Four styles that differ in pitch, timbre and tempo (tests/synthetic.py); a few epochs must
bring held-out whole-clip accuracy, measured through the app's predictor, far above chance.
Both CNN branches: from scratch, and the frozen pretrained musicnn branch from cached outputs.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from genrewiz import GenreClassifier
from tests.synthetic import STYLES
from tests.test_train_data import TINY, make_tree
from genrewiz.musicnn import MUSICNN_FEATURES, PATCH_FRAMES
from train import data
from train.train import Recipe, Setup, build_model, make_examples, train_split

pytestmark = pytest.mark.slow


def test_pcrnn_learns_synthetic_genres(tmp_path):
    make_tree(tmp_path, "genres", ".wav", per_genre=9, seconds=7.0, genres=STYLES)
    clips = data.scan_gtzan(tmp_path)
    split = data.random_split(clips, valid_fraction=1 / 3, seed=0)
    labels = data.labels_of(clips)
    features, skipped = data.load_features(split.train, TINY, tmp_path / "cache", progress=False)
    assert not skipped

    recipe = Recipe(epochs=10, batch_size=8, lr=1e-3, warmup_epochs=1, seed=0)
    setup = Setup(labels, TINY, "scratch", tmp_path / "cache", progress=False)
    model, history = train_split(data.Split("synthetic", split.train), features, setup, recipe, tmp_path / "model")

    classifier = GenreClassifier(model)
    correct = sum(classifier.predict(c.path).genre == c.label for c in split.valid)
    accuracy = correct / len(split.valid)
    chance = 1 / len(STYLES)
    assert accuracy >= 0.75, f"held-out accuracy {accuracy:.2f} (chance {chance:.2f}); history {history['epochs']}"
    assert history["epochs"][-1]["train_loss"] < history["epochs"][0]["train_loss"]


SHORT_MUSICNN = dataclasses.replace(MUSICNN_FEATURES, window_frames=2 * PATCH_FRAMES, window_hop_frames=PATCH_FRAMES)
"""musicnn's front end in 6-second windows, so the test's pretrained branch runs on few patches."""


def test_frozen_musicnn_branch_learns_in_two_epochs_from_its_cache(tmp_path):
    make_tree(tmp_path, "genres", ".wav", per_genre=6, seconds=7.0, genres=STYLES)
    clips = data.scan_gtzan(tmp_path)
    split = data.random_split(clips, valid_fraction=1 / 3, seed=0)
    labels = data.labels_of(clips)
    mels, _ = data.load_features(clips, SHORT_MUSICNN, tmp_path / "cache", progress=False)
    setup = Setup(labels, SHORT_MUSICNN, "musicnn", tmp_path / "cache", progress=False)
    recipe = Recipe(epochs=2, batch_size=4, lr=3e-3, warmup_epochs=0, views=2, seed=0)

    model, history = train_split(split, mels, setup, recipe, tmp_path / "model", select_best=False)

    assert len(history["epochs"]) == 2 and model.cnn_branch == "musicnn"
    branch_caches = [p for p in (tmp_path / "cache").iterdir() if p.name.startswith("branch-")]
    assert len(branch_caches) == 2, "training views and validation windows are cached, keyed apart"
    classifier = GenreClassifier(model)
    accuracy = sum(classifier.predict(c.path).genre == c.label for c in split.valid) / len(split.valid)
    assert accuracy >= 0.75, f"held-out accuracy {accuracy:.2f} (chance 0.25); history {history['epochs']}"


def test_frozen_musicnn_branch_learns_with_arrival_variants(tmp_path):
    """Training views of clips as they would arrive (mastered, recorded, encoded) are cached and still learnable."""
    make_tree(tmp_path, "genres", ".wav", per_genre=6, seconds=7.0, genres=STYLES)
    clips = data.scan_gtzan(tmp_path)
    split = data.random_split(clips, valid_fraction=1 / 3, seed=0)
    mels, _ = data.load_features(clips, SHORT_MUSICNN, tmp_path / "cache", progress=False)
    setup = Setup(data.labels_of(clips), SHORT_MUSICNN, "musicnn", tmp_path / "cache", progress=False)
    recipe = Recipe(epochs=2, batch_size=4, lr=3e-3, warmup_epochs=0, views=2, arrivals=2, seed=0)

    model, history = train_split(split, mels, setup, recipe, tmp_path / "model", select_best=False)

    arrival_caches = [p for p in (tmp_path / "cache").rglob("arrival*") if p.is_dir()]
    assert len(arrival_caches) == 2, "one cached spectrogram set per arrival variant"
    example = make_examples(split.train, mels, setup, model, recipe, windows=False)[0]
    assert example.views.shape[0] == 2 + 2 and len(example.view_inputs) == 4
    assert not np.array_equal(example.view_inputs[2][0], example.mel), "an arrival variant is not the clean clip"
    classifier = GenreClassifier(model)
    accuracy = sum(classifier.predict(c.path).genre == c.label for c in split.valid) / len(split.valid)
    assert accuracy >= 0.75, f"held-out accuracy {accuracy:.2f} (chance 0.25); history {history['epochs']}"


def test_branch_cache_keys_on_the_branch_weights_and_views(tmp_path, monkeypatch):
    make_tree(tmp_path, "genres", ".wav", per_genre=1, seconds=3.0, genres=STYLES[:2])
    clips = data.scan_gtzan(tmp_path)
    mels, _ = data.load_features(clips, SHORT_MUSICNN, tmp_path / "cache", progress=False)
    setup = Setup(data.labels_of(clips), SHORT_MUSICNN, "musicnn", tmp_path / "cache", progress=False)
    model = build_model(setup, Recipe())
    calls = []
    real = data.trunk_embedder

    def counting(*args, **kwargs):
        embed = real(*args, **kwargs)
        return lambda x: calls.append(len(x)) or embed(x)

    monkeypatch.setattr(data, "trunk_embedder", counting)

    def cache_dirs() -> set[str]:
        return {p.name for p in (tmp_path / "cache").iterdir() if p.name.startswith("branch-")}

    first = data.load_branch_features(clips, mels, model, [0, 93], tmp_path / "cache", progress=False)
    again = data.load_branch_features(clips, mels, model, [0, 93], tmp_path / "cache", progress=False)
    assert calls == [2, 2], "the second pass must read the cache"
    assert all(np.array_equal(first[c.path], again[c.path]) for c in clips)
    assert first[clips[0].path].shape == (2, 2, 200)
    data.load_branch_features(clips, mels, model, [0], tmp_path / "cache", progress=False)
    assert len(cache_dirs()) == 2 and calls[2:] == [1, 1], "other views, other cache"
    with torch.no_grad():
        model.cnn.trunk.tags.bias.add_(1.0)
        model.cnn.trunk.penultimate.bias.add_(0.1)
    changed = data.load_branch_features(clips, mels, model, [0, 93], tmp_path / "cache", progress=False)
    assert len(cache_dirs()) == 3, "other branch weights, other cache"
    assert not np.array_equal(changed[clips[0].path], first[clips[0].path])


def test_finetune_trains_the_musicnn_trunk_too(tmp_path):
    make_tree(tmp_path, "genres", ".wav", per_genre=2, seconds=3.0, genres=STYLES[:2])
    clips = data.scan_gtzan(tmp_path)
    mels, _ = data.load_features(clips, SHORT_MUSICNN, tmp_path / "cache", progress=False)
    setup = Setup(data.labels_of(clips), SHORT_MUSICNN, "musicnn", tmp_path / "cache", progress=False)
    recipe = Recipe(epochs=1, batch_size=4, lr=1e-3, warmup_epochs=0, finetune=True, seed=0)
    before = build_model(setup, recipe).cnn.trunk.state_dict()

    model, history = train_split(data.Split("synthetic", clips), mels, setup, recipe, tmp_path / "model")

    assert not any(p.name.startswith("branch-") for p in (tmp_path / "cache").iterdir()), "nothing cached when fine-tuning"
    after = model.cnn.trunk.state_dict()
    assert not torch.equal(after["timbral.0.weight"], before["timbral.0.weight"])
    assert not torch.equal(after["input_bn.running_mean"], before["input_bn.running_mean"])
    assert len(history["epochs"]) == 1


def test_two_pretrained_ears_learn_in_two_epochs_and_fit_the_music_detector(tmp_path):
    """musicnn + the AudioSet ear (both frozen, cached), the GRU and the genre prior: still learns, and says music is music."""
    genres = ("blues", "classical", "disco", "metal")
    make_tree(tmp_path, "genres", ".wav", per_genre=6, seconds=7.0, genres=genres)
    clips = data.scan_gtzan(tmp_path)
    split = data.random_split(clips, valid_fraction=1 / 3, seed=0)
    levelled = dataclasses.replace(SHORT_MUSICNN, level_db=-17.0)
    setup = Setup(data.labels_of(clips), levelled, "musicnn", tmp_path / "cache", progress=False,
                  audioset_branch="mn04")
    mels, _ = data.load_features(clips, levelled, tmp_path / "cache", progress=False, ear=setup.ear_features)
    recipe = Recipe(epochs=2, batch_size=4, lr=3e-3, warmup_epochs=0, views=2, audioset_prior=0.5,
                    nonmusic_each=3, seed=0)

    model, history = train_split(split, mels, setup, recipe, tmp_path / "model", select_best=False)

    assert model.ear is not None and model.audioset_prior == 0.5
    assert [p.name for p in (tmp_path / "cache").iterdir() if p.name.startswith("ear-")], "the ear's outputs are cached"
    classifier = GenreClassifier.from_pretrained(tmp_path / "model")
    assert classifier.engine.name == "onnxruntime" and classifier.audioset_config is not None
    assert classifier.config == levelled, "the level the model trained at is what it is served at"
    predictions = [classifier.predict(c.path) for c in split.valid]
    accuracy = sum(p.genre == c.label for p, c in zip(predictions, split.valid)) / len(split.valid)
    assert accuracy >= 0.75, f"held-out accuracy {accuracy:.2f} (chance 0.25); history {history['epochs']}"
    detector = history["music_detector"]
    assert detector["nonmusic_clips"] >= 8 * 3 and detector["music_windows"] == len(split.train) * 2
