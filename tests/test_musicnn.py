"""The pretrained musicnn branch: TensorFlow parity, the PCRNN built on it, and its checkpoints."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_model

from genrewiz.features import FeatureConfig, log_mel, to_db
from genrewiz.model import PCRNN
from genrewiz.musicnn import MUSICNN_FEATURES, PATCH_FRAMES, PRETRAINED_WEIGHTS, MusiCNN, MusicnnBranch
from synthetic import synth_clip

FIXTURE = Path(__file__).with_name("data") / "musicnn_parity.npz"


@pytest.fixture(scope="module")
def trunk() -> MusiCNN:
    model = MusiCNN().eval()
    load_model(model, str(PRETRAINED_WEIGHTS), strict=True)
    return model


def test_port_matches_tensorflow_on_real_music(trunk):
    """Patches of real GTZAN clips and musicnn's own TensorFlow outputs (train/convert_musicnn.py parity)."""
    fixture = np.load(FIXTURE)
    patches = torch.from_numpy(fixture["patches"])
    assert patches.shape == (3, PATCH_FRAMES, 96)
    with torch.inference_mode():
        penultimate, logits = trunk.embed(patches).numpy(), trunk(patches).numpy()
    np.testing.assert_allclose(penultimate, fixture["penultimate"], atol=1e-4, rtol=0)
    np.testing.assert_allclose(logits, fixture["logits"], atol=1e-4, rtol=0)
    assert np.abs(fixture["logits"]).max() > 1.0  # real activations, not a degenerate all-zero fixture


def test_branch_pools_patch_embeddings_of_a_window(trunk):
    branch = MusicnnBranch(MUSICNN_FEATURES).eval()
    branch.trunk.load_state_dict(trunk.state_dict())
    mel = log_mel(synth_clip("chirp", 31.0, sample_rate=16_000), MUSICNN_FEATURES)
    window = torch.from_numpy(mel[: MUSICNN_FEATURES.window_frames].copy())[None, None]
    with torch.inference_mode():
        embeddings = branch.patch_embeddings(window)
        pooled = branch(window)
        first_patch = trunk.embed(window[:, 0, :PATCH_FRAMES])
    assert embeddings.shape == (1, 10, 200) and pooled.shape == (1, branch.out_features) == (1, 400)
    torch.testing.assert_close(embeddings[:, 0], first_patch)
    torch.testing.assert_close(pooled, branch.norm(torch.cat([embeddings.mean(1), embeddings.amax(1)], dim=1)))


def test_frozen_branch_stays_fixed_while_the_head_trains():
    model = PCRNN(features=MUSICNN_FEATURES, cnn_branch="musicnn", rnn_pool=(8, 2))
    assert not model.cnn.trunk.training, "a fresh frozen branch must already use its stored statistics"
    model.train()
    assert not model.cnn.trunk.training and model.gru.training
    assert not any(p.requires_grad for p in model.cnn.trunk.parameters())
    assert all(p.requires_grad for p in model.cnn.norm.parameters()) and model.cnn.norm.training
    model.cnn.unfreeze()
    model.train()
    assert model.cnn.trunk.training and all(p.requires_grad for p in model.cnn.parameters())


def test_branch_refuses_a_front_end_it_was_not_trained_on():
    with pytest.raises(ValueError, match="sample_rate"):
        PCRNN(features=FeatureConfig(), cnn_branch="musicnn")
    with pytest.raises(ValueError, match="cnn_branch"):
        PCRNN(cnn_branch="vggish")


def test_musicnn_checkpoint_round_trips_strictly(tmp_path):
    torch.manual_seed(0)
    model = PCRNN(labels=["a", "b", "c"], features=MUSICNN_FEATURES, cnn_branch="musicnn", rnn_pool=(8, 2)).eval()
    model.cnn.load_pretrained()
    model.save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["cnn_branch"] == "musicnn" and config["features"]["scale"] == "logc"

    loaded = PCRNN.from_pretrained(tmp_path)
    assert loaded.cnn_branch == "musicnn" and loaded.features == MUSICNN_FEATURES
    x = torch.randn(2, 1, MUSICNN_FEATURES.window_frames, 96)
    with torch.inference_mode():
        torch.testing.assert_close(loaded(x), model(x), atol=0, rtol=0)


def test_checkpoint_with_the_other_branch_is_an_error(tmp_path):
    """A config.json naming one branch over weights of the other must fail, not load random layers."""
    PCRNN(features=MUSICNN_FEATURES, cnn_branch="musicnn", rnn_pool=(8, 2)).save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    config.update(cnn_branch="scratch", features=FeatureConfig().to_dict())
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(RuntimeError, match="size mismatch|Missing key"):
        PCRNN.from_pretrained(tmp_path)


