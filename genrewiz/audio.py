"""Audio loading: any common audio file -> mono float32 at the model's sample rate.

libsndfile reads WAV, FLAC, Ogg (Vorbis, Opus), MP3, AU and AIFF; FFmpeg, through PyAV's
wheel, reads what phones and browsers make (AAC in .m4a/.aac, WMA, WebM). Both feed the same
streamed reader, so every problem with an input (missing, unreadable, empty, silent, too short,
an absurd sample rate) surfaces as one exception type, :class:`AudioError`, whose message is fit
to show a user as it is, and memory and work depend on the seconds analysed, never on the
file's own sample rate or channel count. :func:`find_audio_files` expands folders into the files
these decoders read, as a music library is given: by folder.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import os
import re
import stat
import sys
import tempfile
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import av
import numpy as np
import soundfile as sf
import soxr

from .ogg import Chain, chains

DEFAULT_MAX_DURATION = 600.0
"""Seconds of a file analysed by default; the rest of a longer file is never read."""
DEFAULT_MIN_DURATION = 1.0
"""Clips shorter than this carry too little music to judge."""
SILENCE_PEAK = 1e-4
"""Peak amplitude (-80 dBFS) under which a clip counts as silent."""
SNDFILE_EXTENSIONS = frozenset({".wav", ".flac", ".ogg", ".oga", ".opus", ".mp3", ".au", ".aiff", ".aif"})
"""Read by libsndfile: faster than FFmpeg for these, and the reader of any file whose extension is not below."""
FFMPEG_EXTENSIONS = frozenset({".m4a", ".m4b", ".mp4", ".aac", ".wma", ".webm", ".weba", ".mka"})
"""Read by FFmpeg (PyAV): AAC from phones and Apple libraries, Windows Media, browsers' WebM/Opus recordings."""
SUPPORTED_EXTENSIONS = SNDFILE_EXTENSIONS | FFMPEG_EXTENSIONS
"""Extensions searched for in folders."""
MIN_SAMPLE_RATE, MAX_SAMPLE_RATE = 4_000, 384_000
"""Sample rates read: from narrow-band speech to DXD. A header outside this range is refused
rather than believed (a WAV claiming 1 Hz would otherwise be 600 s of 'music' in 600 samples)."""
MAX_SAMPLES_PER_SECOND = 384_000
"""Decoded samples (all channels together) per second of ``max_duration``. 192 kHz stereo or
48 kHz 7.1 is read for the whole ``max_duration``; a file with more samples per second (384 kHz
8-channel) gets a proportionally shorter excerpt, so no file costs more than ``max_duration`` x
384,000 samples of decoding work."""

_BLOCK_SAMPLES = 1 << 18
"""Samples (all channels) decoded per read: 1 MB of float32 whatever the file's layout."""
_HEADROOM = 2.0**-16
"""Decoded samples are scaled by this power of two (exactly undone later): a float file may hold
values up to 3.4e38, and summing 1024 channels or resampling them must not overflow float32."""
_MISLEADING_OPEN_ERROR = "does not exist or is not a regular file"
"""What libsndfile says when its MP3 decoder finds no MPEG frames in a file that does exist."""
_DIGITS = re.compile(r"(\d+)")
_AUDIO_MAGIC = (b"ID3", b"fLaC", b"OggS", b".snd", b"\x1aE\xdf\xa3", b"0&\xb2u\x8ef\xcf\x11", b"wvpk", b"MAC ", b"MPCK")
"""Leading bytes of ID3-tagged MP3, FLAC, Ogg, Sun AU, Matroska/WebM, ASF (WMA), WavPack, Monkey's Audio, Musepack."""
_DECODER_CHATTER = re.compile(rb"^(Note|Warning|Error): |^\[[^\]\n]*libmpg123[^\]\n]*\] ")
"""Lines libmpg123 prints straight to the process's stderr about the stream it decodes."""


class AudioError(ValueError):
    """An input that cannot be analysed, with a message meant for the user."""


