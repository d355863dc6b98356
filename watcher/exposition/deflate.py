"""Gzip bodies assembled from segments compressed apart, as pigz does: a change recompresses its segment alone.

A *segment* is raw deflate ending with a full flush: the flush ends its last block on a byte
boundary and the next bytes may not refer back past it, so a segment decodes alone, wherever it
stands in a stream. A gzip member is then the gzip header, segments in any order, a final empty
block, and the CRC-32 and length of everything they decode to: the CRC is combined from each
segment's own (``combine``: zlib's ``crc32_combine``), so no byte is compressed or read again.
Segments compress a little worse than one stream (each starts without a dictionary).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import struct
import zlib
from collections.abc import Callable, Iterable
from typing import NamedTuple

LEVEL = 1  # compressed once per change, not per scrape; level 1 costs a third of the default
RAW = -15  # raw deflate: no zlib header or trailer, a 32 KiB window
# Magic, deflate, no flags, no mtime, "fastest", Unix: what zlib writes at level 1.
GZIP_HEADER = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x04\x03"
FINAL_BLOCK = b"\x03\x00"  # an empty final block (fixed Huffman): the stream ends


class Segment(NamedTuple):
    """Raw deflate that decodes alone, and the CRC-32 and length of what it decodes to."""

    deflated: bytes
    crc: int
    size: int


EMPTY = Segment(b"", 0, 0)


class Deflater:
    """One compressor for many segments, so each costs no set-up; ``compressed`` counts the bytes fed."""

    def __init__(self) -> None:
        self._compressor = zlib.compressobj(LEVEL, zlib.DEFLATED, RAW)
        self.compressed = 0

    def segment(self, data: bytes) -> Segment:
        if not data:
            return EMPTY
        self.compressed += len(data)
        deflated = self._compressor.compress(data) + self._compressor.flush(zlib.Z_FULL_FLUSH)
        return Segment(deflated, zlib.crc32(data), len(data))


def inflate(segment: Segment) -> bytes:
    """What ``segment`` decodes to."""
    return zlib.decompressobj(RAW).decompress(segment.deflated) if segment.size else b""


def _zeros_combine(crc1: int, crc2: int, size2: int) -> int:
    """CRC-32 of A + B from CRC-32 of A and of B, and B's length: CRC-32 is affine in its start value,
    and its linear part depends on the length alone, so zeros of B's length give it (O(length), in C)."""
    zeros = bytes(size2)
    return zlib.crc32(zeros, crc1) ^ zlib.crc32(zeros) ^ crc2


def _zlib_combine() -> Callable[[int, int, int], int] | None:
    """zlib's own crc32_combine (O(log length)); None where the library cannot be loaded."""
    try:
        function = ctypes.CDLL(ctypes.util.find_library("z") or "libz.so.1").crc32_combine
    except (OSError, AttributeError):
        return None
    function.argtypes = [ctypes.c_ulong, ctypes.c_ulong, ctypes.c_long]
    function.restype = ctypes.c_ulong
    combined: Callable[[int, int, int], int] = function
    return combined


combine: Callable[[int, int, int], int] = _zlib_combine() or _zeros_combine


def joined(segments: Iterable[Segment]) -> Segment:
    """One segment of ``segments`` in order."""
    parts, crc, size = [], 0, 0
    for segment in segments:
        if segment.size:
            parts.append(segment.deflated)
            crc, size = combine(crc, segment.crc, segment.size), size + segment.size
    return Segment(b"".join(parts), crc, size)


def gzip_member(segments: Iterable[Segment]) -> bytes:
    """A whole gzip member (what ``gzip.decompress`` reads) of ``segments`` in order."""
    body = joined(segments)
    return b"".join((GZIP_HEADER, body.deflated, FINAL_BLOCK, struct.pack("<II", body.crc, body.size & 0xFFFFFFFF)))
