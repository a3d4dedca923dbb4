"""Completeness per field: null-or-missing ratio, empty-string ratio, required violations.

Columnar decoding cannot tell a JSON ``null`` from a missing key, so both count as
missing: ``completeness.null_ratio`` is (records without a non-null value) / records, and
``completeness.required_violations`` counts records where a ``required`` declared field is
null or missing. A field first seen in a later batch counts as missing in the earlier ones.
"""

from __future__ import annotations

from dqpulse.metrics.base import FamilyState, ratio, register_family
from dqpulse.metrics.batchstats import column_stats
from dqpulse.metrics.codec import pack, unpack
from dqpulse.records import ColumnBatch, MetricPoint
from dqpulse.spec import DatasetSpec


@register_family
class CompletenessState(FamilyState):
    family = "completeness"

    def __init__(self, spec: DatasetSpec) -> None:
        super().__init__(spec)
        self.records = 0
        self.present: dict[str, int] = {}
        self.empty: dict[str, int] = {}  # only for fields that held strings

    def update(self, batch: ColumnBatch) -> None:
        self.records += batch.n
        stats = column_stats(batch)
        for path, type_name in batch.types.items():
            present = batch.n - stats[path].nulls
            for mask in batch.other_types.get(path, {}).values():
                present += int(mask.sum())
            self.present[path] = self.present.get(path, 0) + present
            if type_name == "string":
                self.empty[path] = self.empty.get(path, 0) + int(stats[path].empty)

    def merge(self, other: CompletenessState) -> CompletenessState:
        self.records += other.records
        for path, count in other.present.items():
            self.present[path] = self.present.get(path, 0) + count
        for path, count in other.empty.items():
            self.empty[path] = self.empty.get(path, 0) + count
        return self

    def to_bytes(self) -> bytes:
        return pack({"records": self.records, "present": self.present, "empty": self.empty})

    @classmethod
    def from_bytes(cls, spec: DatasetSpec, data: bytes) -> CompletenessState:
        header, _ = unpack(data)
        state = cls(spec)
        state.records = header["records"]
        state.present = dict(header["present"])
        state.empty = dict(header["empty"])
        return state

    def paths(self) -> list[str]:
        return sorted(set(self.present) | set(self.spec.fields))

    def null_ratio(self, path: str) -> float | None:
        return ratio(self.records - self.present.get(path, 0), self.records)

    def required_violations(self, path: str) -> int:
        return self.records - self.present.get(path, 0)

    def points(self) -> list[MetricPoint]:
        points: list[MetricPoint] = []
        for path in self.paths():
            points.append(MetricPoint("completeness.null_ratio", self.null_ratio(path), path))
            if path in self.empty:
                present = self.present.get(path, 0)
                points.append(
                    MetricPoint("completeness.empty_ratio", ratio(self.empty[path], present), path)
                )
        for path, field_spec in sorted(self.spec.fields.items()):
            if field_spec.required:
                points.append(MetricPoint(
                    "completeness.required_violations",
                    float(self.required_violations(path)), path,
                ))
        return points
