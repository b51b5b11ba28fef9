"""The files shipped in ``genrewiz/weights/`` agree with each other, with the code and with README.

Every check reads whatever checkpoint is bundled and recomputes what it claims: the graph
against torch on the same weights, the temperature against the training record, README's
gallery table against the model's answers, and the recorded recipe against the data it names.
Nothing here holds a number of today's weights, so a new checkpoint is checked the same way.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shlex
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

import train.data as data
import train.train as train
from conftest import SHARED
from genrewiz import GenreClassifier
from genrewiz.audio import load_audio
from genrewiz.checkpoint import ONNX_FILE
from genrewiz.engine import OnnxEngine
from genrewiz.hub import BUNDLED_DIR, bundled_source
from genrewiz.model import PCRNN
from tests.test_train_data import TINY, make_tree, write_lists
from train import calibrate

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"
sys.path.insert(0, str(EXAMPLES))
from make_examples import CLIPS  # noqa: E402

TRAIN_COMMAND = ("python", "-m", "train.train")
"""How ``train/train.py`` records the command that built a checkpoint (``history.json``'s ``command``)."""


def shipped(name: str) -> dict:
    return json.loads((BUNDLED_DIR / name).read_text(encoding="utf-8"))


# --- the graph and the weights ----------------------------------------------------------------------


EXCERPT_SECONDS, EXCERPT_RATE = 40.0, 44_100
"""A gallery clip's middle 40 s (all of a 30 s clip): a window or two each, so torch's side takes seconds, not a minute."""


@pytest.fixture(scope="module")
def excerpts() -> dict[str, np.ndarray]:
    """Real music of every gallery genre, decoded once, at a rate every front end resamples from."""
    found = {}
    for clip in CLIPS:
        path = EXAMPLES / clip.output
        offset = max(0.0, (sf.info(path).duration - EXCERPT_SECONDS) / 2)
        found[clip.output] = load_audio(path, EXCERPT_RATE, EXCERPT_SECONDS, offset=offset).samples
    return found


def test_the_bundled_graph_answers_as_torch_does_on_the_bundled_weights(excerpts):
    onnx = OnnxEngine.for_checkpoint(BUNDLED_DIR)
    assert onnx is not None, f"the bundled {ONNX_FILE} is missing, unreadable or not exported from the weights beside it"
    assert onnx.quantization is None, "README promises a float32 bundled graph; int8 is an opt-in step"
    by_onnx = GenreClassifier(source=bundled_source(), engine=onnx)
    by_torch = GenreClassifier(PCRNN.from_pretrained(BUNDLED_DIR))
    assert by_onnx.labels == by_torch.labels and by_onnx.config == by_torch.config
    for name, samples in excerpts.items():
        a, b = by_onnx.predict(samples, EXCERPT_RATE), by_torch.predict(samples, EXCERPT_RATE)
        np.testing.assert_allclose(a.window_probabilities, b.window_probabilities, atol=1e-4, rtol=0, err_msg=name)
        assert a.genre == b.genre, name


# --- the temperature --------------------------------------------------------------------------------


def test_the_shipped_temperature_is_the_one_training_fitted_and_the_model_applies_it(classifier, excerpts):
    temperature = shipped("config.json")["temperature"]
    calibration = shipped("history.json").get("calibration")
    assert calibration, "history.json records no fitted temperature: config.json's cannot be checked"
    assert temperature == pytest.approx(calibration["temperature"], rel=1e-9), "config.json's temperature is not the fitted one"
    assert temperature > 0 and temperature != pytest.approx(1.0), "the shipped temperature is the uncalibrated default"
    assert calibration["ece_after_cross_fitted"] < calibration["ece_before"], "the fitted temperature made calibration worse"
    card = (BUNDLED_DIR / "README.md").read_text(encoding="utf-8")
    assert f"temperature of {temperature:.3f}" in card, "the model card states another temperature"

    model = PCRNN.from_pretrained(BUNDLED_DIR)
    assert model.temperature == pytest.approx(temperature, rel=1e-9)
    samples = next(iter(excerpts.values()))
    uncalibrated = GenreClassifier(calibrate.reconfigured(model, temperature=1.0)).predict(samples, EXCERPT_RATE)
    served = classifier.predict(samples, EXCERPT_RATE)  # the bundled graph, as the app and the CLI load it
    expected = calibrate.rescale(uncalibrated.window_probabilities, temperature)
    np.testing.assert_allclose(served.window_probabilities, expected, atol=1e-4, rtol=0)


# --- the recipe that built the weights --------------------------------------------------------------


def recorded_arguments(command: str) -> argparse.Namespace:
    """The recorded training command, read by ``train.train``'s own parser.

    Its device is set to the CPU: where a run trained changes nothing about what it trained on.
    """
    words = shlex.split(command)
    assert tuple(words[: len(TRAIN_COMMAND)]) == TRAIN_COMMAND, f"not a train.train command: {command}"
    return train.parse_args([*words[len(TRAIN_COMMAND):], "--device", "cpu"])


def here(recorded: Path) -> Path:
    """A path from the recorded command on this machine: as recorded (from the repository root), else under ../shared."""
    path = recorded if recorded.is_absolute() else ROOT / recorded
    if not path.exists() and "shared" in recorded.parts:
        path = SHARED.joinpath(*recorded.parts[recorded.parts.index("shared") + 1:])
    return path


def recorded_split(args: argparse.Namespace) -> data.Split:
    """The clips the recorded command trained and selected on, chosen by ``train.train``'s own :func:`choose_splits`."""
    for name in ("data", "exclude", "split_dir", "songs"):
        if getattr(args, name, None) is not None:
            setattr(args, name, here(getattr(args, name)))
    assert args.split != "kfold", f"a shipped checkpoint is not built by --split {args.split}"
    clips = data.scan_gtzan(args.data)
    return train.choose_splits(args, clips, data.labels_of(clips))[0]


def test_the_recorded_recipe_is_the_one_the_files_describe():
    history, config, metrics = shipped("history.json"), shipped("config.json"), shipped("metrics.json")
    args = recorded_arguments(history["command"])
    recipe = {f.name: getattr(args, f.name) for f in dataclasses.fields(train.Recipe)}
    assert recipe == history["recipe"], "the recorded command does not give the recorded recipe"
    assert args.cnn_branch == config["cnn_branch"] and args.dropout == config["dropout"]
    assert history["n_valid"] == 0 and args.split in ("trainval", "all"), "the shipped weights were not trained on every clip chosen"
    assert metrics["recipe"] == history["recipe"], "the scored model (metrics.json) is not the shipped recipe"
    assert metrics["shipped_model"]["command"] == history["command"]


@pytest.mark.shared("gtzan", "gtzan-splits", "realsongs")
def test_the_shipped_weights_never_trained_on_a_test_list_clip():
    history = shipped("history.json")
    split = recorded_split(recorded_arguments(history["command"]))
    test_list = set(data.read_split_list(SHARED / "gtzan-splits" / data.SPLIT_LISTS["test"]))
    assert not sorted(c.key for c in split.train + split.valid if c.key in test_list), "test-list clips trained or selected on"
    skipped = {row["clip"] for row in history["skipped"]}
    trained = [c for c in split.train if c.key not in skipped]
    assert split.name == history["split"] and len(trained) == history["n_train"], "the record is not what its command trains on"
    assert sorted(split.missing) == sorted(history["missing"])


@pytest.mark.slow
def test_exclude_drops_the_listed_clips_from_what_is_trained_on(tmp_path):
    genres = ("blues", "jazz", "metal")
    make_tree(tmp_path / "gtzan", "genres", ".wav", per_genre=4, seconds=6.0, genres=genres)
    listed = [f"{g}/{g}.00003" for g in genres]
    lists = write_lists(tmp_path / "splits", {"test": listed})
    history = train.main([
        "--data", str(tmp_path / "gtzan"), "--split", "all", "--exclude", str(lists / data.SPLIT_LISTS["test"]),
        "--out", str(tmp_path / "out"), "--cache-dir", str(tmp_path / "cache"), "--features", json.dumps(TINY.to_dict()),
        "--cnn-branch", "scratch", "--epochs", "1", "--batch-size", "4", "--calibration-folds", "0", "--workers", "1",
        "--no-progress",
    ])
    assert history["n_train"] == 3 * len(genres)
    assert "--exclude" in history["command"]
    assert f"left out {len(listed)} clips listed in test_filtered.txt" in (tmp_path / "out" / "train.log").read_text()
    decoded = {p.stem.rsplit("-", 1)[0] for p in (tmp_path / "cache").rglob("*.npy")}  # <clip>-<hash>.npy
    assert decoded and not decoded & {key.split("/")[1] for key in listed}, "an excluded clip was decoded for training"
