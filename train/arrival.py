"""How music really reaches GenreWiz: modern mastering, a room and a microphone, a lossy codec.

GTZAN is 1960s-2000 recordings heard through a clean line. Users upload today's loud masters and
hold phones up to speakers, so a model trained on GTZAN alone learns that "loud" means metal and
that a band-limited, reverberant clip is blues or jazz. Each function here maps a mono float32
waveform to a new one of the same length and rate, drawing every random choice from a NumPy
generator, so a training view is repeatable from its seed.

Two kinds of chain use them:

- :func:`random_arrival`: a training variant, drawn anew for every clip and variant index from
  wide parameter ranges (modern mastering, speaker to microphone, or a codec alone);
- :data:`EVAL_CHAINS`: fixed recording chains for evaluation, with room responses from seeds
  training never draws, so a score on them is not a score on the training augmentation.

Built on the field's libraries: ``pedalboard`` (filters, compressor, limiter, MP3/GSM codecs),
``pyroomacoustics`` (room impulse responses), ``pyloudnorm`` (ITU-R BS.1770 loudness) and PyAV
(AAC and Opus). They are training dependencies (``requirements-train.txt``), never the app's.
"""

from __future__ import annotations

import io
import warnings
import zlib
from dataclasses import dataclass
from functools import lru_cache
from typing import Callable

import numpy as np

ARRIVAL_VERSION = 1
"""Bumped whenever a chain changes what it produces, so cached features of the old chains are not reused."""
EVAL_ROOM_SEEDS = range(10_000, 10_100)
"""Room seeds of the evaluation chains; training draws from :data:`TRAIN_ROOM_SEEDS` only."""
TRAIN_ROOM_SEEDS = range(0, 24)
"""The bank of simulated rooms training variants are convolved with."""
CODECS = ("mp3", "gsm", "aac", "opus")
_AAC_PRIMING = 1024
"""Samples of encoder delay FFmpeg's AAC encoder puts before the audio."""


def band_limit(y: np.ndarray, sr: int, low_hz: float, high_hz: float) -> np.ndarray:
    """Keep ``low_hz``-``high_hz``: two cascaded 12 dB/octave high- and low-pass stages, as a small microphone and its amplifier do."""
    from pedalboard import HighpassFilter, LowpassFilter, Pedalboard

    high_hz = min(high_hz, 0.45 * sr)
    board = Pedalboard([HighpassFilter(low_hz), HighpassFilter(low_hz), LowpassFilter(high_hz), LowpassFilter(high_hz)])
    return _same_length(board(y, sr), len(y))


def resonance(y: np.ndarray, sr: int, freq_hz: float, gain_db: float, q: float = 2.0) -> np.ndarray:
    """A peak or notch at ``freq_hz``: a phone's or laptop's capsule and casing are far from flat."""
    from pedalboard import PeakFilter

    return _same_length(PeakFilter(min(freq_hz, 0.45 * sr), gain_db, q)(y, sr), len(y))


def tilt(y: np.ndarray, sr: int, low_db: float, high_db: float) -> np.ndarray:
    """Shelving EQ below 200 Hz and above 4 kHz: the tonal balance of a different era's mix."""
    from pedalboard import HighShelfFilter, LowShelfFilter, Pedalboard

    board = Pedalboard([LowShelfFilter(200.0, low_db), HighShelfFilter(min(4000.0, 0.45 * sr), high_db)])
    return _same_length(board(y, sr), len(y))


@lru_cache(maxsize=64)
def room_response(seed: int, sr: int) -> np.ndarray:
    """A simulated room impulse response (image-source shoebox), normalised to a unit direct path.

    The room's size, reverberation time (0.2-1.0 s) and the speaker and microphone positions are
    drawn from ``seed``; the same seed always gives the same room.
    """
    import pyroomacoustics as pra

    rng = np.random.default_rng(seed)
    size = rng.uniform([3.0, 2.5, 2.4], [9.0, 7.0, 3.5])
    rt60 = float(rng.uniform(0.2, 1.0))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        absorption, max_order = pra.inverse_sabine(rt60, size)
        room = pra.ShoeBox(size, fs=sr, materials=pra.Material(absorption), max_order=min(max_order, 40))
        room.add_source(rng.uniform(0.5, size - 0.5))
        room.add_microphone(rng.uniform(0.5, size - 0.5))
        room.compute_rir()
    rir = np.asarray(room.rir[0][0], dtype=np.float64)
    rir = rir[int(np.argmax(np.abs(rir))) :]  # start at the direct path: a recording is aligned to what it hears first
    return (rir / np.abs(rir[0])).astype(np.float32)


