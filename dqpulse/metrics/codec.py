"""Byte layout of metric states: a JSON header (sorted keys) plus length-prefixed blobs,
behind a CRC-32 of them.

Deterministic: the same state always gives the same bytes. Floats must be finite (the
states keep None for "no value yet"), because JSON has no infinity.

The checksum is checked before anything is read: a stored state whose bytes changed (a
flipped bit, a truncated row, a hand edit) raises :class:`CorruptState` instead of
reaching a sketch library's deserializer, which crashes the whole process on some
corrupt bytes (DataSketches' KLL, HLL and frequent-items, measured: a segmentation
fault within a few thousand random single-byte changes). The stored bytes carry it
(``pack(..., checked=True)``: window states, checkpoints, baselines); the family states
nested in them do not need their own. States written before the checksum
(``DQP\x01``) are still read, unchecked.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Sequence
from typing import Any

import orjson

_MAGIC_V1 = b"DQP\x01"  # no checksum: nested states, and stored ones before session 43
_MAGIC = b"DQP\x02"  # then the CRC-32 of everything after it
_LENGTH = struct.Struct(">I")


class CorruptState(ValueError):
    """Stored metric state bytes that are not what was written."""


def pack(header: dict[str, Any], blobs: Sequence[bytes] = (), *,
         checked: bool = False) -> bytes:
    """``header`` and ``blobs`` as bytes; ``checked``: behind a CRC-32 of them, for the
    bytes that are stored (a window state, a checkpoint, a baseline). The states nested
    in those are covered by it and skip their own (a checksum per level tripled the
    cost of serializing a window state)."""
    head = orjson.dumps(header, option=orjson.OPT_SORT_KEYS | orjson.OPT_SERIALIZE_NUMPY)
    parts = [_LENGTH.pack(len(head)), head, _LENGTH.pack(len(blobs))]
    for blob in blobs:
        parts.append(_LENGTH.pack(len(blob)))
        parts.append(blob)
    if not checked:
        return b"".join([_MAGIC_V1, *parts])
    crc = 0
    for part in parts:
        crc = zlib.crc32(part, crc)
    return b"".join([_MAGIC, _LENGTH.pack(crc), *parts])


def unpack(data: bytes) -> tuple[dict[str, Any], list[bytes]]:
    """The header and blobs of :func:`pack`'s bytes; :class:`CorruptState` when the
    bytes are not a metric state or not the ones written."""
    view = memoryview(data)
    magic = bytes(view[:4])
    if magic == _MAGIC:
        if len(view) < 8:
            raise CorruptState(f"metric state truncated to {len(view)} bytes")
        (expected,) = _LENGTH.unpack_from(view, 4)
        view = view[8:]
        if zlib.crc32(view) != expected:
            raise CorruptState(f"metric state of {len(data)} bytes fails its checksum "
                               "(changed or truncated since it was written)")
    elif magic == _MAGIC_V1:
        view = view[4:]
    else:
        raise CorruptState("not a dqpulse metric state (bad magic)")
    try:
        (length,) = _LENGTH.unpack_from(view, 0)
        position = 4 + length
        header = orjson.loads(view[4:position])
        (count,) = _LENGTH.unpack_from(view, position)
        position += 4
        blobs: list[bytes] = []
        for _ in range(count):
            (size,) = _LENGTH.unpack_from(view, position)
            position += 4
            if position + size > len(view):
                raise CorruptState("metric state truncated inside a blob")
            blobs.append(bytes(view[position:position + size]))
            position += size
    except (struct.error, orjson.JSONDecodeError) as exc:
        raise CorruptState(f"metric state unreadable: {exc}") from exc
    if not isinstance(header, dict):
        raise CorruptState("metric state header is not an object")
    return header, blobs


class BlobTable:
    """Collects blobs while a header is built, handing out their indices."""

    def __init__(self) -> None:
        self.blobs: list[bytes] = []

    def add(self, blob: bytes) -> int:
        self.blobs.append(blob)
        return len(self.blobs) - 1
