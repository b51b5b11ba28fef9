"""Audio files in the formats only FFmpeg reads, encoded by PyAV for the tests (no fixture files)."""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np

ENCODINGS: dict[str, tuple[str, str]] = {
    "m4a": ("mp4", "aac"),
    "aac": ("adts", "aac"),
    "wma": ("asf", "wmav2"),
    "webm": ("webm", "libopus"),
    "mka": ("matroska", "aac"),
}
"""Extension -> (FFmpeg container, codec): AAC from phones and iTunes, Windows Media, a browser's recording."""


def write_encoded(path: Path, samples: np.ndarray, sample_rate: int) -> Path:
    """Encode ``samples`` (``(n,)`` mono or ``(n, channels)``) into ``path`` in the format its extension names."""
    container, codec = ENCODINGS[path.suffix.lstrip(".").lower()]
    planar = np.ascontiguousarray(np.atleast_2d(np.asarray(samples, dtype=np.float32).T))
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w", format=container) as out:
        stream = out.add_stream(codec, rate=sample_rate, layout="mono" if len(planar) == 1 else "stereo")
        stream.bit_rate = 128_000
        for start in range(0, planar.shape[1], 4096):
            frame = av.AudioFrame.from_ndarray(
                np.ascontiguousarray(planar[:, start : start + 4096]), format="fltp", layout=stream.layout.name
            )
            frame.sample_rate = sample_rate
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
    return path
