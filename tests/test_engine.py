"""ONNX Runtime serving: ``save_pretrained`` writes a graph tied to its weights, and it answers as torch does."""

from __future__ import annotations

import logging
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from genrewiz import GenreClassifier
from genrewiz.checkpoint import ONNX_FILE
from genrewiz.engine import OnnxEngine, TorchEngine
from genrewiz.features import AudioSetFeatures
from genrewiz.hub import BUNDLED_DIR
from genrewiz.model import PCRNN
from genrewiz.musicnn import MUSICNN_FEATURES
from conftest import SHARED
from synthetic import synth_clip, write_clip

GTZAN_MINI = SHARED / "gtzan-mini" / "genres"
REAL_CLIPS = ("blues/blues.00000.wav", "classical/classical.00001.wav", "metal/metal.00002.wav", "reggae/reggae.00003.wav")


def _checkpoint(folder: Path, branch: str) -> Path:
    """A saved checkpoint of either architecture, with trained-looking (non-trivial) statistics."""
    torch.manual_seed(0)
    if branch.startswith("musicnn"):
        ear = {"audioset_branch": "mn04", "audioset_features": AudioSetFeatures(), "audioset_prior": 0.7} if "+" in branch else {}
        model = PCRNN(cnn_branch="musicnn", features=MUSICNN_FEATURES, **ear)
        model.cnn.load_pretrained()
        with torch.no_grad():
            model.cnn.norm.running_mean.normal_()
            model.cnn.norm.running_var.uniform_(0.5, 2.0)
            if model.ear is not None:
                model.ear.load_pretrained()
                model.ear.norm.running_mean.normal_()
                model.ear.norm.running_var.uniform_(0.5, 2.0)
                model.ear.music.weight.normal_(0.0, 0.3)
    else:
        model = PCRNN()
    model.eval().save_pretrained(folder)
    return folder


@pytest.fixture(scope="module", params=["scratch", "musicnn", "musicnn+mn04"])
def checkpoint(request, tmp_path_factory) -> Path:
    return _checkpoint(tmp_path_factory.mktemp(request.param), request.param)


def test_save_pretrained_writes_onnx_that_serves(checkpoint):
    assert (checkpoint / ONNX_FILE).is_file()
    classifier = GenreClassifier.from_pretrained(checkpoint)
    assert isinstance(classifier.engine, OnnxEngine)
    reference = PCRNN.from_pretrained(checkpoint)
    assert classifier.labels == tuple(reference.labels)
    assert classifier.config == reference.features


def _songs() -> list[np.ndarray]:
    """Generated audio at 22,050 Hz, from shorter than one window to several windows long."""
    lengths = (("pad", 5.0), ("chirp", 31.0), ("bass_pulse", 75.0), ("hihat", 12.0))
    return [synth_clip(style, seconds, seed=i) for i, (style, seconds) in enumerate(lengths)]


def test_onnx_matches_torch_on_generated_audio(checkpoint):
    onnx = GenreClassifier.from_pretrained(checkpoint)
    torch_classifier = GenreClassifier(PCRNN.from_pretrained(checkpoint))
    for waveform in _songs():
        a, b = onnx.predict(waveform, 22_050), torch_classifier.predict(waveform, 22_050)
        np.testing.assert_allclose(a.window_probabilities, b.window_probabilities, atol=1e-4, rtol=0)
        assert a.window_probabilities.shape[1] == len(onnx.labels)
        assert (a.music is None) == (b.music is None) == ("+" not in checkpoint.name)
        if a.music is not None:
            np.testing.assert_allclose(a.window_music, b.window_music, atol=1e-4, rtol=0)


@pytest.mark.shared("gtzan-mini")
def test_onnx_matches_torch_on_real_clips(checkpoint):
    onnx = GenreClassifier.from_pretrained(checkpoint)
    torch_classifier = GenreClassifier(PCRNN.from_pretrained(checkpoint))
    for clip in REAL_CLIPS:
        a, b = onnx.predict(GTZAN_MINI / clip), torch_classifier.predict(GTZAN_MINI / clip)
        np.testing.assert_allclose(a.window_probabilities, b.window_probabilities, atol=1e-4, rtol=0)
        if a.window_music is not None:
            np.testing.assert_allclose(a.window_music, b.window_music, atol=1e-4, rtol=0)
        else:
            assert b.window_music is None