def test_logc_front_end_is_musicnns_compression():
    wave = synth_clip("pad", 4.0, sample_rate=16_000)
    mel = log_mel(wave, MUSICNN_FEATURES)
    assert mel.shape == (1 + len(wave) // 256, 96) and mel.dtype == np.float32
    assert mel.min() >= 0.0 and np.isfinite(mel).all()
    loud = log_mel(wave * 100.0, MUSICNN_FEATURES)  # float16 in musicnn's extractor overflows here
    assert np.isfinite(loud).all() and loud.max() > mel.max()
    db = to_db(mel, MUSICNN_FEATURES)
    assert db.max() == pytest.approx(0.0, abs=1e-3) and db.min() >= -MUSICNN_FEATURES.top_db


def test_exact_front_end_rewrite_equals_the_front_end():
    """The export's rewrite (dead filters as constants, flipped filters, max first, padded channels) = the front end.

    Weights with batch-norm scales of both signs, filters that are dead (vanished weights, negative
    bias: most of MSD_musicnn's) and filters with vanished weights but a positive bias (not dead).
    """
    from genrewiz.export import LOGC_BOUND, ExactFrontEnd

    torch.manual_seed(0)
    trunk = MusiCNN().eval()
    dead = 0
    with torch.no_grad():
        for conv, bn in zip([*trunk.timbral, *trunk.temporal], [*trunk.timbral_bn, *trunk.temporal_bn]):
            bn.weight.normal_()  # about half negative
            bn.bias.normal_()
            bn.running_mean.normal_()
            bn.running_var.uniform_(0.5, 2.0)
            conv.weight[::2] *= 1e-30  # every other filter vanishes ...
            conv.bias[::4] = -conv.bias[::4].abs() - 1e-3  # ... half of those are dead, the other half keep a bias
            conv.bias[2::4] = conv.bias[2::4].abs() + 1e-3
            dead += len(conv.bias[::4])
    rewritten = ExactFrontEnd(trunk, n_mels=96).eval()
    assert rewritten.dead_value.numel() == dead and sum(rewritten.channels) == 561 - dead
    assert 0 < int((rewritten.sign < 0).sum()) < rewritten.sign.numel()
    assert all(conv.out_channels % 8 == 0 for conv in rewritten.convs)
    for patches in (torch.rand(3, PATCH_FRAMES, 96) * 10, torch.rand(2, PATCH_FRAMES, 96) * LOGC_BOUND):
        with torch.inference_mode():
            expected, got = trunk.frontend_maps(patches), rewritten(patches)
        assert got.shape == expected.shape == (len(patches), 561, PATCH_FRAMES)
        torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)


def test_exact_front_end_rewrite_of_msd_musicnn(trunk):
    """On the real weights, on real patches and on the loudest input the log compression can give."""
    from genrewiz.export import LOGC_BOUND, ExactFrontEnd

    rewritten = ExactFrontEnd(trunk, n_mels=96).eval()
    assert sum(rewritten.channels) < 561 / 2  # most of musicnn's front-end filters are dead
    loudest = torch.full((1, PATCH_FRAMES, 96), LOGC_BOUND)
    for patches in (torch.from_numpy(np.load(FIXTURE)["patches"]), loudest, torch.zeros(1, PATCH_FRAMES, 96)):
        with torch.inference_mode():
            torch.testing.assert_close(rewritten(patches), trunk.frontend_maps(patches), atol=1e-4, rtol=1e-5)


def test_exported_trunk_stage_equals_torch_embeddings(trunk, tmp_path):
    """The ONNX graph's first stage (rewritten front end) gives the torch trunk's embeddings on real patches."""
    from genrewiz.checkpoint import ONNX_FILE
    from genrewiz.engine import OnnxEngine

    model = PCRNN(features=MUSICNN_FEATURES, cnn_branch="musicnn", rnn_pool=(8, 2)).eval()
    model.cnn.trunk.load_state_dict(trunk.state_dict())
    model.save_pretrained(tmp_path)
    engine = OnnxEngine(tmp_path / ONNX_FILE)
    patches = np.load(FIXTURE)["patches"]
    got = engine.session.run(["patch_embeddings"], engine.trunk_feeds(patches))[0]
    with torch.inference_mode():
        expected = trunk.embed(torch.from_numpy(patches)).numpy()
    np.testing.assert_allclose(got, expected, atol=1e-4, rtol=0)
