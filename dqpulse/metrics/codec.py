"""Byte layout of metric states: a JSON header (sorted keys) plus length-prefixed blobs.

Deterministic: the same state always gives the same bytes. Floats must be finite (the
states keep None for "no value yet"), because JSON has no infinity.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from typing import Any

import orjson

_MAGIC = b"DQP\x01"
_LENGTH = struct.Struct(">I")


def pack(header: dict[str, Any], blobs: Sequence[bytes] = ()) -> bytes:
    head = orjson.dumps(header, option=orjson.OPT_SORT_KEYS | orjson.OPT_SERIALIZE_NUMPY)
    parts = [_MAGIC, _LENGTH.pack(len(head)), head, _LENGTH.pack(len(blobs))]
    for blob in blobs:
        parts.append(_LENGTH.pack(len(blob)))
        parts.append(blob)
    return b"".join(parts)


def unpack(data: bytes) -> tuple[dict[str, Any], list[bytes]]:
    if data[:4] != _MAGIC:
        raise ValueError("not a dqpulse metric state (bad magic)")
    view = memoryview(data)
    (length,) = _LENGTH.unpack_from(view, 4)
    position = 8 + length
    header = orjson.loads(view[8:position])
    (count,) = _LENGTH.unpack_from(view, position)
    position += 4
    blobs: list[bytes] = []
    for _ in range(count):
        (size,) = _LENGTH.unpack_from(view, position)
        position += 4
        blobs.append(bytes(view[position:position + size]))
        position += size
    if not isinstance(header, dict):
        raise ValueError("metric state header is not an object")
    return header, blobs


class BlobTable:
    """Collects blobs while a header is built, handing out their indices."""

    def __init__(self) -> None:
        self.blobs: list[bytes] = []

    def add(self, blob: bytes) -> int:
        self.blobs.append(blob)
        return len(self.blobs) - 1
