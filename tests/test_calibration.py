"""Calibrated confidences: the fitted temperature is right, stored in the checkpoint, and applied by both engines."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from genrewiz import GenreClassifier
from genrewiz.engine import OnnxEngine, TorchEngine
from genrewiz.model import PCRNN
from genrewiz.musicnn import MUSICNN_FEATURES
from synthetic import synth_clip
from train import calibrate


def softmax(logits: np.ndarray) -> np.ndarray:
    e = np.exp(logits - logits.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def test_fit_temperature_recovers_the_temperature_that_generated_the_labels():
    rng = np.random.default_rng(0)
    logits = rng.normal(0.0, 3.0, size=(4000, 10))
    truth = np.array([rng.choice(10, p=p) for p in softmax(logits / 2.0)])  # the honest model is 2x less sure
    windows = [p[None] for p in softmax(logits)]

    temperature = calibrate.fit_temperature(windows, truth)

    assert 1.8 < temperature < 2.2
    before = calibrate.reliability(calibrate.clip_probabilities(windows), truth)["ece"]
    after = calibrate.reliability(calibrate.clip_probabilities(windows, temperature), truth)["ece"]
    assert before > 0.1 and after < 0.03, f"ECE {before:.3f} -> {after:.3f}"


def test_rescale_equals_dividing_the_logits():
    logits = np.random.default_rng(1).normal(size=(5, 10))
    assert np.allclose(calibrate.rescale(softmax(logits), 1.7), softmax(logits / 1.7), atol=1e-9)


def test_reliability_bins_count_every_clip_and_ece_is_the_weighted_gap():
    probs = np.array([[0.95, 0.05], [0.95, 0.05], [0.55, 0.45], [0.55, 0.45]])
    truth = np.array([0, 1, 0, 0])
    curve = calibrate.reliability(probs, truth)
    assert sum(b["n"] for b in curve["bins"]) == 4
    assert curve["ece"] == pytest.approx(0.5 * abs(0.95 - 0.5) + 0.5 * abs(0.55 - 1.0))


@pytest.mark.parametrize("branch", ["scratch", "musicnn"])
def test_a_calibrated_checkpoint_round_trips_and_both_engines_apply_its_temperature(tmp_path, branch):
    torch.manual_seed(0)
    if branch == "musicnn":
        model = PCRNN(cnn_branch="musicnn", features=MUSICNN_FEATURES, rnn_pool=(8, 2))
        model.cnn.load_pretrained()
    else:
        model = PCRNN()
    with torch.no_grad():
        model.classifier.weight.mul_(20.0)  # confident enough for a temperature to show
    model.eval().save_pretrained(tmp_path / "raw")
    calibrate.reconfigured(model, temperature=2.5).save_pretrained(tmp_path / "calibrated")

    assert json.loads((tmp_path / "calibrated" / "config.json").read_text())["temperature"] == 2.5
    reloaded = PCRNN.from_pretrained(tmp_path / "calibrated")
    assert reloaded.temperature == 2.5
    onnx = GenreClassifier.from_pretrained(tmp_path / "calibrated")
    assert isinstance(onnx.engine, OnnxEngine)
    torch_engine = GenreClassifier(reloaded)
    assert isinstance(torch_engine.engine, TorchEngine)
    raw = GenreClassifier.from_pretrained(tmp_path / "raw")

    song = synth_clip("chirp", 40.0, seed=2)
    by_onnx = onnx.predict(song, 22_050).window_probabilities
    by_torch = torch_engine.predict(song, 22_050).window_probabilities
    uncalibrated = raw.predict(song, 22_050).window_probabilities
    np.testing.assert_allclose(by_onnx, by_torch, atol=1e-4)
    np.testing.assert_allclose(by_onnx, calibrate.rescale(uncalibrated, 2.5), atol=1e-4)
    assert by_onnx.max() < uncalibrated.max() - 0.01, "the temperature softened the answer"


def test_temperature_must_be_positive():
    with pytest.raises(ValueError, match="temperature must be positive"):
        PCRNN(temperature=0.0)
