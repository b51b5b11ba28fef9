"""train.train --resume and --device on a tiny synthetic GTZAN, offline."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from tests.test_train_data import TINY, make_tree
from train.train import CHECKPOINT
from train.train import main as train_main

pytestmark = pytest.mark.slow

FEATURES = json.dumps(TINY.to_dict())


@pytest.fixture(scope="module")
def gtzan(tmp_path_factory):
    root = tmp_path_factory.mktemp("gtzan")
    make_tree(root, "genres_original", ".wav", per_genre=4, seconds=7.0, genres=("blues", "jazz", "metal"))
    return root


def _train(gtzan, out, *extra):
    return train_main(["--data", str(gtzan), "--out", str(out), "--cache-dir", str(gtzan / "cache"), "--features", FEATURES,
                       "--cnn-branch", "scratch", "--workers", "1", "--no-progress", "--batch-size", "4", "--split", "random",
                       "--schedule", "constant", "--warmup-epochs", "0", "--device", "cpu", *extra])


def without_time(history: dict) -> list[dict]:
    return [{k: v for k, v in row.items() if k != "seconds"} for row in history["epochs"]]


def test_a_resumed_run_ends_as_one_never_stopped(gtzan, tmp_path, monkeypatch):
    """2 epochs, then --resume to 4: the same history and weights as 4 epochs in one go."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    whole = _train(gtzan, tmp_path / "whole", "--epochs", "4")
    first = _train(gtzan, tmp_path / "resumed", "--epochs", "2")
    assert [row["epoch"] for row in first["epochs"]] == [1, 2] and (tmp_path / "resumed" / CHECKPOINT).is_file()
    resumed = _train(gtzan, tmp_path / "resumed", "--epochs", "4", "--resume")

    assert [row["epoch"] for row in resumed["epochs"]] == [1, 2, 3, 4]
    assert resumed["epochs"][:2] == first["epochs"]  # the first two epochs are kept (their times too), not redone
    assert without_time(resumed) == without_time(whole)
    assert (resumed["best_epoch"], resumed["best_valid_accuracy"]) == (whole["best_epoch"], whole["best_valid_accuracy"])
    assert resumed["device"] == "cpu"
    expected = load_file(tmp_path / "whole" / "model.safetensors")
    for name, tensor in load_file(tmp_path / "resumed" / "model.safetensors").items():
        torch.testing.assert_close(tensor, expected[name], rtol=0, atol=0)
    assert "resumed from" in (tmp_path / "resumed" / "train.log").read_text()


def test_resume_refuses_a_different_recipe_and_starts_fresh_without_a_checkpoint(gtzan, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    _train(gtzan, tmp_path / "run", "--epochs", "1")
    with pytest.raises(ValueError, match="another recipe"):
        _train(gtzan, tmp_path / "run", "--epochs", "2", "--lr", "0.01", "--resume")
    fresh = _train(gtzan, tmp_path / "new", "--epochs", "1", "--resume")  # nothing to resume: a normal run
    assert [row["epoch"] for row in fresh["epochs"]] == [1]


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message given where there is no GPU")
def test_device_cuda_without_a_gpu_is_a_usage_error(gtzan, tmp_path, capsys):
    with pytest.raises(SystemExit) as stopped:
        _train(gtzan, tmp_path / "run", "--epochs", "1", "--device", "cuda")
    assert stopped.value.code == 2 and "no CUDA GPU" in capsys.readouterr().err
