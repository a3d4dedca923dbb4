"""ML-data dimensions: label balance and group fairness.

With a ``label``: ``ml_data.class_share`` per class (``field="<label>=<class>"``, the
``MAX_CLASSES`` most frequent classes; the rest are pooled as ``__other__``),
``ml_data.minority_ratio`` (records of the rarest class / records of the most frequent
one, 1.0 = balanced) and ``ml_data.label_entropy`` (Shannon entropy of the class shares,
normalized by log(number of classes): 1.0 = uniform, 0.0 = one class).
With ``fairness: {group, outcome, positive}``: per group the positive rate
(outcome == positive); ``ml_data.parity_difference`` = max rate - min rate and
``ml_data.disparate_impact`` = min rate / max rate over groups (the rates per group are in
``extra["rates"]``). Groups beyond ``MAX_GROUPS`` are pooled as ``__other__``.
"""

from __future__ import annotations

import math

from dqpulse.metrics.base import FamilyState, register_family
from dqpulse.metrics.batchstats import value_counts
from dqpulse.metrics.codec import pack, unpack
from dqpulse.records import ColumnBatch, MetricPoint
from dqpulse.spec import DatasetSpec

MAX_CLASSES = 100
MAX_GROUPS = 50
OTHER = "__other__"
_BOOLEAN_CLASSES = frozenset({"true", "false"})


def label_text(value: object) -> str:
    """Class name of a label value: ``true``/``false``, integral numbers without ``.0``."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _bounded_add(counts: dict[str, int], key: str, amount: int, limit: int) -> None:
    if key in counts or len(counts) < limit:
        counts[key] = counts.get(key, 0) + amount
    else:
        counts[OTHER] = counts.get(OTHER, 0) + amount


@register_family
class MlDataState(FamilyState):
    family = "ml_data"

    def __init__(self, spec: DatasetSpec) -> None:
        super().__init__(spec)
        self.classes: dict[str, int] = {}
        self.groups: dict[str, list[int]] = {}  # group -> [records, positives]

    def update(self, batch: ColumnBatch) -> None:
        frame = batch.frame
        label = self.spec.label
        if label is not None and batch.types.get(label, "null") != "null":
            values, counts = value_counts(batch, label)
            for value, count in zip(values, counts, strict=True):
                _bounded_add(self.classes, label_text(value), int(count), MAX_CLASSES)
        fairness = self.spec.fairness
        if fairness is None:
            return
        if batch.types.get(fairness.group, "null") == "null":
            return
        if batch.types.get(fairness.outcome, "null") == "null":
            return
        positive = label_text(fairness.positive)
        # Records per group are the group column's value counts (shared with the
        # distribution family); positives per group, those of the rows whose outcome is
        # positive: cheaper than a group-by on (group, outcome).
        outcomes, _ = value_counts(batch, fairness.outcome)
        hits = [value for value in outcomes if label_text(value) == positive]
        groups, records = value_counts(batch, fairness.group)
        positives: dict[object, int] = {}
        if hits:
            group_column = frame.get_column(fairness.group)
            outcome_column = frame.get_column(fairness.outcome)
            chosen = group_column.filter(outcome_column.is_in(hits)).value_counts(name="n")
            positives = dict(zip(chosen.get_column(fairness.group).to_list(),
                                 chosen.get_column("n").to_list(), strict=True))
        for group, count in zip(groups, records, strict=True):
            key = label_text(group)
            if key not in self.groups and len(self.groups) >= MAX_GROUPS:
                key = OTHER
            counts = self.groups.setdefault(key, [0, 0])
            counts[0] += int(count)
            counts[1] += int(positives.get(group, 0))

    def merge(self, other: MlDataState) -> MlDataState:
        for key, count in other.classes.items():
            _bounded_add(self.classes, key, count, MAX_CLASSES)
        for key, (records, positives) in other.groups.items():
            if key not in self.groups and len(self.groups) >= MAX_GROUPS:
                key = OTHER
            counts = self.groups.setdefault(key, [0, 0])
            counts[0] += records
            counts[1] += positives
        return self

    def to_bytes(self) -> bytes:
        return pack({"classes": self.classes, "groups": self.groups})

    @classmethod
    def from_bytes(cls, spec: DatasetSpec, data: bytes) -> MlDataState:
        header, _ = unpack(data)
        state = cls(spec)
        state.classes = dict(header["classes"])
        state.groups = {g: list(c) for g, c in header["groups"].items()}
        return state

    def points(self) -> list[MetricPoint]:
        points: list[MetricPoint] = []
        label = self.spec.label
        total = sum(self.classes.values())
        if label is not None and total:
            shares = {c: n / total for c, n in self.classes.items()}
            for name, share in sorted(shares.items()):
                points.append(MetricPoint("ml_data.class_share", share, f"{label}={name}"))
            counts = dict(self.classes)
            if set(counts) <= _BOOLEAN_CLASSES:
                # a boolean label has two classes even when a window holds only one:
                # a window without any positive is maximally imbalanced, not balanced
                for name in _BOOLEAN_CLASSES:
                    counts.setdefault(name, 0)
            values = list(counts.values())
            points.append(MetricPoint("ml_data.minority_ratio", min(values) / max(values), label))
            entropy = -sum(s * math.log(s) for s in shares.values() if s > 0)
            classes = len(counts)
            normalized = entropy / math.log(classes) if classes > 1 else 0.0
            points.append(MetricPoint("ml_data.label_entropy", normalized, label))
        elif label is not None:
            points += [MetricPoint("ml_data.minority_ratio", None, label),
                       MetricPoint("ml_data.label_entropy", None, label)]
        fairness = self.spec.fairness
        if fairness is not None:
            rates = {g: p / n for g, (n, p) in sorted(self.groups.items()) if n}
            extra: dict[str, object] = {"rates": rates, "group": fairness.group}
            if len(rates) >= 2:
                high, low = max(rates.values()), min(rates.values())
                parity: float | None = high - low
                impact: float | None = low / high if high else None
            else:
                parity = impact = None
            points += [
                MetricPoint("ml_data.parity_difference", parity, fairness.group, extra),
                MetricPoint("ml_data.disparate_impact", impact, fairness.group, extra),
            ]
        return points