def test_stale_onnx_falls_back_to_torch(tmp_path, caplog):
    folder = _checkpoint(tmp_path / "ck", "scratch")
    stale = (folder / ONNX_FILE).read_bytes()
    torch.manual_seed(1)
    PCRNN().save_pretrained(folder)  # new weights ...
    (folder / ONNX_FILE).write_bytes(stale)  # ... beside the old graph
    with caplog.at_level(logging.WARNING, logger="genrewiz"):
        classifier = GenreClassifier.from_pretrained(folder)
    assert isinstance(classifier.engine, TorchEngine)
    assert "was not exported from the model.safetensors beside it" in caplog.text


def test_checkpoint_without_onnx_runs_in_torch(tmp_path):
    folder = _checkpoint(tmp_path / "ck", "scratch")
    (folder / ONNX_FILE).unlink()
    classifier = GenreClassifier.from_pretrained(folder)
    assert isinstance(classifier.engine, TorchEngine)
    assert classifier.predict(synth_clip("pad", 5.0), 22_050).probabilities.sum() == pytest.approx(1.0, abs=1e-5)


@pytest.mark.parametrize("branch", ["scratch", "musicnn", "musicnn+mn04"])
def test_head_outputs_from_known_branch_outputs_equal_the_whole_model(tmp_path, branch):
    """Training's path (cached pretrained-branch outputs, TorchEngine.head_outputs) answers as serving does."""
    folder = _checkpoint(tmp_path / "ck", branch)
    classifier = GenreClassifier.from_pretrained(folder)
    from genrewiz.features import audioset_windows, make_windows
    from genrewiz.predict import analyse

    analysis = analyse(synth_clip("chirp", 40.0), classifier.config, 22_050, ear=classifier.audioset_config)
    cut = make_windows(analysis.mel, classifier.config)
    windows = cut.data
    model = PCRNN.from_pretrained(folder)
    ear = None
    with torch.inference_mode():
        cnn = model.cnn(torch.from_numpy(windows)).numpy()
        if model.ear is not None:
            patches = audioset_windows(analysis.ear_mel, cut.start_frames * model.features.frame_seconds,
                                       model.features.window_seconds, model.audioset_features)
            ear = model.ear_summaries(torch.from_numpy(patches)).numpy()
    known = TorchEngine(model).head_outputs(windows, cnn, ear)
    served = classifier.classify(analysis)
    np.testing.assert_allclose(known.probabilities, served.window_probabilities, atol=1e-4)
    if model.ear is not None:
        np.testing.assert_allclose(known.music, served.window_music, atol=1e-4)
    else:
        assert known.music is None and served.music is None


def test_onnx_serving_never_imports_torch(tmp_path):
    """The CLI and the app pay only for onnxruntime when the checkpoint has a graph."""
    folder = _checkpoint(tmp_path / "ck", "scratch")
    clip = write_clip(tmp_path / "clip.wav", "pad", 8.0)
    code = (
        "import sys; from genrewiz import GenreClassifier; "
        f"c = GenreClassifier.from_pretrained({str(folder)!r}); print(c.engine.name, c.predict({str(clip)!r}).genre); "
        "assert 'torch' not in sys.modules, 'torch was imported'"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("onnxruntime ")


def test_bundled_checkpoint_serves_with_its_engine():
    """Whichever architecture is bundled, it loads, and ONNX serves it when it ships a graph."""
    classifier = GenreClassifier.from_pretrained(BUNDLED_DIR)
    expected = OnnxEngine if (BUNDLED_DIR / ONNX_FILE).is_file() else TorchEngine
    assert isinstance(classifier.engine, expected)


def test_distinct_patches_rebuild_every_window_from_fewer_patches():
    """Windows overlapping by half (musicnn's hop is five patches) share patches; each is computed once."""
    from genrewiz.engine import distinct_patches
    from genrewiz.features import log_mel, make_windows

    config = MUSICNN_FEATURES
    windows = make_windows(log_mel(synth_clip("chirp", 100.0, config.sample_rate), config), config).data
    patches, index = distinct_patches(windows, 187)
    assert index.shape == (len(windows), 10)
    rebuilt = patches[index].reshape(len(windows), 1870, config.n_mels)
    np.testing.assert_array_equal(rebuilt, windows[:, 0])
    # 100 s: five windows on the 5-patch grid (30 distinct patches, not 50) and one aligned to the end (10 more)
    assert index.shape[0] == 6 and len(patches) == 40
