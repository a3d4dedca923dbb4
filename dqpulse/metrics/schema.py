"""Schema: the field paths and value types observed in a window.

``observed()`` maps each tracked dotted path to the sorted type names of its non-null
values (a path seen only as null maps to ``[]``). Comparisons with the previous window
(``schema.new_fields`` / ``removed_fields`` / ``type_changes``) and the contract check
(``schema.contract_violations``) are made at finalize (``dqpulse.metrics.window_state``).
Paths beyond the per-dataset cap are not tracked; ``schema.untracked_fields`` counts the
distinct ones seen (names kept up to ``MAX_OVERFLOW_NAMES``).
"""

from __future__ import annotations

from dqpulse.metrics.base import FamilyState, register_family
from dqpulse.metrics.batchstats import column_stats
from dqpulse.metrics.codec import pack, unpack
from dqpulse.records import ColumnBatch, MetricPoint
from dqpulse.spec import DatasetSpec

MAX_OVERFLOW_NAMES = 1000


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
