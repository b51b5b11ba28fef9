"""train/ end to end on a tiny synthetic GTZAN: train, evaluate, card, push --dry-run; all offline."""

from __future__ import annotations

import dataclasses
import json

import pytest

from genrewiz import GenreClassifier, load_model
from genrewiz.hub import resolve_source
from tests.synthetic import STYLES, write_clip
from tests.test_train_data import TINY, make_tree, write_lists
from train import card, evaluate, push
from train.train import main as train_main

pytestmark = pytest.mark.slow

FEATURES = json.dumps(TINY.to_dict())
CV_FILES = ("classification_report.txt", "confusion_matrix.png", "curves.png", "metrics.json")
EVALUATION_FILES = (*CV_FILES, "reliability.png")


@pytest.fixture(scope="module")
def gtzan(tmp_path_factory):
    root = tmp_path_factory.mktemp("gtzan")
    make_tree(root, "genres_original", ".wav", per_genre=5, seconds=7.0, genres=("blues", "jazz", "metal"))
    return root


def _train(gtzan, out, *extra):
    return train_main(["--data", str(gtzan), "--out", str(out), "--cache-dir", str(gtzan / "cache"),
                       "--features", FEATURES, "--cnn-branch", "scratch", "--workers", "1", "--no-progress",
                       "--batch-size", "4", *extra])


def make_songs(root, genres=("blues", "jazz", "metal")):
    """A real-songs folder as ``--songs`` reads it: clips under clips/<genre>/ and a manifest.csv with split and confidence."""
    rows = ["file,split,genre,confidence"]
    for g, genre in enumerate(genres):
        for i, (split, confidence) in enumerate((("train", "high"), ("train", "low"), ("dev", "high"))):
            name = f"clips/{genre}/{genre}_artist{i}_song.wav"
            write_clip(root / name, STYLES[g], 7.0, seed=500 + 10 * g + i)
            rows.append(f"{name},{split},{genre},{confidence}")
    (root / "manifest.csv").write_text("\n".join(rows) + "\n")
    return root


