"""Chained Ogg files (several logical streams one after the other): how many, and how long in all.

``cat a.ogg b.ogg > ab.ogg`` is a valid Ogg file that players play through, but libsndfile
reads only its first stream and reports a duration from the wrong stream. Reading the page
headers (27 bytes and a segment table per page, the payloads are skipped) tells how many
streams there are, each one's sample rate, and the whole file's duration from each stream's
last granule position, so that the decoder can read every stream and report the true length.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path

_PAGE = struct.Struct("<4sBBqIIIB")
"""Capture pattern, version, header type, granule position, serial, sequence, CRC, segment count."""
_BEGINNING_OF_STREAM = 0x02
_OPUS_RATE = 48_000
"""Opus granule positions always count 48 kHz samples, whatever the input rate was."""


@dataclass(frozen=True)
class Chain:
    """One logical stream of an Ogg file: its codec's sample rate and its length in seconds."""

    rate: int
    seconds: float


def chains(path: Path) -> list[Chain]:
    """The logical streams of the Ogg file at ``path``, in order; ``[]`` when it is no Ogg file.

    Raises:
        OSError: the file cannot be read.
    """
    streams: list[list[int]] = []  # [rate, pre-skip, last granule] per logical stream, in order
    current: dict[int, int] = {}  # serial -> index in streams (a chain may reuse a serial)
    with open(path, "rb") as file:
        while len(header := file.read(_PAGE.size)) == _PAGE.size:
            magic, _, kind, granule, serial, _, _, segments = _PAGE.unpack(header)
            if magic != b"OggS":
                break
            body = sum(file.read(segments))
            if kind & _BEGINNING_OF_STREAM:
                current[serial] = len(streams)
                streams.append([*_identification(file.read(min(body, 64))), 0])
                file.seek(max(body - 64, 0), 1)
            else:
                file.seek(body, 1)
            if serial in current and granule >= 0:
                streams[current[serial]][2] = granule
    return [Chain(rate, max(granule - preskip, 0) / rate if rate else 0.0) for rate, preskip, granule in streams]


def _identification(packet: bytes) -> tuple[int, int]:
    """(sample rate, pre-skip) from a stream's first packet: Vorbis and Opus; (0, 0) for other codecs."""
    if packet.startswith(b"\x01vorbis") and len(packet) >= 16:
        return struct.unpack_from("<I", packet, 12)[0], 0
    if packet.startswith(b"OpusHead") and len(packet) >= 12:
        return _OPUS_RATE, struct.unpack_from("<H", packet, 10)[0]
    return 0, 0
