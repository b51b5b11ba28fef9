"""The model card's Hub metadata carries how each number was measured, not a bare accuracy."""

from __future__ import annotations

import json

import pytest
from huggingface_hub import ModelCard

from genrewiz.hub import BUNDLED_DIR
from train import card

FILTERED = {"protocol": "whole-clip prediction on the artist-filtered valid split", "split": "filtered/valid",
            "n_clips": 93, "accuracy": 0.8064516, "balanced_accuracy": 0.6855621, "macro_f1": 0.6654303}
KFOLD = {"protocol": "stratified 5-fold cross-validation over 76 clips", "split": "kfold", "folds": 5,
         "n_clips": 76, "accuracy": 0.9342, "balanced_accuracy": 0.93, "macro_f1": 0.93}


def test_model_index_entries_carry_split_and_protocol():
    results = card.eval_results(FILTERED)
    assert [(r.metric_type, r.metric_value) for r in results] == [
        ("accuracy", 0.8065), ("balanced_accuracy", 0.6856), ("macro_f1", 0.6654)
    ]
    for result in results:
        assert (result.dataset_config, result.dataset_split) == ("artist-filtered", "valid")
        assert result.metric_name.endswith("(whole-clip prediction on the artist-filtered valid split; 93 clips)")
    (first, *_) = card.eval_results(KFOLD)
    assert (first.dataset_config, first.dataset_split) == ("5-fold CV", "kfold")
    assert "stratified 5-fold cross-validation over 76 clips; 76 clips" in first.metric_name


def test_the_bundled_card_states_the_protocol_of_its_metrics():
    metrics = json.loads((BUNDLED_DIR / "metrics.json").read_text(encoding="utf-8"))
    results = ModelCard.load(BUNDLED_DIR / "README.md").data.eval_results
    assert results, "the bundled card has no model-index"
    for result in results:
        assert "clips)" in result.metric_name and result.dataset_split and result.dataset_config
    headline = results[0]
    assert headline.metric_type == "accuracy" and headline.metric_value == pytest.approx(metrics["accuracy"], abs=1e-4)
    assert metrics["protocol"] in headline.metric_name and f"{metrics['n_clips']} clips" in headline.metric_name


def test_the_card_describes_both_ears_and_the_level():
    from genrewiz.model import PCRNN

    model = PCRNN.from_pretrained(BUNDLED_DIR)
    text = card.architecture_text(model)
    assert "mn04" in text and "musicnn" in text and f"weight {model.audioset_prior:g}" in text
    assert f"level of {model.features.level_db:g} dB" in text
    assert text in (BUNDLED_DIR / "README.md").read_text(encoding="utf-8"), "the bundled card says what it is"
