"""The real PCRNN, trained by train/'s own loop on synthetic "genres", learns to tell them apart.

Four styles that differ in pitch, timbre and tempo (tests/synthetic.py); a few epochs must
bring held-out whole-clip accuracy, measured through the app's predictor, far above chance.
"""

from __future__ import annotations

import pytest

from genrewiz import GenreClassifier
from tests.synthetic import STYLES
from tests.test_train_data import TINY, make_tree
from train import data
from train.train import Recipe, train_split

pytestmark = pytest.mark.slow


def test_pcrnn_learns_synthetic_genres(tmp_path):
    make_tree(tmp_path, "genres", ".wav", per_genre=9, seconds=7.0, genres=STYLES)
    clips = data.scan_gtzan(tmp_path)
    split = data.random_split(clips, valid_fraction=1 / 3, seed=0)
    labels = data.labels_of(clips)
    features, skipped = data.load_features(split.train, TINY, tmp_path / "cache", progress=False)
    assert not skipped

    recipe = Recipe(epochs=10, batch_size=8, lr=1e-3, warmup_epochs=1, seed=0)
    model, history = train_split(data.Split("synthetic", split.train), features, labels, TINY, recipe,
                                 tmp_path / "model", progress=False)

    classifier = GenreClassifier(model)
    correct = sum(classifier.predict(c.path).genre == c.label for c in split.valid)
    accuracy = correct / len(split.valid)
    chance = 1 / len(STYLES)
    assert accuracy >= 0.75, f"held-out accuracy {accuracy:.2f} (chance {chance:.2f}); history {history['epochs']}"
    assert history["epochs"][-1]["train_loss"] < history["epochs"][0]["train_loss"]
