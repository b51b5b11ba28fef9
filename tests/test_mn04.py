"""The pretrained AudioSet ear (mn04_as): parity with the reference implementation, its classes, the converter, ONNX."""

from __future__ import annotations

import math
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from genrewiz.features import AudioSetFeatures, audioset_log_mel
from conftest import SHARED
from genrewiz.mn04 import (
    AUDIOSET_LABELS, FEATURE_CHANNELS, GENRE_CLASSES, GENRE_INDICES, MN04, MUSIC_CLASSES, MUSIC_INDICES,
    PATCH_FRAMES, PRETRAINED_WEIGHTS,
)  # fmt: skip

RELEASE = SHARED / "pretrained" / "efficientat-mn04"
REFERENCE = RELEASE / "reference.npz"
FIXTURE = Path(__file__).with_name("data") / "mn04_chirp_reference.npz"
needs_release = pytest.mark.shared("pretrained/efficientat-mn04")
"""The release and its reference outputs in ``../shared`` (a skip here, a failure in CI)."""


def chirp() -> np.ndarray:
    """The reference's first input, regenerated: 10 s of a linear 100-4000 Hz sine sweep at 0.3, as int16 / 32768."""
    t = np.arange(320_000) / 32_000
    wave = (0.3 * np.sin(2 * np.pi * (100 * t + 195 * t**2))).astype(np.float32)
    return np.round(wave * 32767).astype(np.int16).astype(np.float32) / 32768


@pytest.fixture(scope="module")
def model() -> MN04:
    return MN04.pretrained()


@pytest.fixture(scope="module")
def reference() -> dict[str, np.ndarray]:
    """All three reference inputs and outputs (../shared)."""
    data = np.load(REFERENCE)
    return {"waveforms": data["waveforms_int16"].astype(np.float32) / 32768, **{k: data[k] for k in data.files}}


def outputs(model: MN04, waveforms: np.ndarray) -> dict[str, np.ndarray]:
    """The port's counterparts of the reference's outputs, from the waveforms through our own front end."""
    mel = np.stack([audioset_log_mel(w) for w in waveforms])
    with torch.inference_mode():
        x = torch.from_numpy(mel)
        feature_map = model.feature_map(x)
        return {
            "mel": mel.transpose(0, 2, 1),
            "features_mean_over_frequency": feature_map.mean(dim=2).numpy(),
            "hidden": model.embed(x).numpy(),
            "logits": model(x).numpy(),
        }


def assert_matches(got: dict[str, np.ndarray], expected: dict[str, np.ndarray]) -> None:
    for key in ("mel", "features_mean_over_frequency", "hidden", "logits"):
        assert got[key].shape == expected[key].shape, key
        np.testing.assert_allclose(got[key], expected[key], atol=1e-4, rtol=0, err_msg=key)


def test_port_matches_the_reference_on_a_chirp(model):
    """Self-contained: the regenerated chirp against the reference's outputs for it (tests/data, 0.4 MB)."""
    expected = dict(np.load(FIXTURE))
    got = outputs(model, chirp()[None])
    assert_matches(got, expected)
    probabilities = 1 / (1 + np.exp(-got["logits"][0]))
    assert AUDIOSET_LABELS[int(probabilities.argmax())] == "Sine wave"
    assert probabilities.max() == pytest.approx(0.45, abs=0.01)


@needs_release
def test_port_matches_the_reference_on_chirp_noise_and_jazz(model, reference):
    np.testing.assert_array_equal(chirp(), reference["waveforms"][0])  # the fixture's chirp is the reference's
    got = outputs(model, reference["waveforms"])
    assert_matches(got, reference)
    probabilities = 1 / (1 + np.exp(-got["logits"]))
    top = [[AUDIOSET_LABELS[i] for i in np.argsort(-p)[:3]] for p in probabilities]
    assert top[0][0] == "Sine wave"
    assert top[1][:2] == ["Static", "White noise"]
    assert top[2] == ["Brass instrument", "Music", "Trumpet"]
    assert probabilities[2, MUSIC_INDICES[0]] == pytest.approx(0.64, abs=0.01)


def test_genre_and_music_classes_name_audioset_outputs():
    assert len(AUDIOSET_LABELS) == 527 and AUDIOSET_LABELS[0] == "Speech"
    assert [AUDIOSET_LABELS[i] for i in GENRE_INDICES] == list(GENRE_CLASSES)
    assert GENRE_CLASSES == ("Blues", "Classical music", "Country", "Disco", "Hip hop music",
                             "Jazz", "Heavy metal", "Pop music", "Reggae", "Rock music")  # fmt: skip
    assert [AUDIOSET_LABELS[i] for i in MUSIC_INDICES] == list(MUSIC_CLASSES)
    assert MUSIC_CLASSES[0] == "Music" and len(set(MUSIC_INDICES)) == len(MUSIC_INDICES)


