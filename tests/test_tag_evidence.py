"""The MSD tagger's rock-versus-metal evidence: only those two genres move, by its own tag scores, in both engines."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from genrewiz import GenreClassifier
from genrewiz.engine import OnnxEngine
from genrewiz.features import make_windows
from genrewiz.model import GTZAN_GENRES, PCRNN
from genrewiz.musicnn import MSD_TAGS, MUSICNN_FEATURES
from genrewiz.predict import analyse
from synthetic import synth_clip
from train import calibrate


@pytest.fixture(scope="module")
def model() -> PCRNN:
    torch.manual_seed(0)
    model = PCRNN(cnn_branch="musicnn", features=MUSICNN_FEATURES, rnn_pool=(8, 2))
    model.cnn.load_pretrained()
    return model.eval()


@pytest.fixture(scope="module")
def windows() -> torch.Tensor:
    song = synth_clip("hihat", 35.0, seed=4) + synth_clip("bass_pulse", 35.0, seed=4)
    return torch.from_numpy(make_windows(analyse(song, MUSICNN_FEATURES, 22_050).mel, MUSICNN_FEATURES).data)


def test_evidence_redivides_only_rock_and_metals_share_by_the_taggers_log_odds(model, windows):
    weighted = calibrate.reconfigured(model, tag_evidence=0.8)
    with torch.inference_mode():
        before = torch.softmax(model(windows), dim=1).numpy()
        after = torch.softmax(weighted(windows), dim=1).numpy()
        tags = torch.sigmoid(model.cnn.trunk.tags(model.cnn.patch_embeddings(windows))).mean(dim=1).numpy()
    rock, metal = GTZAN_GENRES.index("rock"), GTZAN_GENRES.index("metal")
    others = [i for i in range(len(GTZAN_GENRES)) if i not in (rock, metal)]
    np.testing.assert_allclose(after[:, others], before[:, others], atol=1e-6)
    np.testing.assert_allclose(after[:, rock] + after[:, metal], before[:, rock] + before[:, metal], atol=1e-6)
    score = {g: tags[:, [MSD_TAGS.index(t) for t in ts]].max(axis=1)
             for g, ts in (("rock", ("rock", "classic rock", "hard rock")), ("metal", ("metal", "heavy metal")))}
    moved = np.log(after[:, rock] / after[:, metal]) - np.log(before[:, rock] / before[:, metal])
    np.testing.assert_allclose(moved, 0.8 * (np.log(score["rock"]) - np.log(score["metal"])), atol=1e-3)
    assert np.abs(moved).min() > 1e-2, "the evidence is not zero on real tagger output"


def test_evidence_round_trips_and_onnx_applies_it_as_torch_does(model, tmp_path):
    calibrate.reconfigured(model, tag_evidence=0.8, temperature=0.5).save_pretrained(tmp_path)
    onnx = GenreClassifier.from_pretrained(tmp_path)
    assert isinstance(onnx.engine, OnnxEngine)
    reloaded = PCRNN.from_pretrained(tmp_path)
    assert reloaded.tag_evidence == 0.8 and reloaded.temperature == 0.5
    song = synth_clip("chirp", 31.0, seed=1)
    np.testing.assert_allclose(onnx.predict(song, 22_050).window_probabilities,
                               GenreClassifier(reloaded).predict(song, 22_050).window_probabilities, atol=1e-4)


def test_evidence_needs_the_musicnn_branch():
    with pytest.raises(ValueError, match="tag_evidence needs the musicnn branch"):
        PCRNN(tag_evidence=1.0)
