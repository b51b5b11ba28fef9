"""train.data: the GTZAN scanner in both layouts, the split modes, and the feature cache."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest

import train.data as data
from conftest import SHARED
from genrewiz.features import FeatureConfig
from tests.synthetic import STYLES, write_clip

TINY = FeatureConfig(sample_rate=11_025, n_fft=1024, hop_length=256, window_frames=240, window_hop_frames=120)
"""The smallest window the five conv/pool blocks accept is 222 frames; 240 x 256 / 11,025 Hz ≈ 5.6 s."""


def make_tree(
    root: Path, layout: str = "genres", suffix: str = ".wav", per_genre: int = 4, seconds: float = 2.0,
    genres: tuple[str, ...] = STYLES,
) -> list[Path]:
    """A GTZAN-shaped folder of synthetic clips, ``root/layout/<genre>/<genre>.000NN<suffix>``, one style per genre."""
    paths = []
    for g, genre in enumerate(genres):
        for i in range(per_genre):
            path = root / layout / genre / f"{genre}.{i:05d}{suffix}"
            paths.append(write_clip(path, STYLES[g % len(STYLES)], seconds, seed=100 * g + i))
    return paths


def write_lists(split_dir: Path, lists: dict[str, list[str]]) -> Path:
    """Artist-filtered-style list files, one ``genre/genre.000NN.wav`` a line."""
    split_dir.mkdir(parents=True, exist_ok=True)
    for subset, keys in lists.items():
        (split_dir / data.SPLIT_LISTS[subset]).write_text("".join(f"{k}.wav\n" for k in keys))
    return split_dir


@pytest.mark.parametrize(("layout", "suffix"), [("genres", ".au"), ("genres_original", ".wav")])
def test_scanner_reads_both_layouts_and_skips_a_corrupt_file(tmp_path, caplog, layout, suffix):
    make_tree(tmp_path, layout, suffix, per_genre=2, genres=("blues", "jazz"))
    corrupt = tmp_path / layout / "jazz" / f"jazz.00054{suffix}"
    corrupt.write_bytes(b"RIFF\x10\x00\x00\x00WAVEnot audio at all")
    (tmp_path / layout / "jazz" / "notes.txt").write_text("not a clip")

    clips = data.scan_gtzan(tmp_path)
    assert [c.key for c in clips] == ["blues/blues.00000", "blues/blues.00001",
                                      "jazz/jazz.00000", "jazz/jazz.00001", "jazz/jazz.00054"]
    assert data.labels_of(clips) == ["blues", "jazz"]
    assert data.scan_gtzan(tmp_path / layout) == clips  # the genre folder itself works too

    with caplog.at_level(logging.WARNING, logger="train"):
        features, skipped = data.load_features(clips, TINY, tmp_path / "cache", workers=2, progress=False)
    assert [(c.key, "jazz.00054" in why) for c, why in skipped] == [("jazz/jazz.00054", True)]
    assert len(features) == 4 and corrupt not in features
    assert str(corrupt) in caplog.text
    assert all(m.shape[1] == TINY.n_mels for m in features.values())


def test_scanner_rejects_a_folder_without_gtzan(tmp_path):
    with pytest.raises(FileNotFoundError, match="not found"):
        data.scan_gtzan(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no GTZAN audio"):
        data.scan_gtzan(tmp_path / "empty")


def _clips(genres: int = 4, per_genre: int = 5) -> list[data.Clip]:
    return [
        data.Clip(Path(f"/x/g{g}/g{g}.{i:05d}.wav"), f"g{g}") for g in range(genres) for i in range(per_genre)
    ]


def test_random_split_is_stratified_and_seeded():
    clips = _clips()
    split = data.random_split(clips, 0.2, seed=3)
    assert sorted(c.label for c in split.valid) == ["g0", "g1", "g2", "g3"]
    assert {c.key for c in split.train} | {c.key for c in split.valid} == {c.key for c in clips}
    assert data.random_split(clips, 0.2, seed=3).valid == split.valid


def test_kfold_holds_every_clip_out_exactly_once():
    clips = _clips()
    folds = data.kfold_splits(clips, folds=5, seed=0)
    held_out = [c.key for f in folds for c in f.valid]
    assert sorted(held_out) == sorted(c.key for c in clips)
    for fold in folds:
        assert sorted(c.label for c in fold.valid) == ["g0", "g1", "g2", "g3"]
        assert not {c.key for c in fold.train} & {c.key for c in fold.valid}


def test_filtered_split_matches_listed_wav_names_to_au_files(tmp_path):
    make_tree(tmp_path, "genres", ".au", per_genre=3, seconds=1.0, genres=("blues", "jazz"))
    clips = data.scan_gtzan(tmp_path)
    lists = write_lists(tmp_path / "splits", {
        "train": ["blues/blues.00000", "jazz/jazz.00000", "jazz/jazz.00001"],
        "valid": ["blues/blues.00001", "jazz/jazz.00002"],
        "test": ["blues/blues.00002"],
    })
    split = data.filtered_split(clips, lists)
    assert [c.key for c in split.train] == ["blues/blues.00000", "jazz/jazz.00000", "jazz/jazz.00001"]
    assert [c.path.suffix for c in split.valid] == [".au", ".au"]
    assert [c.key for c in data.filtered_subset(clips, lists, "test")[0]] == ["blues/blues.00002"]


def test_filtered_split_names_missing_files_clearly(tmp_path, caplog):
    make_tree(tmp_path, "genres_original", ".wav", per_genre=2, seconds=1.0, genres=("blues", "jazz"))
    clips = data.scan_gtzan(tmp_path)
    lists = write_lists(tmp_path / "splits", {
        "train": ["blues/blues.00000", "jazz/jazz.00000", "jazz/jazz.00099"],
        "valid": ["blues/blues.00001", "jazz/jazz.00001"],
    })
    with pytest.raises(data.SplitError, match=r"1 of the 3 clips listed in train_filtered.txt.*jazz/jazz.00099.*--allow-missing"):
        data.filtered_split(clips, lists)
    with caplog.at_level(logging.WARNING, logger="train"):
        split = data.filtered_split(clips, lists, allow_missing=True)
    assert split.missing == ["jazz/jazz.00099"] and len(split.train) == 2
    assert "jazz/jazz.00099" in caplog.text
    with pytest.raises(data.SplitError, match="coreyker/dnn-mgr"):
        data.filtered_split(clips, tmp_path / "no-lists")


def test_training_cli_stops_on_missing_listed_files_before_any_work(tmp_path):
    from train.train import main

    make_tree(tmp_path, "genres", ".wav", per_genre=1, seconds=1.0, genres=("blues", "jazz"))
    lists = write_lists(tmp_path / "splits", {"train": ["blues/blues.00007"], "valid": ["jazz/jazz.00000"]})
    with pytest.raises(data.SplitError, match="blues/blues.00007"):
        main(["--data", str(tmp_path), "--split", "filtered", "--split-dir", str(lists), "--out", str(tmp_path / "o"),
              "--cache-dir", str(tmp_path / "cache"), "--no-progress"])


def test_feature_cache_is_reused_and_invalidated(tmp_path, monkeypatch):
    make_tree(tmp_path, per_genre=1, seconds=1.5, genres=("blues", "jazz"))
    clips = data.scan_gtzan(tmp_path)
    calls = []
    real = data.load_audio
    monkeypatch.setattr(data, "load_audio", lambda path, *args: calls.append(Path(path).name) or real(path, *args))

    first, _ = data.load_features(clips, TINY, tmp_path / "cache", progress=False)
    assert len(calls) == 2
    second, _ = data.load_features(clips, TINY, tmp_path / "cache", progress=False)
    assert len(calls) == 2, "a second run must read the cache, not the audio"
    assert all((first[p] == second[p]).all() for p in first)

    other = FeatureConfig(**{**TINY.to_dict(), "n_mels": 96})
    assert data.feature_cache_dir(other, tmp_path / "cache") != data.feature_cache_dir(TINY, tmp_path / "cache")
    changed, _ = data.load_features(clips, other, tmp_path / "cache", progress=False)
    assert len(calls) == 4 and all(m.shape[1] == 96 for m in changed.values())

    os.utime(clips[0].path, ns=(1, 1))
    data.load_features(clips, TINY, tmp_path / "cache", progress=False)
    assert calls[4:] == [clips[0].path.name], "a changed file is decoded again, the others are not"


def test_caches_hold_what_the_predictor_computes_for_two_ears(tmp_path):
    """Decoded once at the ear's rate, levelled, clean and through a chain: training's caches equal serving's analysis."""
    import dataclasses

    import numpy as np
    import torch

    from genrewiz.audio import load_audio
    from genrewiz.features import AudioSetFeatures, audioset_windows, make_windows
    from genrewiz.model import PCRNN
    from genrewiz.musicnn import MUSICNN_FEATURES
    from genrewiz.predict import analyse, decode_rate
    from train.arrival import Arrival

    config, ear = dataclasses.replace(MUSICNN_FEATURES, level_db=-17.0), AudioSetFeatures()
    path = write_clip(tmp_path / "rock.00000.wav", "song", 32.0, 44_100)
    clips = [data.Clip(path, "rock")]
    model = PCRNN(cnn_branch="musicnn", features=config, audioset_branch="mn04", audioset_features=ear).eval()
    model.ear.load_pretrained()
    assert decode_rate(config, ear) == 32_000
    chain = Arrival("laptop")
    recorded = chain.apply(load_audio(path, 32_000).samples, 32_000, clips[0].key)
    for arrival, served in ((None, analyse(path, config, ear=ear)), (chain, analyse(recorded, config, 32_000, ear=ear))):
        mels, _ = data.load_features(clips, config, tmp_path / "cache", progress=False, arrival=arrival, ear=ear)
        np.testing.assert_array_equal(mels[path], served.mel)
        cached = data.load_ear_features(clips, mels, model, tmp_path / "cache", progress=False, arrival=arrival)[path]
        starts = make_windows(served.mel, config).start_frames * config.frame_seconds
        patches = audioset_windows(served.ear_mel, starts, config.window_seconds, ear)
        with torch.inference_mode():
            expected = model.ear.patch_summaries(torch.from_numpy(patches.reshape(-1, *patches.shape[2:]))).numpy()
        np.testing.assert_allclose(cached.reshape(expected.shape), expected, atol=1e-5)
    assert not np.array_equal(mels[path], analyse(path, config, ear=ear).mel), "the chain must change what is heard"


@pytest.mark.shared("gtzan-mini", "gtzan-splits")
def test_real_split_lists_against_gtzan_mini():
    clips = data.scan_gtzan(SHARED / "gtzan-mini")
    assert len(clips) == 80 and len(data.labels_of(clips)) == 10
    with pytest.raises(data.SplitError, match="full 1000-clip GTZAN"):
        data.filtered_split(clips, SHARED / "gtzan-splits")
    split = data.filtered_split(clips, SHARED / "gtzan-splits", allow_missing=True)
    assert len(split.train) + len(split.valid) + len(split.missing) == 443 + 197
    assert all(c.path.is_file() for c in split.train + split.valid)