@dataclass(frozen=True)
class Audio:
    """A mono waveform ready for feature extraction.

    ``source_duration`` is the length of the whole input; it exceeds :attr:`duration` when
    only the first ``max_duration`` seconds were read.
    """

    samples: np.ndarray
    sample_rate: int
    source_duration: float

    @property
    def duration(self) -> float:
        """Seconds of audio in :attr:`samples`."""
        return len(self.samples) / self.sample_rate


@dataclass(frozen=True)
class _Decoded:
    """A streamed read: mono samples at the target rate, still scaled by :data:`_HEADROOM`."""

    samples: np.ndarray
    frames: int
    peak: float
    source_rate: int
    source_duration: float


def load_audio(
    path: str | os.PathLike[str],
    sample_rate: int,
    max_duration: float = DEFAULT_MAX_DURATION,
    min_duration: float = DEFAULT_MIN_DURATION,
    offset: float = 0.0,
) -> Audio:
    """Read at most ``max_duration`` seconds of a file, from ``offset`` s, as mono float32 at ``sample_rate``.

    Channels are averaged and other rates resampled with soxr block by block, so memory is the
    output plus one 1 MB block whatever the file's rate, channel count or length. Files with
    more than :data:`MAX_SAMPLES_PER_SECOND` samples per second have a shorter excerpt read. A
    waveform peaking above full scale (1.0) is scaled down to it.

    Raises:
        AudioError: the path is missing or not a file, the format is unsupported or corrupt,
            the sample rate is outside :data:`MIN_SAMPLE_RATE`-:data:`MAX_SAMPLE_RATE`, or the
            audio is empty, non-finite, silent or shorter than ``min_duration``.
    """
    path = Path(path)
    name = path.name
    if not path.exists():
        raise AudioError(f"{name}: file not found")
    if not path.is_file():
        raise AudioError(f"{name}: not a file")
    if path.stat().st_size == 0:
        raise AudioError(f"{name}: the file is empty")
    chained = _chained_ogg(path)
    if path.suffix.lower() in FFMPEG_EXTENSIONS or chained:
        decoded = _decode_ffmpeg(path, sample_rate, max_duration, offset)
        if chained:  # FFmpeg reads every stream of the chain but reports the last one's length
            decoded = dataclasses.replace(decoded, source_duration=sum(chain.seconds for chain in chained))
    else:
        try:
            decoded = _decode_sndfile(path, sample_rate, max_duration, offset)
        except AudioError as err:
            if path.suffix.lower() in SNDFILE_EXTENSIONS or not isinstance(err.__cause__, sf.SoundFileError):
                raise
            try:  # an extension neither list names: FFmpeg may still know the format
                decoded = _decode_ffmpeg(path, sample_rate, max_duration, offset)
            except AudioError:
                raise err from None
    source_sr, source_duration = decoded.source_rate, max(decoded.source_duration, decoded.frames / decoded.source_rate)
    _check_content(decoded.frames, source_sr, decoded.peak / _HEADROOM, min_duration, name)
    samples = decoded.samples
    samples *= np.float32(1.0 / decoded.peak if decoded.peak > _HEADROOM else 1.0 / _HEADROOM)
    return Audio(samples, sample_rate, source_duration)


def prepare_waveform(
    samples: np.ndarray,
    source_rate: int,
    sample_rate: int,
    max_duration: float = DEFAULT_MAX_DURATION,
    min_duration: float = DEFAULT_MIN_DURATION,
    name: str = "audio",
) -> Audio:
    """Bring an in-memory waveform to the same state :func:`load_audio` returns.

    Accepts 1-D arrays, ``(samples, channels)`` as soundfile returns, or ``(channels, samples)``
    as librosa returns; integer PCM is scaled to [-1, 1], and a float waveform peaking above
    1.0 is scaled down to it.
    """
    array = np.asarray(samples)
    if array.ndim not in (1, 2) or array.size == 0:
        raise AudioError(f"{name}: expected a non-empty 1-D or 2-D waveform, got shape {array.shape}")
    _check_sample_rate(source_rate, name)
    if np.issubdtype(array.dtype, np.integer):
        array = array.astype(np.float32) / float(np.iinfo(array.dtype).max + 1)
    if not np.all(np.isfinite(array)):
        raise AudioError(f"{name}: contains invalid (NaN or infinite) samples")
    if array.ndim == 2:
        channel_axis = 0 if array.shape[0] < array.shape[1] and array.shape[0] <= 8 else 1
        array = array.mean(axis=channel_axis, dtype=np.float64)  # float64: huge float32 values may not overflow
    source_duration = len(array) / source_rate
    array = array[: int(max_duration * source_rate)]
    peak = float(np.max(np.abs(array)))
    _check_content(len(array), source_rate, peak, min_duration, name)
    mono = (array / peak if peak > 1.0 else array).astype(np.float32)
    return Audio(resample(mono, source_rate, sample_rate), sample_rate, source_duration)


