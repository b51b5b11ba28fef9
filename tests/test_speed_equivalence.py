"""Equal-output speed-ups: each fast path is checked against the formulation it replaces."""

from __future__ import annotations

import copy
from pathlib import Path

import librosa
import numpy as np
import pytest
import safetensors.torch
import torch
from torch import nn

from genrewiz.audio import load_audio
from genrewiz.features import FeatureConfig, log_mel, make_windows, mel_filterbank, mel_frequencies, to_db
from genrewiz.model import PCRNN, ScratchCNN
from genrewiz.musicnn import MUSICNN_FEATURES
from synthetic import synth_clip

EXAMPLES = sorted((Path(__file__).resolve().parents[1] / "examples").glob("*.ogg"))
CONFIGS = {"scratch": FeatureConfig(), "musicnn": MUSICNN_FEATURES, "fmin_fmax": FeatureConfig(fmin=30.0, fmax=8000.0, n_mels=64)}


def librosa_log_mel(waveform: np.ndarray, config: FeatureConfig) -> np.ndarray:
    """The librosa formulation ``log_mel`` had before it was written out in numpy."""
    mel = librosa.feature.melspectrogram(
        y=np.ascontiguousarray(waveform, dtype=np.float32), sr=config.sample_rate, n_fft=config.n_fft,
        hop_length=config.hop_length, n_mels=config.n_mels, fmin=config.fmin, fmax=config.fmax, power=2.0,
    ).astype(np.float32)
    if config.scale == "logc":
        compressed = np.log10(np.float32(1.0) + np.float32(10_000.0) * mel)
    else:
        compressed = librosa.power_to_db(mel, ref=np.max, top_db=config.top_db)
    return np.ascontiguousarray(compressed.T, dtype=np.float32)


@pytest.mark.parametrize("name", CONFIGS)
def test_mel_filterbank_is_librosas(name):
    c = CONFIGS[name]
    expected = librosa.filters.mel(sr=c.sample_rate, n_fft=c.n_fft, n_mels=c.n_mels, fmin=c.fmin, fmax=c.fmax)
    np.testing.assert_allclose(mel_filterbank(c.sample_rate, c.n_fft, c.n_mels, c.fmin, c.fmax), expected, rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(mel_frequencies(c.n_mels, c.fmin, c.fmax or c.sample_rate / 2),
                               librosa.mel_frequencies(n_mels=c.n_mels, fmin=c.fmin, fmax=c.fmax or c.sample_rate / 2), rtol=1e-12)


@pytest.mark.parametrize("name", CONFIGS)
def test_log_mel_equals_librosa_on_real_and_generated_audio(name):
    config = CONFIGS[name]
    clips = [load_audio(path, config.sample_rate).samples for path in EXAMPLES[:3]]
    clips += [synth_clip(style, seconds, config.sample_rate, seed=i)
              for i, (style, seconds) in enumerate((("hihat", 1.0), ("chirp", 7.3), ("pad", 95.0)))]
    assert clips, "no audio to compare on"
    for waveform in clips:
        fast, reference = log_mel(waveform, config), librosa_log_mel(waveform, config)
        assert fast.shape == reference.shape and fast.dtype == np.float32
        np.testing.assert_allclose(fast, reference, atol=1e-5, rtol=0)
        if config.scale == "logc":
            expected_db = librosa.power_to_db(np.maximum((10.0 ** reference - 1) / 10_000, 0), ref=np.max, top_db=80)
            np.testing.assert_allclose(to_db(fast, config), expected_db, atol=1e-3, rtol=0)


def original_scratch_cnn(cnn: ScratchCNN) -> nn.Sequential:
    """The from-scratch CNN branch as first written: NCHW weights, Conv2d -> ReLU -> MaxPool, plain ``nn.Sequential``."""
    blocks: list[nn.Module] = []
    layers = list(cnn)
    for conv, pool in zip(layers[0::3], layers[1::3]):
        assert isinstance(conv, nn.Conv2d) and isinstance(pool, nn.MaxPool2d)
        blocks += [copy.deepcopy(conv).to(memory_format=torch.contiguous_format), nn.ReLU(), nn.MaxPool2d(pool.kernel_size)]
    return nn.Sequential(*blocks, nn.Flatten())


def test_fast_scratch_cnn_equals_the_original_formulation():
    torch.manual_seed(0)
    model = PCRNN()
    legacy = original_scratch_cnn(model.cnn)
    assert model.cnn[0].weight.is_contiguous(memory_format=torch.channels_last)
    config = model.features
    mel = log_mel(np.concatenate([load_audio(p, config.sample_rate).samples for p in EXAMPLES[:2]]), config)
    real = torch.from_numpy(make_windows(mel, config).data)
    for x in (real, torch.randn(5, 1, config.window_frames, config.n_mels)):
        x.requires_grad_(True)
        fast, reference = model.cnn(x), legacy(x)
        torch.testing.assert_close(fast, reference, atol=1e-5, rtol=1e-5)
        (grad_fast,) = torch.autograd.grad(fast.square().sum(), x)
        (grad_reference,) = torch.autograd.grad(reference.square().sum(), x)
        torch.testing.assert_close(grad_fast, grad_reference, atol=1e-4, rtol=1e-4)
    weights_fast = torch.autograd.grad(model.cnn(real).sum(), model.cnn[3].weight)[0]
    weights_reference = torch.autograd.grad(legacy(real).sum(), legacy[3].weight)[0]  # the same conv, in its place
    torch.testing.assert_close(weights_fast, weights_reference, atol=1e-4, rtol=1e-4)


def test_scratch_checkpoint_saved_in_nchw_layout_loads_unchanged(tmp_path):
    """A checkpoint written before this formulation (contiguous NCHW tensors) loads strictly and answers the same."""
    torch.manual_seed(1)
    model = PCRNN().eval()
    model.save_pretrained(tmp_path)
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    safetensors.torch.save_file(state, str(tmp_path / "model.safetensors"))
    loaded = PCRNN.from_pretrained(tmp_path)
    assert sorted(loaded.state_dict()) == sorted(state)
    for key, value in loaded.state_dict().items():
        assert value.shape == state[key].shape and torch.equal(value, state[key])
    x = torch.randn(3, 1, 640, 128)
    with torch.inference_mode():
        torch.testing.assert_close(loaded(x), loaded.logits_from_cnn(original_scratch_cnn(loaded.cnn)(x), x), atol=1e-5, rtol=1e-5)
