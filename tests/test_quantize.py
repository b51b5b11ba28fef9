"""int8 timbral convolutions: ``train.quantize`` rewrites a checkpoint's graph, which says so, and answers as float32 does."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import numpy as np
import pytest

from conftest import SHARED
from genrewiz import GenreClassifier
from genrewiz.checkpoint import META_QUANTIZATION, ONNX_FILE
from genrewiz.engine import OnnxEngine, TorchEngine
from genrewiz.hub import BUNDLED_DIR
from genrewiz.model import PCRNN
from train.quantize import main

GTZAN, SPLITS, GTZAN_MINI = SHARED / "gtzan", SHARED / "gtzan-splits", SHARED / "gtzan-mini" / "genres"
REAL_CLIPS = ("blues/blues.00001.wav", "country/country.00002.wav", "disco/disco.00003.wav", "rock/rock.00004.wav")
QUANTIZED_TOLERANCE = 0.1
"""Largest whole-song probability difference int8 may make against float32 (README, Speed)."""

pytestmark = pytest.mark.shared("gtzan", "gtzan-splits", "gtzan-mini")


@pytest.fixture(scope="module")
def quantized(tmp_path_factory) -> Path:
    """The bundled weights, exported and quantised by the command (3 calibration clips, 4 to check)."""
    folder = tmp_path_factory.mktemp("q") / "ck"
    folder.mkdir()
    for name in ("config.json", "model.safetensors"):
        shutil.copy(BUNDLED_DIR / name, folder / name)
    splits = tmp_path_factory.mktemp("splits")
    train = [line for line in (SPLITS / "train_filtered.txt").read_text().splitlines() if line][:40]
    valid = [line for line in (SPLITS / "valid_filtered.txt").read_text().splitlines() if line][:40]
    (splits / "train_filtered.txt").write_text("\n".join(train) + "\n")
    (splits / "valid_filtered.txt").write_text("\n".join(valid[:4]) + "\n")
    main(["--model", str(folder), "--data", str(GTZAN), "--split-dir", str(splits), "--clips", "3"])
    return folder


def test_quantized_graph_says_what_was_quantised(quantized):
    engine = OnnxEngine.for_checkpoint(quantized)
    assert engine is not None and engine.quantization is not None
    meta = engine.quantization
    assert meta["operators"] == ["/frontend/convs.0/Conv", "/frontend/convs.1/Conv"]
    assert meta["format"] == "QDQ" and "reduce_range" in meta["weights"]
    assert len(meta["calibration"]["clips"]) == 3 and meta["check_vs_float32"]["valid"]["clips"] > 0


def test_quantized_graph_stays_close_to_float32_on_real_clips(quantized):
    int8 = GenreClassifier.from_pretrained(quantized)
    float32 = GenreClassifier(PCRNN.from_pretrained(quantized))
    assert int8.engine.quantization is not None
    for clip in REAL_CLIPS:
        a, b = int8.predict(GTZAN_MINI / clip), float32.predict(GTZAN_MINI / clip)
        difference = np.abs(a.probabilities - b.probabilities).max()
        assert difference < QUANTIZED_TOLERANCE, f"{clip}: int8 differs from float32 by {difference:.3f}"
        assert difference > 0  # the graph really is quantised


def test_undeclared_quantised_graph_is_not_served(quantized, tmp_path, caplog):
    """A graph holding int8 operators without the metadata that says so runs in PyTorch instead."""
    import onnx

    folder = tmp_path / "ck"
    shutil.copytree(quantized, folder)
    graph = onnx.load(str(folder / ONNX_FILE))
    kept = [(p.key, p.value) for p in graph.metadata_props if p.key != META_QUANTIZATION]
    del graph.metadata_props[:]
    for key, value in kept:
        graph.metadata_props.add(key=key, value=value)
    onnx.save(graph, str(folder / ONNX_FILE))
    with caplog.at_level(logging.WARNING, logger="genrewiz"):
        classifier = GenreClassifier.from_pretrained(folder)
    assert isinstance(classifier.engine, TorchEngine)
    assert "quantised operators its metadata does not declare" in caplog.text


def test_save_pretrained_writes_float32_again(quantized, tmp_path):
    PCRNN.from_pretrained(quantized).save_pretrained(tmp_path)
    engine = OnnxEngine.for_checkpoint(tmp_path)
    assert engine is not None and engine.quantization is None


def test_bundled_quantised_graph_kept_the_answers():
    """A shipped int8 graph was checked on the whole valid list: at most one clip's answer may change."""
    engine = OnnxEngine.for_checkpoint(BUNDLED_DIR)
    assert engine is not None
    if engine.quantization is None:
        pytest.skip("the bundled graph is float32")
    valid = engine.quantization["check_vs_float32"]["valid"]
    assert valid["clips"] >= 90 and valid["top1_agree"] >= valid["clips"] - 1
    assert valid["correct_int8"] >= valid["correct_float32"] - 1 and valid["max_prob_diff"] < QUANTIZED_TOLERANCE
