"""Chained Ogg files (``cat a.ogg b.ogg``) are read whole, with their true length."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from genrewiz.audio import AudioError, load_audio
from genrewiz.ogg import chains
from synthetic import synth_clip, write_clip


def test_every_stream_of_a_chained_ogg_is_analysed(tmp_path):
    first = write_clip(tmp_path / "first.ogg", "pad", 5.0)
    second = write_clip(tmp_path / "second.ogg", "chirp", 7.0, seed=1)
    chained = tmp_path / "chained.ogg"
    chained.write_bytes(first.read_bytes() + second.read_bytes())
    assert [round(c.seconds, 3) for c in chains(chained)] == [5.0, 7.0]
    audio = load_audio(chained, 16_000)
    assert audio.duration == pytest.approx(12.0, abs=0.05) and audio.source_duration == pytest.approx(12.0, abs=0.05)
    # the second stream's chirp is in the decoded audio: its last seconds are not the pad's
    tail = load_audio(second, 16_000).samples[-16_000:]
    assert np.corrcoef(audio.samples[-16_000:], tail)[0, 1] > 0.9
    cut = load_audio(chained, 16_000, max_duration=6.0)
    assert cut.duration == pytest.approx(6.0, abs=0.01) and cut.source_duration == pytest.approx(12.0, abs=0.05)
    assert load_audio(first, 16_000).source_duration == pytest.approx(5.0)  # a single stream stays libsndfile's


def test_chained_opus_and_a_repeated_serial(tmp_path):
    one = tmp_path / "one.opus"
    sf.write(one, synth_clip("pad", 4.0, 48_000), 48_000, format="OGG", subtype="OPUS")
    twice = tmp_path / "twice.opus"
    twice.write_bytes(one.read_bytes() * 2)  # the same serial number twice in a row
    assert len(chains(twice)) == 2
    assert load_audio(twice, 16_000).source_duration == pytest.approx(8.0, abs=0.01)


def test_chains_with_different_rates_are_refused_clearly(tmp_path):
    low = write_clip(tmp_path / "low.ogg", "pad", 3.0, sample_rate=22_050)
    high = write_clip(tmp_path / "high.ogg", "pad", 3.0, sample_rate=44_100)
    mixed = tmp_path / "mixed.ogg"
    mixed.write_bytes(low.read_bytes() + high.read_bytes())
    with pytest.raises(AudioError, match=r"mixed\.ogg: a chained Ogg file whose 2 streams have different sample rates"):
        load_audio(mixed, 16_000)
    assert chains(Path(low)) and chains(tmp_path / "low.ogg")[0].rate == 22_050