@needs_release
def test_converter_reproduces_the_shipped_weights(tmp_path):
    from train.convert_mn04 import main

    out = tmp_path / "mn04.safetensors"
    main([str(RELEASE / "mn04_as_mAP_432.pt"), "--out", str(out)])
    converted, shipped = load_file(str(out)), load_file(str(PRETRAINED_WEIGHTS))
    assert converted.keys() == shipped.keys() and len(shipped) == 312
    for key, value in shipped.items():
        assert torch.equal(converted[key], value), key
    release = torch.load(RELEASE / "mn04_as_mAP_432.pt", map_location="cpu", weights_only=True)
    assert all(torch.equal(release[k], v) for k, v in shipped.items())


def test_converter_refuses_a_file_that_is_not_the_release(tmp_path):
    from train.convert_mn04 import main

    fake = tmp_path / "mn04_as_mAP_432.pt"
    torch.save(MN04().state_dict(), fake)
    with pytest.raises(SystemExit, match="is not EfficientAT release"):
        main([str(fake), "--out", str(tmp_path / "out.safetensors")])
    assert not (tmp_path / "out.safetensors").exists()


def test_frames_axis_is_free(model):
    """Any patch length goes through (squeeze-excitation averages over time, so every frame shapes the whole map)."""
    mel = torch.from_numpy(audioset_log_mel(chirp())[None])
    with torch.inference_mode():
        for frames in (1, 100, 333, PATCH_FRAMES):
            fmap = model.feature_map(mel[:, :frames])
            assert fmap.shape == (1, FEATURE_CHANNELS, 4, math.ceil(frames / 32))
            assert model(mel[:, :frames]).shape == (1, len(AUDIOSET_LABELS))


def test_front_end_in_blocks_equals_it_whole():
    """A long waveform's frames are those of its start (the block loop joins seamlessly), one frame per hop."""
    rng = np.random.default_rng(0)
    long = (0.1 * rng.standard_normal(32_000 * 25)).astype(np.float32)
    mel = audioset_log_mel(long)
    assert mel.shape == (1 + (len(long) - 1) // 320, 128) and mel.dtype == np.float32
    short = audioset_log_mel(long[:320_000])
    assert short.shape == (PATCH_FRAMES, 128)
    np.testing.assert_array_equal(mel[: PATCH_FRAMES - 2], short[: PATCH_FRAMES - 2])  # the last frames see the reflected edge


def test_front_end_refuses_what_is_not_a_mono_waveform():
    with pytest.raises(ValueError, match="mono waveform"):
        audioset_log_mel(np.zeros(1, dtype=np.float32))
    with pytest.raises(ValueError, match="mono waveform"):
        audioset_log_mel(np.zeros((2, 32_000), dtype=np.float32))


def test_audioset_features_round_trip_and_validate():
    config = AudioSetFeatures()
    assert AudioSetFeatures.from_dict(config.to_dict()) == config
    assert config.to_dict()["win_length"] == 800 and config.frame_seconds == 0.01
    with pytest.raises(ValueError, match="unknown AudioSetFeatures fields"):
        AudioSetFeatures.from_dict({**config.to_dict(), "scale": "db"})
    with pytest.raises(ValueError, match="win_length"):
        AudioSetFeatures(win_length=2048)
    with pytest.raises(ValueError, match="fmax"):
        AudioSetFeatures(fmax=20_000.0)


def test_onnx_export_gives_the_same_logits(model, tmp_path):
    """Exported with free batch and frames axes, ONNX Runtime's logits and embeddings equal torch's within 1e-4."""
    import onnxruntime as ort

    from genrewiz.export import OPSET

    class Outputs(torch.nn.Module):
        def __init__(self, net: MN04) -> None:
            super().__init__()
            self.net = net

        def forward(self, mel: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            hidden = self.net.embed(mel)
            return hidden, self.net.classifier[4:](hidden)

    path = tmp_path / "mn04.onnx"
    with warnings.catch_warnings():  # the TorchScript exporter's deprecation notes
        warnings.simplefilter("ignore")
        torch.onnx.export(
            Outputs(model).eval(), (torch.zeros(1, PATCH_FRAMES, 128),), str(path),
            input_names=["mel"], output_names=["hidden", "logits"],
            dynamic_axes={"mel": {0: "batch", 1: "frames"}, "hidden": {0: "batch"}, "logits": {0: "batch"}},
            opset_version=OPSET, dynamo=False,
        )  # fmt: skip
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    full = audioset_log_mel(np.concatenate([chirp(), chirp()[::-1]]))
    for mel in (full[None, :PATCH_FRAMES], np.stack([full[:1500], full[500:2000]]), full[None, :77]):
        hidden, logits = session.run(None, {"mel": np.ascontiguousarray(mel)})
        with torch.inference_mode():
            x = torch.from_numpy(np.ascontiguousarray(mel))
            np.testing.assert_allclose(logits, model(x).numpy(), atol=1e-4, rtol=0)
            np.testing.assert_allclose(hidden, model.embed(x).numpy(), atol=1e-4, rtol=0)