def resample(samples: np.ndarray, source_rate: int, sample_rate: int) -> np.ndarray:
    """A mono float32 waveform at ``sample_rate`` (soxr, high quality); the same array when the rates agree.

    The one in-memory resampler: training and serving bring a waveform decoded at one rate to
    each front end's rate through it, so both compute the same samples.
    """
    if source_rate == sample_rate:
        return np.ascontiguousarray(samples, dtype=np.float32)
    return np.ascontiguousarray(soxr.resample(samples, source_rate, sample_rate, quality="HQ"), dtype=np.float32)


def find_audio_files(paths: Iterable[str | os.PathLike[str]]) -> list[Path]:
    """Expand folders recursively into their audio files (in natural order: ``song_2`` before
    ``song_10``); named files are kept as given.

    An entry that cannot be listed or looked at (a folder without read or search permission, a
    link to something unreadable) is kept as it is, so that it becomes an error row saying why
    instead of stopping the run or vanishing. Links to folders are not followed, so a scan never
    leaves the folders it was given nor loops.
    """
    found: list[Path] = []
    for path in map(Path, paths):
        if _is_dir(path):
            found += sorted(_walk(path), key=natural_key)
        else:
            found.append(path)
    return found


def looks_like_audio(head: bytes) -> bool:
    """Whether a file's first bytes are those of an audio container GenreWiz reads (or an MPEG audio frame).

    Used to refuse writing results over a file that holds audio whatever its name says.
    """
    return (
        head.startswith(_AUDIO_MAGIC)
        or head[4:8] == b"ftyp"
        or (head[:4] in (b"RIFF", b"FORM") and head[8:12] in (b"WAVE", b"AIFF", b"AIFC"))
        or (len(head) >= 2 and head[0] == 0xFF and head[1] & 0xE0 == 0xE0)
    )


def natural_key(path: Path) -> tuple:
    """Sort key ordering numbers in names by value, folder by folder (``a/song_2.mp3`` before ``a/song_10.mp3``)."""
    return tuple(
        tuple((int(piece), piece) if piece.isdigit() else (-1, piece) for piece in _DIGITS.split(part)) for part in path.parts
    )


def _is_dir(path: Path) -> bool:
    """``path.is_dir()``, false for what cannot be looked at (Python 3.11 raises there)."""
    try:
        return path.is_dir()
    except OSError:
        return False


def _walk(folder: Path) -> Iterator[Path]:
    """Audio files under ``folder``, and the entries that could not be read (see :func:`find_audio_files`)."""
    unreadable: list[Path] = []
    for parent, _, names in os.walk(folder, onerror=lambda err: unreadable.append(Path(err.filename))):
        for name in names:
            path = Path(parent, name)
            if path.suffix.lower() in SUPPORTED_EXTENSIONS:
                yield path
    yield from unreadable


def unreadable_reason(path: str | os.PathLike[str]) -> str | None:
    """Why ``path`` cannot even be opened (``Permission denied``, a folder, a FIFO, ...), or ``None``.

    The decoders would report such a file as corrupt; the user needs the real reason. Only a
    regular file is read: the open does not wait (a FIFO would block it) and the open file is
    checked before anything reads it (a link to ``/dev/zero`` would never end).
    """
    name = Path(path).name or os.fspath(path)
    try:
        if os.path.isdir(path):
            os.listdir(path)
            return f"{name}: a folder, not an audio file"
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        try:
            mode = os.fstat(fd).st_mode
        finally:
            os.close(fd)
    except FileNotFoundError:
        return None  # the decoder says "file not found" itself
    except OSError as err:
        return f"{name}: cannot read: {err.strerror or err}"
    return None if stat.S_ISREG(mode) else f"{name}: not a regular file ({file_kind(mode)}): not read"