def test_two_epoch_run_gives_a_loadable_checkpoint_and_evaluation(gtzan, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    out = tmp_path / "run"
    songs = make_songs(tmp_path / "songs")
    history = _train(gtzan, out, "--split", "random", "--epochs", "2", "--songs", str(songs), "--level-db", "-20")
    assert history["n_train"] == 12 + 3 and "+ 3 songs (train)" in history["split"], "high-confidence train songs join"

    assert [row["epoch"] for row in history["epochs"]] == [1, 2]
    for key in ("train_loss", "train_accuracy", "valid_loss", "valid_accuracy"):
        assert all(key in row for row in history["epochs"])
    assert json.loads((out / "history.json").read_text())["best_epoch"] in (1, 2)
    assert (out / "train.log").read_text().count("epoch") >= 2

    model, source = load_model(str(out))
    assert source.kind == "local" and model.labels == ["blues", "jazz", "metal"]
    assert model.features == dataclasses.replace(TINY, level_db=-20.0), "--level-db is saved with the features"
    prediction = GenreClassifier(model).predict(gtzan / "genres_original" / "metal" / "metal.00000.wav")
    assert prediction.genre in model.labels and abs(prediction.probabilities.sum() - 1) < 1e-5

    field = tmp_path / "field"
    make_tree(field, "genres", ".ogg", per_genre=1, seconds=4.0, genres=("jazz", "metal"))
    metrics = evaluate.main(["--model", str(out), "--data", str(gtzan), "--split", "random", "--field", str(field),
                             "--songs", str(songs), "--no-progress"])
    for name in EVALUATION_FILES:
        assert (out / name).stat().st_size > 0
    assert metrics["n_clips"] == 3 and metrics["split"] == "random"
    for key in ("accuracy", "macro_f1", "per_class_f1", "per_class_recall", "ece", "git_commit", "training_time_s"):
        assert key in metrics
    assert metrics["recorded"]["n_clips"] == 9 and set(metrics["recorded"]["chains"]) == {"laptop", "phone", "voip"}
    assert metrics["field"]["n_clips"] == 2 and metrics["field"]["per_class_n"] == {"jazz": 1, "metal": 1}
    assert metrics["songs"]["n_clips"] == 3 and 0.0 <= metrics["songs"]["most_likely_share"] <= 1.0
    assert metrics["songs"]["not_music"] is None, "a model without the AudioSet ear does not judge music"
    assert 0.0 <= metrics["field"]["ece"] <= 1.0 and metrics["temperature"] == 1.0
    report = (out / "classification_report.txt").read_text()
    assert "macro avg" in report and "Conditions side by side" in report and "rock heard as metal" in report
    assert "'Most likely' right" in report

    card.main(["--model", str(out)])
    text = (out / "README.md").read_text()
    assert text.startswith("---\n") and "datasets:\n- gtzan" in text and "library_name: genrewiz" in text
    assert "## Limitations" in text and "10 Western genres" in text
    assert resolve_source(str(out)).metrics()["accuracy"] == metrics["accuracy"]

    plan = push.main(["--model", str(out), "--repo", "someone/genrewiz-test", "--dry-run"])
    assert "someone/genrewiz-test" in plan and "model.safetensors" in plan and "README.md" in plan


def test_push_refuses_a_folder_without_a_card(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(FileNotFoundError, match="README.md"):
        push.main(["--model", str(tmp_path), "--repo", "someone/x", "--dry-run"])


def test_kfold_report_and_all_clips_checkpoint(gtzan, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    cv = _train(gtzan, tmp_path / "cv", "--split", "kfold", "--folds", "2", "--epochs", "1")
    assert cv["folds"] == 2 and cv["n_clips"] == 15 and len(cv["per_fold"]) == 2
    for key in ("accuracy", "accuracy_std", "macro_f1", "macro_f1_std", "pooled_accuracy", "seconds_per_fold"):
        assert isinstance(cv[key], float)
    assert sum(map(sum, cv["confusion_matrix"])) == 15
    for name in CV_FILES:
        assert (tmp_path / "cv" / name).is_file()

    history = _train(gtzan, tmp_path / "all", "--split", "all", "--epochs", "2", "--calibration-folds", "3")
    assert history["n_train"] == 15 and history["n_valid"] == 0 and len(history["epochs"]) == 2
    calibration = history["calibration"]
    assert calibration["n_clips"] == 15 and "3-fold" in calibration["fitted_on"]
    assert json.loads((tmp_path / "all" / "config.json").read_text())["temperature"] == calibration["temperature"]
    assert [p.name for p in sorted((tmp_path / "all" / "calibration").iterdir())] == ["fold1", "fold2", "fold3"]

    shipped = card.finish_checkpoint(tmp_path / "all", tmp_path / "cv", tmp_path / "weights", "a synthetic test set")
    metrics = json.loads((shipped / "metrics.json").read_text())
    assert metrics["split"] == "kfold" and metrics["shipped_model"]["n_train"] == 15
    text = (shipped / "README.md").read_text()
    assert "2-fold cross-validation" in text and "optimistic" in text and "a synthetic test set" in text
    assert GenreClassifier.from_pretrained(str(shipped)).labels == ("blues", "jazz", "metal")


def test_filtered_split_trains_and_evaluates_on_a_full_tree(gtzan, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    lists = write_lists(tmp_path / "splits", {
        "train": [f"{g}/{g}.{i:05d}" for g in ("blues", "jazz", "metal") for i in (0, 1, 2)],
        "valid": [f"{g}/{g}.00003" for g in ("blues", "jazz", "metal")],
        "test": [f"{g}/{g}.00004" for g in ("blues", "jazz", "metal")],
    })
    out = tmp_path / "filtered"
    history = _train(gtzan, out, "--split", "filtered", "--split-dir", str(lists), "--epochs", "1")
    assert history["split"] == "artist-filtered" and (history["n_train"], history["n_valid"]) == (9, 3)

    metrics = evaluate.main(["--model", str(out), "--data", str(gtzan), "--split", "filtered", "--subset", "test",
                             "--split-dir", str(lists), "--no-progress"])
    assert metrics["split"] == "filtered/test" and metrics["n_clips"] == 3 and metrics["missing"] == []