def room(y: np.ndarray, sr: int, seed: int, wet: float = 1.0) -> np.ndarray:
    """``y`` played into the room of :func:`room_response` ``seed``; ``wet`` scales the reverberant tail."""
    from scipy.signal import fftconvolve

    rir = room_response(seed, sr).copy()
    rir[1:] *= wet
    out = fftconvolve(y, rir)[: len(y)]
    return (out * (np.std(y) / max(float(np.std(out)), 1e-9))).astype(np.float32)


def add_noise(y: np.ndarray, snr_db: float, rng: np.random.Generator, colour: float = 1.0) -> np.ndarray:
    """Add noise at ``snr_db`` below the music's power; ``colour`` is its spectral slope (0 white, 1 pink, 2 brown)."""
    spectrum = np.fft.rfft(rng.standard_normal(len(y)))
    freqs = np.maximum(np.arange(len(spectrum)), 1.0)
    noise = np.fft.irfft(spectrum / freqs ** (colour / 2), n=len(y))
    signal_power = float(np.mean(y.astype(np.float64) ** 2))
    noise *= np.sqrt(signal_power / 10 ** (snr_db / 10) / max(float(np.mean(noise**2)), 1e-20))
    return (y + noise).astype(np.float32)


def agc(y: np.ndarray, sr: int, target_dbfs: float = -20.0) -> np.ndarray:
    """Automatic gain control as phones apply it: fast compression, then the level pulled to ``target_dbfs`` RMS."""
    from pedalboard import Compressor

    out = _same_length(Compressor(threshold_db=-30.0, ratio=6.0, attack_ms=5.0, release_ms=150.0)(y, sr), len(y))
    rms = float(np.sqrt(np.mean(out.astype(np.float64) ** 2)))
    return (out * (10 ** (target_dbfs / 20) / max(rms, 1e-9))).astype(np.float32)


def clip(y: np.ndarray, drive_db: float) -> np.ndarray:
    """Overdrive a converter by ``drive_db`` above the peak and clip at full scale."""
    peak = max(float(np.max(np.abs(y))), 1e-9)
    return np.clip(y / peak * 10 ** (drive_db / 20), -1.0, 1.0).astype(np.float32)


def codec(y: np.ndarray, sr: int, kind: str, quality: float) -> np.ndarray:
    """A lossy encode and decode, trimmed or padded back to the input's length.

    ``kind`` is ``"mp3"`` (``quality``: LAME VBR level 0-9.5), ``"gsm"`` (8 kHz GSM full rate;
    ``quality`` unused), ``"aac"`` or ``"opus"`` (``quality``: bit rate in kbit/s).
    """
    peak = float(np.max(np.abs(y)))
    y = (y / peak * 0.9).astype(np.float32) if peak > 0.9 else y  # codecs clip above full scale
    if kind == "mp3":
        from pedalboard import MP3Compressor

        out = MP3Compressor(vbr_quality=float(quality))(y, sr)
    elif kind == "gsm":
        from pedalboard import GSMFullRateCompressor

        out = GSMFullRateCompressor()(y, sr)
    elif kind in ("aac", "opus"):
        out = _av_round_trip(y, sr, kind, int(quality * 1000))
    else:
        raise ValueError(f"codec must be one of {CODECS}, got {kind!r}")
    return _same_length(np.asarray(out, dtype=np.float32).reshape(-1), len(y))


def loudness(y: np.ndarray, sr: int, lufs: float, ceiling_db: float = -1.0) -> np.ndarray:
    """Normalise integrated loudness (ITU-R BS.1770) to ``lufs``, with peaks saturated softly under ``ceiling_db``.

    This is how streaming-era masters sit at -8 to -14 LUFS whatever their genre. The soft
    saturation takes some loudness back, so the gain is measured and applied again until it holds.
    """
    import pyloudnorm

    meter, ceiling = pyloudnorm.Meter(sr), 10 ** (ceiling_db / 20)
    gain_db = 0.0
    for _ in range(8):
        out = (ceiling * np.tanh(y * 10 ** (gain_db / 20) / ceiling)).astype(np.float32)
        measured = meter.integrated_loudness(out.astype(np.float64))
        if not np.isfinite(measured):
            return y
        if abs(lufs - measured) < 0.1:
            break
        gain_db += lufs - measured
    return out


