"""Decoders: raw message values -> one ``ColumnBatch`` plus the values that failed.

A decoder turns a whole poll batch into columns at once; per-record Python is the
fallback for batches a columnar parser rejects. Every failure is reported with a stable
``reason`` (a counter label), never raised:

==================  ==========================================================
reason              meaning
==================  ==========================================================
``empty``           no value (tombstone) or only whitespace
``oversized``       value longer than ``max_message_bytes`` (checked by the caller)
``invalid_json``    not JSON (syntax error, not UTF-8)
``truncated``       JSON that ends early (cut message)
``not_an_object``   valid JSON whose top level is not an object
``avro_decode``     Avro bytes that do not match the writer schema, bad magic byte
``unknown_schema``  Confluent wire format whose schema id the registry cannot resolve
``undecodable``     the decoder raised on it (a bug met by this value: logged with the
                    error; :func:`safe_decode` finds the values that make it raise)
==================  ==========================================================

Decoders are registered by format name (``json``, ``avro``); registering a name twice
raises.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from dqpulse.records import ColumnBatch
from dqpulse.spec import DatasetSpec

log = logging.getLogger(__name__)

BAD_REASONS = (
    "empty", "oversized", "invalid_json", "truncated", "not_an_object", "avro_decode",
    "unknown_schema", "undecodable",
)


@dataclass(slots=True)
class DecodeFailure:
    """One value that could not be decoded: its position in the input and why."""

    index: int
    reason: str
    detail: str = ""


@dataclass(slots=True)
class DecodeResult:
    """Decoded records (``batch``, one row per entry of ``rows``) and the failures.

    ``rows[i]`` is the position in the decoder's input of the batch's row ``i``.
    """

    batch: ColumnBatch
    rows: npt.NDArray[np.int64]
    failures: list[DecodeFailure] = field(default_factory=list)


class Decoder(Protocol):
    """Decodes a sequence of message values; must not raise on bad input."""

    format: str

    def decode(self, values: Sequence[bytes],
               sizes: npt.NDArray[np.int64] | None = None) -> DecodeResult:
        """``sizes``: ``len`` of each value, where the caller has already computed them."""
        ...


def decode_each(values: Sequence[bytes],
                decode_one: Callable[[bytes], dict[str, Any] | DecodeFailure]
                ) -> tuple[list[dict[str, Any]], npt.NDArray[np.int64], list[DecodeFailure]]:
    """The per-record path: each value decoded on its own. Returns the records, their
    positions in ``values`` and the failures (with their positions)."""
    failures: list[DecodeFailure] = []
    records: list[dict[str, Any]] = []
    good: list[int] = []
    for index, value in enumerate(values):
        decoded = decode_one(value)
        if isinstance(decoded, DecodeFailure):
            decoded.index = index
            failures.append(decoded)
        else:
            records.append(decoded)
            good.append(index)
    return records, np.asarray(good, dtype=np.int64), failures


def no_records(rows: npt.NDArray[np.int64], sizes: npt.NDArray[np.int64],
               failures: list[DecodeFailure]) -> DecodeResult:
    """The result of a batch in which no value could be decoded."""
    batch = ColumnBatch.empty()
    batch.sizes, batch.timestamps = sizes, np.zeros(len(rows), dtype=np.float64)
    return DecodeResult(batch, rows, failures)


def safe_decode(decoder: Decoder, values: Sequence[bytes],
                sizes: npt.NDArray[np.int64] | None = None) -> DecodeResult:
    """``decoder.decode(values, sizes)``, which must not raise. When it raises anyway (a
    bug met by some value: one poison record would otherwise stop the worker, and again
    after every restart), the values that make it raise are found by halving the batch,
    reported as ``undecodable`` with the error, and the others are decoded together. If
    only the whole lot raises, each of them is reported: counted and dead-lettered, not
    lost, and the partition goes on."""
    try:
        return decoder.decode(values, sizes)
    except MemoryError:
        raise  # no value's fault: the worker restarts and replays from its checkpoint
    except Exception as exc:  # noqa: BLE001 - contained below, value by value
        log.error("decoding a batch of %d values raised; finding the values that do",
                  len(values), exc_info=exc)
    failures: dict[int, str] = {}
    _find_raising(decoder, values, list(range(len(values))), failures)
    good = [i for i in range(len(values)) if i not in failures]
    result = None
    if good:
        try:
            result = decoder.decode([values[i] for i in good])
        except MemoryError:
            raise
        except Exception as exc:  # noqa: BLE001 - only together: report every one
            failures.update(dict.fromkeys(good, _detail(exc)))
    found = [DecodeFailure(i, "undecodable", detail) for i, detail in failures.items()]
    if result is None:
        rows = np.zeros(0, dtype=np.int64)
        return no_records(rows, rows, sorted(found, key=lambda f: f.index))
    positions = np.asarray(good, dtype=np.int64)
    found += [DecodeFailure(int(positions[f.index]), f.reason, f.detail)
              for f in result.failures]
    return DecodeResult(result.batch, positions[result.rows],
                        sorted(found, key=lambda f: f.index))


def _find_raising(decoder: Decoder, values: Sequence[bytes], positions: list[int],
                  found: dict[int, str]) -> None:
    try:
        decoder.decode([values[i] for i in positions])
    except MemoryError:
        raise
    except Exception as exc:  # noqa: BLE001 - narrowed down to single values
        if len(positions) == 1:
            found[positions[0]] = _detail(exc)
            return
        middle = len(positions) // 2
        _find_raising(decoder, values, positions[:middle], found)
        _find_raising(decoder, values, positions[middle:], found)


def _detail(exc: BaseException) -> str:
    return f"the decoder raised {type(exc).__name__}: {exc}"[:300]


DecoderFactory = Callable[..., Decoder]
_REGISTRY: dict[str, DecoderFactory] = {}


def register_decoder(name: str, factory: DecoderFactory) -> None:
    """Register a decoder factory under a format name; a name registers once."""
    if name in _REGISTRY:
        raise ValueError(f"decoder {name!r} is already registered")
    _REGISTRY[name] = factory


def registered_decoders() -> dict[str, DecoderFactory]:
    return dict(_REGISTRY)


def decoder_for(spec: DatasetSpec, **options: Any) -> Decoder:
    """The decoder for ``spec.format``; ``options`` go to its factory (e.g. a schema lookup)."""
    from dqpulse.decode import avro as _avro  # noqa: F401  (registers "avro")
    from dqpulse.decode import json as _json  # noqa: F401  (registers "json")

    try:
        factory = _REGISTRY[spec.format]
    except KeyError:
        raise ValueError(f"no decoder for format {spec.format!r}") from None
    return factory(spec, **options)
