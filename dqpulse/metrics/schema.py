"""Schema: the field paths and value types observed in a window.

``observed()`` maps each tracked dotted path to the sorted type names of its non-null
values (a path seen only as null maps to ``[]``). Comparisons with the previous window
(``schema.new_fields`` / ``removed_fields`` / ``type_changes``) and the contract check
(``schema.contract_violations``) are made at finalize (``dqpulse.metrics.window_state``),
against the data set's *known* schema (:func:`track_schema`): a field that carries a value
in only some records (an ``error_code`` set on failures) is not removed by a window that
happens to have none of them, only by an absence that its usual share makes unlikely.
Paths beyond the per-dataset cap are not tracked; ``schema.untracked_fields`` counts the
distinct ones seen (names kept up to ``MAX_OVERFLOW_NAMES``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from dqpulse.metrics.base import FamilyState, register_family
from dqpulse.metrics.batchstats import column_stats
from dqpulse.metrics.codec import pack, unpack
from dqpulse.records import ColumnBatch, MetricPoint
from dqpulse.spec import DatasetSpec

MAX_OVERFLOW_NAMES = 1000

#: A known field is reported removed once the records since it last carried a value would
#: all lack it with at most this probability (1e-6) at the share of records that carried
#: one before (the smaller of a short and a long memory of it, below). Records of one
#: producer come in runs, so the chance is taken well below the detectors' 1e-4.
REMOVED_LOG_P = math.log(1e-6)
#: Per-window decay of the short and long memories of a field's share of records with a
#: value (about 10 and 200 non-empty windows).
PRESENCE_DECAY = (0.9, 0.995)
#: At most this many known fields: beyond it the absent ones with the smallest share are
#: forgotten, unreported (a map keyed by ids makes new paths every window; they are
#: counted as new, as they are, and a forgotten one that returns is new again).
MAX_KNOWN_FIELDS = 1000
_SHARE_MAX = 1.0 - 1e-9


@register_family
class SchemaState(FamilyState):
    family = "schema"

    def __init__(self, spec: DatasetSpec) -> None:
        super().__init__(spec)
        self.type_counts: dict[str, dict[str, int]] = {}
        self.overflow: set[str] = set()

    def update(self, batch: ColumnBatch) -> None:
        stats = column_stats(batch)
        for path, type_name in batch.types.items():
            counts = self.type_counts.setdefault(path, {})
            if type_name != "null":
                present = batch.n - stats[path].nulls
                if present:
                    counts[type_name] = counts.get(type_name, 0) + present
            for other, mask in batch.other_types.get(path, {}).items():
                count = int(mask.sum())
                if count:
                    counts[other] = counts.get(other, 0) + count

    def note_untracked(self, paths: list[str]) -> None:
        for path in paths:
            if len(self.overflow) >= MAX_OVERFLOW_NAMES:
                break
            self.overflow.add(path)

    def merge(self, other: SchemaState) -> SchemaState:
        for path, counts in other.type_counts.items():
            mine = self.type_counts.setdefault(path, {})
            for type_name, count in counts.items():
                mine[type_name] = mine.get(type_name, 0) + count
        for path in sorted(other.overflow):
            if len(self.overflow) >= MAX_OVERFLOW_NAMES:
                break
            self.overflow.add(path)
        return self

    def to_bytes(self) -> bytes:
        return pack({"types": self.type_counts, "overflow": sorted(self.overflow)})

    @classmethod
    def from_bytes(cls, spec: DatasetSpec, data: bytes) -> SchemaState:
        header, _ = unpack(data)
        state = cls(spec)
        state.type_counts = {p: dict(c) for p, c in header["types"].items()}
        state.overflow = set(header["overflow"])
        return state

    def observed(self) -> dict[str, list[str]]:
        """Paths with at least one non-null value in the window, with their type sets.

        A column that exists in a poll batch only because other records of the batch (of
        another window) carry it has no values here, so it is not part of this window's
        schema; neither is a field that is null in every record.
        """
        return {path: sorted(t for t, n in counts.items() if n)
                for path, counts in sorted(self.type_counts.items())
                if any(counts.values())}

    def present(self) -> dict[str, int]:
        """Records with a non-null value, per path."""
        return {path: sum(counts.values()) for path, counts in self.type_counts.items()}

    def consistency(self) -> tuple[int, int]:
        """(values of their field's most frequent type, all non-null values)."""
        dominant = total = 0
        for counts in self.type_counts.values():
            if counts:
                dominant += max(counts.values())
                total += sum(counts.values())
        return dominant, total

    def points(self) -> list[MetricPoint]:
        return [
            MetricPoint("schema.observed_fields", float(len(self.observed()))),
            MetricPoint("schema.untracked_fields", float(len(self.overflow)),
                        extra={"sample": sorted(self.overflow)[:20]}),
        ]


def _share(entry: Sequence[float]) -> float:
    short = entry[0] / entry[1] if entry[1] > 0 else 1.0
    long = entry[2] / entry[3] if entry[3] > 0 else 1.0
    return min(short, long, _SHARE_MAX)


def track_schema(known: Mapping[str, list[str]] | None,
                 presence: Mapping[str, Sequence[float]],
                 observed: Mapping[str, list[str]], present: Mapping[str, int],
                 records: int) -> tuple[dict[str, list[str]], dict[str, Any],
                                        dict[str, list[float]]]:
    """The known schema after a non-empty window, its changes, and the fields' presence.

    ``known`` is the schema before the window (None before the first), ``observed`` the
    window's (paths with a value, and their types), ``present`` the records with a value
    per path, ``records`` the window's records. ``presence`` holds per known path
    ``[short present, short records, long present, long records, log p, share]``: decayed
    counts of records with a value and of all records, and, while the path is absent, the
    log probability of that absence at ``share``, its share when the absence began.

    A path is *added* when it was not known, and *removed* when its absence becomes less
    likely than :data:`REMOVED_LOG_P`; until then it stays known with its last types (and
    returns without being new). A field in every record is removed by the first window
    without it, as before; one in 5 % of the records by about 270 records without it.

    >>> known, diff, presence = track_schema(None, {}, {"a": ["integer"], "e": ["string"]},
    ...                                      {"a": 100, "e": 5}, 100)
    >>> diff["added"], sorted(known)
    ([], ['a', 'e'])
    >>> known, diff, presence = track_schema(known, presence, {"a": ["integer"]},
    ...                                      {"a": 100}, 100)
    >>> diff["removed"], sorted(known)   # 5 % of 100 records: 0 of them happens
    ({}, ['a', 'e'])
    >>> known, diff, presence = track_schema(known, presence, {"e": ["string"]},
    ...                                      {"e": 1}, 100)
    >>> diff["removed"], diff["added"]
    ({'a': ['integer']}, [])
    """
    effective: dict[str, list[str]] = {}
    kept: dict[str, list[float]] = {}
    added: list[str] = []
    removed: dict[str, list[str]] = {}
    changed: dict[str, dict[str, list[str]]] = {}
    short, long = PRESENCE_DECAY
    for path, types in observed.items():
        before = None if known is None else known.get(path)
        if known is not None and path not in known:
            added.append(path)
        elif before and types and before != types:
            changed[path] = {"from": list(before), "to": types}
        n = float(present.get(path, 0))
        entry = presence.get(path)
        if entry is None or known is None or path not in known:
            kept[path] = [n, float(records), n, float(records), 0.0, 1.0]
        else:
            kept[path] = [entry[0] * short + n, entry[1] * short + records,
                          entry[2] * long + n, entry[3] * long + records, 0.0, 1.0]
        effective[path] = types
    for path, types in (known or {}).items():
        if path in observed:
            continue
        entry = presence.get(path)
        if entry is None:  # a baseline from before presence was kept: the field was in all
            entry = [1.0, 1.0, 1.0, 1.0, 0.0, _SHARE_MAX]
        share = entry[5] if entry[4] < 0.0 else _share(entry)
        log_p = entry[4] + records * math.log1p(-share)
        if log_p <= REMOVED_LOG_P:
            removed[path] = list(types)
            continue
        effective[path] = list(types)
        kept[path] = [entry[0] * short, entry[1] * short + records,
                      entry[2] * long, entry[3] * long + records, min(log_p, -1e-12), share]
    if len(effective) > MAX_KNOWN_FIELDS:
        absent = sorted((entry[5], path) for path, entry in kept.items() if entry[4] < 0.0)
        for _, path in absent[:len(effective) - MAX_KNOWN_FIELDS]:
            del effective[path], kept[path]
    diff = {"added": sorted(added), "removed": dict(sorted(removed.items())),
            "type_changed": dict(sorted(changed.items()))}
    return effective, diff, kept