def master(y: np.ndarray, sr: int, rng: np.random.Generator) -> np.ndarray:
    """Modern production applied to an older recording: EQ tilt, bus compression, loudness to -8..-14 LUFS."""
    from pedalboard import Compressor

    y = tilt(y, sr, float(rng.uniform(-2.0, 6.0)), float(rng.uniform(-2.0, 6.0)))
    bus = Compressor(threshold_db=float(rng.uniform(-24.0, -12.0)), ratio=float(rng.uniform(2.0, 6.0)),
                     attack_ms=float(rng.uniform(5.0, 30.0)), release_ms=float(rng.uniform(60.0, 250.0)))
    return loudness(_same_length(bus(y, sr), len(y)), sr, float(rng.uniform(-14.0, -8.0)))


def speaker_to_microphone(y: np.ndarray, sr: int, rng: np.random.Generator) -> np.ndarray:
    """A song played through a speaker into a room and picked up by a phone or laptop microphone."""
    y = room(y, sr, int(rng.choice(TRAIN_ROOM_SEEDS)), wet=float(rng.uniform(0.3, 1.0)))
    y = band_limit(y, sr, float(rng.uniform(80.0, 500.0)), float(rng.uniform(2500.0, 8000.0)))
    for _ in range(int(rng.integers(0, 3))):
        y = resonance(y, sr, float(rng.uniform(500.0, 5000.0)), float(rng.uniform(-8.0, 10.0)), float(rng.uniform(1.0, 4.0)))
    y = add_noise(y, float(rng.uniform(5.0, 30.0)), rng, float(rng.uniform(0.0, 2.0)))
    if rng.random() < 0.5:
        y = agc(y, sr, float(rng.uniform(-26.0, -14.0)))
    if rng.random() < 0.3:
        y = clip(y, float(rng.uniform(0.0, 12.0)))
    return y


def random_codec(y: np.ndarray, sr: int, rng: np.random.Generator) -> np.ndarray:
    """One of MP3 (VBR 4-9.5), GSM, AAC (24-64 kbit/s) or Opus (8-32 kbit/s), drawn at random."""
    kind = str(rng.choice(CODECS))
    quality = {"mp3": rng.uniform(4.0, 9.5), "gsm": 0.0, "aac": rng.uniform(24, 64), "opus": rng.uniform(8, 32)}[kind]
    return codec(y, sr, kind, float(quality))


def random_arrival(y: np.ndarray, sr: int, rng: np.random.Generator) -> np.ndarray:
    """A training variant: modern mastering (70 %), then a speaker and microphone (50 %), then a codec (50 %).

    At least one of the three always applies, so every variant differs from the clean clip.
    """
    steps = rng.random(3) < (0.7, 0.5, 0.5)
    if not steps.any():
        steps[int(rng.integers(3))] = True
    if steps[0]:
        y = master(y, sr, rng)
    if steps[1]:
        y = speaker_to_microphone(y, sr, rng)
    if steps[2]:
        y = random_codec(y, sr, rng)
    return y


def _phone(y: np.ndarray, sr: int, rng: np.random.Generator) -> np.ndarray:
    y = room(y, sr, EVAL_ROOM_SEEDS[0])
    y = band_limit(y, sr, 200.0, 4000.0)
    return codec(add_noise(y, 20.0, rng, 1.0), sr, "aac", 32)


def _laptop(y: np.ndarray, sr: int, rng: np.random.Generator) -> np.ndarray:
    y = room(y, sr, EVAL_ROOM_SEEDS[1])
    y = band_limit(y, sr, 350.0, 6000.0)
    y = resonance(resonance(y, sr, 1200.0, 8.0, 3.0), sr, 3500.0, 6.0, 2.0)
    y = clip(agc(add_noise(y, 12.0, rng, 0.5), sr, -18.0), 6.0)
    return codec(y, sr, "mp3", 8.0)