def file_kind(mode: int) -> str:
    """What a file that is not a regular one is, in words: ``a FIFO``, ``a device``, ..."""
    if stat.S_ISFIFO(mode):
        return "a FIFO"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    if stat.S_ISDIR(mode):
        return "a folder"
    if stat.S_ISSOCK(mode):
        return "a socket"
    return "not a plain file"


def _chained_ogg(path: Path) -> list[Chain]:
    """The streams of a chained Ogg file (two or more, one after the other), which only FFmpeg reads whole; else ``[]``."""
    try:
        with open(path, "rb") as file:
            if file.read(4) != b"OggS":
                return []
        found = chains(path)
    except OSError:
        return []  # the decoder reports why the file cannot be read
    if len(found) < 2:
        return []
    rates = sorted({chain.rate for chain in found})
    if len(rates) > 1:
        raise AudioError(
            f"{path.name}: a chained Ogg file whose {len(found)} streams have different sample rates "
            f"({', '.join(f'{r:,}' for r in rates)} Hz): not supported"
        )
    return found


def _decode_sndfile(path: Path, sample_rate: int, max_duration: float, offset: float) -> _Decoded:
    """:func:`_read_mono` over libsndfile's reader, which seeks exactly to ``offset``."""
    try:
        with _quiet_decoder(), sf.SoundFile(_native_path(path)) as f:
            _check_sample_rate(f.samplerate, path.name)
            if offset > 0:
                f.seek(min(int(offset * f.samplerate), f.frames))
            expected = max(f.frames - f.tell(), 0) if f.seekable() else 0
            source = _Source(f.samplerate, f.channels, f.frames / f.samplerate if f.frames > 0 else 0.0, expected)
            return _read_mono(lambda n: f.read(n, dtype="float32", always_2d=True), source, max_duration, sample_rate, path.name)
    except (sf.SoundFileError, RuntimeError, EOFError, OSError) as err:
        raise _decode_error(path, err) from err


def _decode_ffmpeg(path: Path, sample_rate: int, max_duration: float, offset: float) -> _Decoded:
    """:func:`_read_mono` over FFmpeg's decoder for the file's first audio stream (PyAV).

    The file is handed over as an open file, so that any name works and no server path can
    appear in a message. Frames before ``offset`` are decoded and dropped: exact, where seeking
    in a compressed stream lands on a packet boundary.
    """
    try:
        with open(path, "rb") as raw, av.open(raw, mode="r") as container:
            if not container.streams.audio:
                raise AudioError(f"{path.name}: no audio stream in this file")
            stream = container.streams.audio[0]
            rate, channels = stream.rate or 0, stream.channels or 0
            _check_sample_rate(rate, path.name)
            if channels < 1:
                raise AudioError(f"{path.name}: no audio channels in this file")
            if stream.duration is not None and stream.time_base is not None:
                seconds = float(stream.duration * stream.time_base)
            else:
                seconds = container.duration / av.time_base if container.duration else 0.0
            skip = int(offset * rate)
            source = _Source(rate, channels, seconds, max(int(seconds * rate) - skip, 0))
            reader = _FFmpegReader(container.decode(stream), stream.layout, skip)
            return _read_mono(reader.read, source, max_duration, sample_rate, path.name)
    except (av.FFmpegError, OSError, EOFError) as err:
        raise _decode_error(path, err) from err


@dataclass(frozen=True)
class _Source:
    """What a decoder says about its stream before the first block: rate, channels, seconds, frames left (0: unknown)."""

    rate: int
    channels: int
    seconds: float
    frames_left: int


