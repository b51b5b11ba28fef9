"""PCRNN: the architecture we promise and a checkpoint that round-trips through real files."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file, save_file

from genrewiz.features import FeatureConfig
from genrewiz.model import GTZAN_GENRES, PCRNN


def test_architecture_sizes():
    model = PCRNN()
    assert sum(p.numel() for p in model.parameters()) == 86_314
    assert model.gru.hidden_size == 64 and model.gru.batch_first and model.gru.bidirectional
    assert model.classifier.in_features == 256 + 128


def test_forward_returns_logits_not_probabilities():
    torch.manual_seed(0)
    logits = PCRNN().eval()(torch.randn(3, 1, 640, 128))
    assert not torch.allclose(logits.sum(dim=1), torch.ones(3))


def test_batch_items_are_independent():
    """The student bug ran the GRU over the batch axis; each song must now be scored alone."""
    torch.manual_seed(0)
    model = PCRNN().eval()
    batch = torch.randn(4, 1, 640, 128)
    with torch.inference_mode():
        together = model(batch)
        alone = torch.cat([model(batch[i : i + 1]) for i in range(4)])
    torch.testing.assert_close(together, alone, atol=1e-5, rtol=1e-4)


def test_save_and_load_round_trip(tmp_path):
    torch.manual_seed(1)
    features = FeatureConfig(window_hop_frames=160)
    labels = ["a", "b", "c"]
    model = PCRNN(labels=labels, features=features).eval()
    model.save_pretrained(tmp_path)
    assert {"config.json", "model.safetensors"} <= {p.name for p in tmp_path.iterdir()}
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["labels"] == labels and config["features"] == features.to_dict()

    loaded = PCRNN.from_pretrained(tmp_path)
    assert loaded.labels == labels and loaded.features == features and not loaded.training
    x = torch.randn(2, 1, 640, 128)
    with torch.inference_mode():
        torch.testing.assert_close(loaded(x), model(x), atol=0, rtol=0)


def test_mismatched_checkpoint_is_an_error_not_random_layers(tmp_path):
    PCRNN().save_pretrained(tmp_path)
    weights = load_file(tmp_path / "model.safetensors")
    del weights["classifier.bias"]
    save_file(weights, tmp_path / "model.safetensors")
    with pytest.raises(RuntimeError, match="classifier.bias"):
        PCRNN.from_pretrained(tmp_path)


def test_folder_without_safetensors_is_refused(tmp_path):
    PCRNN().save_pretrained(tmp_path)
    (tmp_path / "model.safetensors").rename(tmp_path / "pytorch_model.bin")
    with pytest.raises(FileNotFoundError, match="model.safetensors"):
        PCRNN.from_pretrained(tmp_path)


def test_default_labels_are_the_gtzan_genres():
    assert PCRNN().labels == list(GTZAN_GENRES) and len(GTZAN_GENRES) == 10