def _voip(y: np.ndarray, sr: int, rng: np.random.Generator) -> np.ndarray:
    y = room(y, sr, EVAL_ROOM_SEEDS[2], wet=0.5)
    y = band_limit(y, sr, 100.0, 7000.0)
    return codec(add_noise(y, 25.0, rng, 2.0), sr, "opus", 12)


EVAL_CHAINS: dict[str, Callable[[np.ndarray, int, np.random.Generator], np.ndarray]] = {
    "phone": _phone,
    "laptop": _laptop,
    "voip": _voip,
}
"""Fixed recording chains for evaluation:

- ``phone``: a room, 200-4000 Hz, pink noise at 20 dB SNR, AAC at 32 kbit/s;
- ``laptop``: a livelier room, 350-6000 Hz with two capsule resonances, noise at 12 dB SNR,
  automatic gain control, 6 dB of clipping, MP3 at VBR 8;
- ``voip``: a damped room, 100-7000 Hz, brown noise at 25 dB SNR, Opus at 12 kbit/s.
"""


@dataclass(frozen=True)
class Arrival:
    """A named way a clip reaches the model: an evaluation chain, or training variant ``variant``.

    ``chain`` is a key of :data:`EVAL_CHAINS` or ``"random"`` (:func:`random_arrival`). The
    generator is seeded from ``seed``, ``variant`` and the clip's key, so every clip gets its own
    draw and the same draw every time.
    """

    chain: str
    variant: int = 0
    seed: int = 0

    def __post_init__(self) -> None:
        if self.chain != "random" and self.chain not in EVAL_CHAINS:
            raise ValueError(f"chain must be 'random' or one of {sorted(EVAL_CHAINS)}, got {self.chain!r}")

    @property
    def tag(self) -> str:
        """A cache-safe name that changes whenever the output would."""
        return f"arrival{ARRIVAL_VERSION}-{self.chain}-v{self.variant}-s{self.seed}"

    def apply(self, y: np.ndarray, sr: int, clip_key: str) -> np.ndarray:
        """The clip ``clip_key``'s waveform ``y`` (mono, ``sr`` Hz) as it arrives through this chain."""
        rng = np.random.default_rng([zlib.crc32(clip_key.encode()), self.variant, self.seed])
        fn = random_arrival if self.chain == "random" else EVAL_CHAINS[self.chain]
        out = fn(np.asarray(y, dtype=np.float32), sr, rng)
        return np.nan_to_num(out, nan=0.0, posinf=0.0, neginf=0.0).astype(np.float32)


def _av_round_trip(y: np.ndarray, sr: int, kind: str, bit_rate: int) -> np.ndarray:
    """Encode with FFmpeg's AAC or libopus (through PyAV) in memory and decode back at ``sr``."""
    import av

    rate = 48_000 if kind == "opus" else sr
    source = y if rate == sr else _resample(y, sr, rate)
    buffer = io.BytesIO()
    with av.open(buffer, "w", format="ogg" if kind == "opus" else "adts") as container:
        stream = container.add_stream("libopus" if kind == "opus" else "aac", rate=rate, layout="mono")
        stream.bit_rate = bit_rate
        frame = av.AudioFrame.from_ndarray(source.reshape(1, -1), format="flt", layout="mono")
        frame.sample_rate = rate
        for chunk in (frame, None):
            for packet in stream.encode(chunk):
                container.mux(packet)
    buffer.seek(0)
    with av.open(buffer, "r") as container:
        decoded = np.concatenate([f.to_ndarray().reshape(-1) for f in container.decode(audio=0)]).astype(np.float32)
        decoded_rate = container.streams.audio[0].sample_rate or rate
    if kind == "aac":
        decoded = decoded[_AAC_PRIMING * decoded_rate // rate :]  # ADTS carries no edit list for the encoder delay
    return decoded if decoded_rate == sr else _resample(decoded, decoded_rate, sr)


def _resample(y: np.ndarray, sr_in: int, sr_out: int) -> np.ndarray:
    import soxr

    return soxr.resample(y, sr_in, sr_out).astype(np.float32)


def _same_length(y: np.ndarray, length: int) -> np.ndarray:
    y = np.asarray(y, dtype=np.float32).reshape(-1)
    return y[:length] if len(y) >= length else np.pad(y, (0, length - len(y)))