class _FFmpegReader:
    """``read(n)``: up to ``n`` frames ``(frames, channels)`` float32 from FFmpeg's decoded frames.

    Frames are converted to packed float in the stream's own channel layout and rate (a sample
    format change only: resampling stays soxr's, in :func:`_read_mono`), and at most one decoded
    frame beyond ``n`` is held.
    """

    def __init__(self, frames: Iterator[av.AudioFrame], layout: av.AudioLayout, skip: int) -> None:
        self._frames = frames
        self._channels = layout.nb_channels
        self._skip = skip
        self._converter = av.AudioResampler(format="flt", layout=layout)
        self._held = np.zeros((0, self._channels), dtype=np.float32)

    def read(self, n: int) -> np.ndarray:
        parts, have = [self._held], len(self._held)
        while have < n:
            block = self._next_block()
            if block is None:
                break
            parts.append(block)
            have += len(block)
        data = np.concatenate(parts) if len(parts) > 1 else parts[0]
        self._held = data[n:]
        return data[:n]

    def _next_block(self) -> np.ndarray | None:
        """The next decoded frame as ``(frames, channels)``, after the frames to skip; ``None`` at the end."""
        while True:
            frame = next(self._frames, None)
            if frame is None:
                return None
            block = np.concatenate([f.to_ndarray().reshape(-1, self._channels) for f in self._converter.resample(frame)])
            if self._skip >= len(block):
                self._skip -= len(block)
                continue
            block, self._skip = block[self._skip :], 0
            return block


def _read_mono(
    read: Callable[[int], np.ndarray], source: _Source, max_duration: float, sample_rate: int, name: str
) -> _Decoded:
    """Read up to ``max_duration`` s, averaging channels and resampling one block at a time.

    ``read(n)`` returns up to ``n`` frames as ``(frames, channels)`` float32. Files with more
    than :data:`MAX_SAMPLES_PER_SECOND` samples per second have a shorter excerpt read.
    Samples are scaled by :data:`_HEADROOM` before anything adds them up; the caller undoes it.
    The output goes straight into one array sized from the header: no list of blocks to join,
    which would double the memory and leave a heap of freed blocks in a long-running server.
    """
    max_frames = int(max_duration * min(source.rate, MAX_SAMPLES_PER_SECOND / source.channels))
    block_frames = max(1, _BLOCK_SAMPLES // source.channels)
    resampler = None if source.rate == sample_rate else soxr.ResampleStream(source.rate, sample_rate, 1, quality="HQ")
    out = _Output(math.ceil(min(max_frames, source.frames_left) * sample_rate / source.rate) + _BLOCK_SAMPLES)
    frames, peak = 0, 0.0
    while frames < max_frames:
        data = read(min(block_frames, max_frames - frames))
        if len(data) == 0:
            break
        data *= np.float32(_HEADROOM)
        mono = data[:, 0] if data.shape[1] == 1 else data.mean(axis=1)
        if not np.all(np.isfinite(mono)):
            raise AudioError(f"{name}: contains invalid (NaN or infinite) samples")
        peak = max(peak, float(np.max(np.abs(mono))))
        frames += len(data)
        out.append(mono if resampler is None else resampler.resample_chunk(np.ascontiguousarray(mono)))
    if resampler is not None and frames > 0:
        out.append(resampler.resample_chunk(np.zeros(0, dtype=np.float32), last=True))
    return _Decoded(out.array(), frames, peak, source.rate, source.seconds)


class _Output:
    """A float32 array filled block by block; it grows (rarely: only past a header's length) by half."""

    def __init__(self, capacity: int) -> None:
        self._data = np.empty(capacity, dtype=np.float32)  # untouched pages cost no memory
        self._size = 0

    def append(self, block: np.ndarray) -> None:
        end = self._size + len(block)
        if end > len(self._data):
            grown = np.empty(max(end, len(self._data) * 3 // 2), dtype=np.float32)
            grown[: self._size] = self._data[: self._size]
            self._data = grown
        self._data[self._size : end] = block
        self._size = end

    def array(self) -> np.ndarray:
        """The samples so far (a view: no copy)."""
        return self._data[: self._size]


def _native_path(path: Path) -> str | bytes:
    """``path`` as libsndfile should get it: its own bytes on POSIX, where a name need not be UTF-8.

    soundfile encodes a ``str`` path strictly as UTF-8, which fails on a name like ``caf\xe9.wav``
    written by a Latin-1 system (Python holds its undecodable byte as a surrogate).
    """
    return str(path) if sys.platform == "win32" else os.fsencode(path)


def _check_sample_rate(rate: int, name: str) -> None:
    """Refuse a sample rate no real recording has (see :data:`MIN_SAMPLE_RATE`)."""
    if not MIN_SAMPLE_RATE <= rate <= MAX_SAMPLE_RATE:
        raise AudioError(
            f"{name}: sample rate {rate:,} Hz is outside the range GenreWiz reads "
            f"({MIN_SAMPLE_RATE:,}-{MAX_SAMPLE_RATE:,} Hz)"
        )


def _check_content(frames: int, source_rate: int, peak: float, min_duration: float, name: str) -> None:
    """Refuse a decoded waveform with nothing to judge: no frames, too short, or silent."""
    if frames == 0:
        raise AudioError(f"{name}: contains no audio frames")
    duration = frames / source_rate
    if duration < min_duration:
        raise AudioError(f"{name}: too short to judge ({duration:.2f} s; at least {min_duration:g} s needed)")
    if peak < SILENCE_PEAK:
        raise AudioError(f"{name}: the audio is silent")


def _decode_error(path: Path, err: Exception) -> AudioError:
    """The user-facing reason ``path`` could not be decoded (never the server-side path)."""
    name, ext = path.name, path.suffix.lower()
    if ext and ext not in SUPPORTED_EXTENSIONS:
        supported = ", ".join(sorted(e.lstrip(".") for e in SUPPORTED_EXTENSIONS))
        return AudioError(f"{name}: unsupported format '{ext}' (supported: {supported})")
    reason = getattr(err, "error_string", None) or getattr(err, "strerror", None) or type(err).__name__
    if _MISLEADING_OPEN_ERROR in reason:
        # The file exists and is regular (checked above), and libmpg123's own reasons reach
        # only stderr: what is true is that the decoder found no valid stream in it.
        return AudioError(f"{name}: not a valid {ext.lstrip('.').upper() or 'audio'} file (corrupt, truncated or not audio)")
    return AudioError(f"{name}: not a readable audio file (corrupt or unsupported: {reason})")


class _StderrFilter:
    """Keeps libmpg123's notes ("Illegal Audio-MPEG-Header ...") out of the terminal and server log.

    The decoder writes them from C straight to file descriptor 2, so Python cannot intercept
    them. While any thread decodes, descriptor 2 points at a temporary file; when the last one
    is done, everything else written there meanwhile (other threads' log lines, real errors) is
    passed on to the real stderr and only the decoder's own lines are dropped.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._users = 0
        self._saved_fd = -1
        self._capture: BinaryIO | None = None

    @contextlib.contextmanager
    def active(self) -> Iterator[None]:
        with self._lock:
            if self._users == 0:
                self._start()
            self._users += 1
        try:
            yield
        finally:
            with self._lock:
                self._users -= 1
                if self._users == 0:
                    self._stop()

    def _start(self) -> None:
        try:
            capture = tempfile.TemporaryFile()
        except OSError:  # no room for it: better the decoder's chatter than no decoding
            return
        try:
            self._saved_fd = os.dup(2)
        except OSError:  # no stderr at all: nothing to protect
            capture.close()
            return
        _flush_stderr()
        os.dup2(capture.fileno(), 2)
        self._capture = capture

    def _stop(self) -> None:
        if self._capture is None:
            return
        _flush_stderr()
        os.dup2(self._saved_fd, 2)
        os.close(self._saved_fd)
        capture, self._capture, self._saved_fd = self._capture, None, -1
        with capture:
            capture.seek(0)
            kept = b"".join(line for line in capture if not _DECODER_CHATTER.match(line))
        with contextlib.suppress(OSError):
            while kept:
                kept = kept[os.write(2, kept) :]


def _flush_stderr() -> None:
    """Write out what Python has buffered for stderr before descriptor 2 changes target."""
    if sys.stderr is not None:
        with contextlib.suppress(OSError, ValueError):
            sys.stderr.flush()


_stderr_filter = _StderrFilter()


def _quiet_decoder() -> contextlib.AbstractContextManager[None]:
    """A context in which the C decoders' own stderr lines are dropped (thread-safe)."""
    return _stderr_filter.active()
