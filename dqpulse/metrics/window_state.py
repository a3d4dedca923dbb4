"""The state of one dataset window over all metric families, and its finalization.

``WindowState`` bundles one state per registered family (``dqpulse.metrics.base``).
``merge`` works **in place** and returns ``self``; ``clone()`` copies. Paths beyond
``MAX_FIELDS`` per window state are not tracked (declared fields, key, label and fairness
fields first); ``schema.untracked_fields`` counts them.

``finalize_window`` turns a merged state into metric points, comparing it with the
``baseline`` bytes returned for the previous window (``None`` for the first window):
the previous non-empty window's drift sketches, the known schema with each field's presence
(``dqpulse.metrics.schema.track_schema``), and the sketches of up to
``TRAILING_WINDOWS`` recent non-empty windows, merged on use as the trailing baseline.
Drift metrics vs the previous window are ``distribution.<psi|ks|js|wasserstein|linf|chi2>``;
vs the trailing baseline ``distribution.<name>_baseline``.
An empty window (no records) keeps the baseline as it was and reports 0 schema changes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from dqpulse.metrics import sketches
from dqpulse.metrics.base import FAMILIES, FamilyState, ratio
from dqpulse.metrics.codec import BlobTable, pack, unpack
from dqpulse.metrics.completeness import CompletenessState
from dqpulse.metrics.distribution import DistributionState
from dqpulse.metrics.drift import categorical_drift, numeric_drift
from dqpulse.metrics.freshness import FreshnessState
from dqpulse.metrics.schema import SchemaState, track_schema
from dqpulse.metrics.segments import SegmentState
from dqpulse.metrics.uniqueness import UniquenessState
from dqpulse.metrics.validity import ValidityState
from dqpulse.metrics.volume import VolumeState
from dqpulse.records import SHARE_OF, ColumnBatch, MetricPoint
from dqpulse.spec import DatasetSpec

MAX_FIELDS = 500
TRAILING_WINDOWS = 8
SEGMENT_WINDOWS = 3  # non-empty windows whose segment states make the reference


class WindowState:
    """Mergeable state of one dataset window: one state per metric family."""

    def __init__(self, spec: DatasetSpec, families: dict[str, FamilyState]) -> None:
        self.spec = spec
        self.families = families

    @classmethod
    def zero(cls, spec: DatasetSpec) -> WindowState:
        return cls(spec, {name: family.zero(spec) for name, family in FAMILIES.items()})

    # typed accessors for the families finalize combines
    @property
    def volume(self) -> VolumeState:
        return self.families["volume"]  # type: ignore[return-value]

    @property
    def schema(self) -> SchemaState:
        return self.families["schema"]  # type: ignore[return-value]

    @property
    def completeness(self) -> CompletenessState:
        return self.families["completeness"]  # type: ignore[return-value]

    @property
    def distribution(self) -> DistributionState:
        return self.families["distribution"]  # type: ignore[return-value]

    @property
    def validity(self) -> ValidityState:
        return self.families["validity"]  # type: ignore[return-value]

    @property
    def uniqueness(self) -> UniquenessState:
        return self.families["uniqueness"]  # type: ignore[return-value]

    @property
    def segments(self) -> SegmentState:
        return self.families["segments"]  # type: ignore[return-value]

    @property
    def freshness(self) -> FreshnessState:
        return self.families["freshness"]  # type: ignore[return-value]

    def _bounded(self, batch: ColumnBatch) -> ColumnBatch:
        known = self.schema.type_counts
        new = [path for path in batch.types if path not in known]
        room = MAX_FIELDS - len(known)
        if len(new) <= room:
            return batch
        important = set(self.spec.fields) | {
            p for p in (self.spec.key, self.spec.label, self.spec.event_time) if p}
        if self.spec.fairness is not None:
            important |= {self.spec.fairness.group, self.spec.fairness.outcome}
        new.sort(key=lambda p: (p not in important, p))
        dropped = set(new[max(room, 0):])
        self.schema.note_untracked(sorted(dropped))
        keep = [p for p in batch.types if p not in dropped]
        return ColumnBatch(
            frame=batch.frame.select(keep), types={p: batch.types[p] for p in keep},
            sizes=batch.sizes, timestamps=batch.timestamps,
            other_types={p: m for p, m in batch.other_types.items() if p not in dropped},
            event_times=batch.event_times, ingest_time=batch.ingest_time,
            partition=batch.partition, offsets=batch.offsets,
            key_prefixes=batch.key_prefixes,
        )

    def update(self, batch: ColumnBatch) -> None:
        """Add records that all belong to this window (``batch.event_times`` set)."""
        batch = self._bounded(batch)
        for state in self.families.values():
            state.update(batch)

    def add_late(self, count: int) -> None:
        self.volume.add_late(count)

    def merge(self, other: WindowState) -> WindowState:
        """Add ``other`` into this state, in place; returns ``self``."""
        for name, state in other.families.items():
            if name in self.families:
                self.families[name].merge(state)
            else:
                self.families[name] = state.clone()
        return self

    def clone(self) -> WindowState:
        return WindowState.from_bytes(self.spec, self.to_bytes())

    def to_bytes(self) -> bytes:
        names = sorted(self.families)
        return pack({"families": names}, [self.families[n].to_bytes() for n in names],
                    checked=True)

    @classmethod
    def from_bytes(cls, spec: DatasetSpec, data: bytes) -> WindowState:
        header, blobs = unpack(data)
        families: dict[str, FamilyState] = {}
        for name, blob in zip(header["families"], blobs, strict=True):
            if name in FAMILIES:  # a family removed since the state was written is dropped
                families[name] = FAMILIES[name].from_bytes(spec, blob)
        for name, family in FAMILIES.items():
            families.setdefault(name, family.zero(spec))
        # registration order: a family may read what an earlier one left in batch.cache
        return cls(spec, {name: families[name] for name in FAMILIES})

    def observed_schema(self) -> dict[str, list[str]]:
        return self.schema.observed()


def merge_partials(spec: DatasetSpec, blobs: Sequence[bytes]) -> WindowState:
    """Merge the partial states of all partitions of one window (none -> the zero state)."""
    merged = WindowState.zero(spec)
    for blob in blobs:
        merged.merge(WindowState.from_bytes(spec, blob))
    return merged


@dataclass(slots=True)
class FinalizeContext:
    window_start: float
    window_end: float
    now: float
    last_record_at: float | None
    consumer_lag_records: int | None


@dataclass(slots=True)
class WindowResult:
    points: list[MetricPoint]
    baseline: bytes
    observed_schema: dict[str, list[str]] = field(default_factory=dict)
    #: the window's segment states and the per-window average of the previous
    #: ``SEGMENT_WINDOWS`` non-empty windows' (None before the first), for attribution
    segments: SegmentState | None = None
    segment_reference: SegmentState | None = None


def diff_schema(previous: dict[str, list[str]] | None,
                current: dict[str, list[str]]) -> dict[str, Any]:
    """Added and removed paths, and paths whose (non-empty) type sets changed.

    >>> diff = diff_schema({"a": ["integer"], "b": ["string"]}, {"a": ["number"], "c": []})
    >>> diff["added"], diff["removed"], diff["type_changed"]
    (['c'], ['b'], {'a': {'from': ['integer'], 'to': ['number']}})
    """
    if previous is None:
        return {"added": [], "removed": [], "type_changed": {}}
    changed = {
        path: {"from": previous[path], "to": types}
        for path, types in sorted(current.items())
        if path in previous and previous[path] and types and previous[path] != types
    }
    return {
        "added": sorted(set(current) - set(previous)),
        "removed": sorted(set(previous) - set(current)),
        "type_changed": changed,
    }


# -- baseline ----------------------------------------------------------------------------
# A window's drift summary: path -> ("numeric", kll) | ("categorical", items, total).
_Summary = dict[str, tuple[Any, ...]]


def _summary(state: DistributionState) -> _Summary:
    summary: _Summary = {}
    for path, dist in state.fields.items():
        if dist.kll is not None and not dist.kll.is_empty():
            summary[path] = ("numeric", dist.kll)
        elif dist.frequent is not None and dist.categorical and (dist.strings or dist.booleans):
            summary[path] = ("categorical", sketches.frequent_items(dist.frequent),
                             dist.categorical)
    return summary


def _pack_baseline(schema: dict[str, list[str]] | None, windows: list[_Summary],
                   segments: list[bytes], presence: dict[str, list[float]]) -> bytes:
    blobs = BlobTable()
    encoded = []
    for summary in windows:
        entry: dict[str, Any] = {}
        for path, item in summary.items():
            if item[0] == "numeric":
                entry[path] = ["numeric", blobs.add(sketches.kll_bytes(item[1]))]
            else:
                entry[path] = ["categorical", [list(i) for i in item[1]], item[2]]
        encoded.append(entry)
    segment_blobs = [blobs.add(blob) for blob in segments]
    return pack({"schema": schema, "windows": encoded, "segments": segment_blobs,
                 "presence": presence}, blobs.blobs, checked=True)


def _unpack_baseline(data: bytes) -> tuple[dict[str, list[str]] | None, list[_Summary],
                                            list[bytes], dict[str, list[float]]]:
    header, blobs = unpack(data)
    windows: list[_Summary] = []
    for entry in header["windows"]:
        summary: _Summary = {}
        for path, item in entry.items():
            if item[0] == "numeric":
                summary[path] = ("numeric", sketches.kll_load(blobs[item[1]]))
            else:
                summary[path] = ("categorical", [(str(i), float(c)) for i, c in item[1]],
                                 int(item[2]))
        windows.append(summary)
    return (header["schema"], windows, [blobs[i] for i in header.get("segments", [])],
            {path: list(entry) for path, entry in (header.get("presence") or {}).items()})


def _segment_reference(spec: DatasetSpec, blobs: list[bytes]) -> SegmentState | None:
    """The per-window average of earlier windows' segment states."""
    if not blobs:
        return None
    merged = SegmentState.zero(spec)
    for blob in blobs:
        merged.merge(SegmentState.from_bytes(spec, blob))
    return merged.scaled(1.0 / len(blobs))


def _trailing(windows: list[_Summary]) -> _Summary:
    merged: _Summary = {}
    for summary in windows:
        for path, item in summary.items():
            have = merged.get(path)
            if have is not None and have[0] != item[0]:
                continue
            if item[0] == "numeric":
                kll = sketches.new_kll() if have is None else have[1]
                kll.merge(item[1])
                merged[path] = ("numeric", kll)
            else:
                counts: dict[str, float] = {} if have is None else dict(have[1])
                for value, count in item[1]:
                    counts[value] = counts.get(value, 0.0) + count
                total = item[2] + (0 if have is None else have[2])
                merged[path] = ("categorical", sorted(counts.items()), total)
    return merged


#: A categorical field has ``distribution.unseen_share`` while its trailing windows had at
#: most this many distinct values (countries, statuses, codes; not ids or free text).
UNSEEN_MAX_VALUES = 64


def _exact(items: list[tuple[str, float]], total: float) -> bool:
    """Whether a frequent-values sketch kept every value: its counts add up to its total."""
    return abs(sum(count for _, count in items) - total) <= 1e-6 * max(total, 1.0)


def _unseen_points(current: _Summary, reference: _Summary) -> list[MetricPoint]:
    """``distribution.unseen_share`` per categorical field: the share of the window's
    values that none of the trailing windows' frequent values is (a category explosion:
    half the records with values never seen before, however few records a window has).
    Only for a field with a closed set of values: at most :data:`UNSEEN_MAX_VALUES`
    distinct ones in the trailing windows, each window's sketch exact (its values' counts
    add up to its total). Identifiers and free text have none: their sketches keep the
    most frequent ~190 values, so which values a window "had" is noise (an email field's
    share swung between 0.01 and 1.0 on the incident benchmark). Values of the window that
    its sketch did not keep (beyond the ``TOP_ITEMS_PER_BATCH`` most frequent of a poll
    batch, so a batch of more distinct values than a closed set has) count as unseen.

    >>> cur = {"c": ("categorical", [("DE", 6.0), ("XQ1", 3.0), ("ZZ9", 1.0)], 10)}
    >>> ref = {"c": ("categorical", [("DE", 50.0), ("FR", 30.0)], 80)}
    >>> point = _unseen_points(cur, ref)[0]
    >>> point.value, point.extra
    (0.4, {'values': 10.0})

    The share is of the field's values, not of the window's records: ``extra`` carries
    their number (:data:`SHARE_OF`), which the detector weighs as counting noise (1 value
    of a sparse field's 2 is no 50 % of a window's 90 records).
    """
    points = []
    for path, item in sorted(current.items()):
        ref = reference.get(path)
        if item[0] != "categorical" or ref is None or ref[0] != "categorical" or not item[2]:
            continue
        if len(ref[1]) > UNSEEN_MAX_VALUES or not _exact(ref[1], ref[2]):
            continue
        known = {value for value, _ in ref[1]}
        kept = sum(count for _, count in item[1])
        unseen = sum(count for value, count in item[1] if value not in known)
        unseen += max(0.0, item[2] - kept)
        points.append(MetricPoint("distribution.unseen_share",
                                  min(1.0, max(0.0, unseen / item[2])), path,
                                  extra={SHARE_OF: float(item[2])}))
    return points


def _drift_points(current: _Summary, reference: _Summary, suffix: str) -> list[MetricPoint]:
    points = []
    for path, item in sorted(current.items()):
        ref = reference.get(path)
        if ref is None or ref[0] != item[0]:
            continue
        if item[0] == "numeric":
            scores = numeric_drift(item[1], ref[1])
        else:
            scores = categorical_drift(item[1], item[2], ref[1], ref[2])
        for name, value in scores.items():
            points.append(MetricPoint(f"distribution.{name}{suffix}", value, path))
    return points


# -- finalize ----------------------------------------------------------------------------
def finalize_window(spec: DatasetSpec, state: WindowState, ctx: FinalizeContext,
                    baseline: bytes | None) -> WindowResult:
    """Metric points of a final (merged) window, and the baseline for the next window."""
    points: list[MetricPoint] = []
    for name in sorted(state.families):
        points += state.families[name].points()

    # freshness from the context
    since = None if ctx.last_record_at is None else max(0.0, ctx.window_end - ctx.last_record_at)
    points.append(MetricPoint("freshness.seconds_since_last_record", since))
    lag = None if ctx.consumer_lag_records is None else float(ctx.consumer_lag_records)
    points.append(MetricPoint("freshness.consumer_lag_records", lag))

    previous_schema, windows, segment_blobs, presence = (
        (None, [], [], {}) if baseline is None else _unpack_baseline(baseline))
    segment_reference = _segment_reference(spec, segment_blobs)
    observed = state.observed_schema()
    records = state.volume.records
    has_records = records > 0

    # schema versus the known one (the fields of earlier windows, sparse ones included)
    if has_records:
        known, diff, presence = track_schema(previous_schema, presence, observed,
                                             state.schema.present(), records)
    else:
        known, diff = previous_schema or {}, diff_schema(None, {})
    added = {path: "|".join([*(observed.get(path) or []),
                             *(["null"] if state.completeness.present.get(path, 0) < records
                               else [])]) or "null"
             for path in diff["added"]}
    removed = {path: "|".join(diff["removed"][path]) or "null" for path in diff["removed"]}
    points += [
        MetricPoint("schema.new_fields", float(len(diff["added"])),
                    extra={"paths": diff["added"], "fields": added}),
        MetricPoint("schema.removed_fields", float(len(diff["removed"])),
                    extra={"paths": list(diff["removed"]), "fields": removed}),
        MetricPoint("schema.type_changes", float(len(diff["type_changed"])),
                    extra={"changes": diff["type_changed"]}),
    ]
    type_violations = sum(
        state.validity.counts.get(f"{path}:type", [0, 0])[0] for path in spec.fields)
    required = sum(state.completeness.required_violations(path)
                   for path, f in spec.fields.items() if f.required)
    points.append(MetricPoint("schema.contract_violations", float(type_violations + required),
                              extra={"type": type_violations, "required": required}))

    # drift
    current = _summary(state.distribution)
    if windows:
        points += _drift_points(current, windows[-1], "")
        trailing = _trailing(windows)
        points += _drift_points(current, trailing, "_baseline")
        points += _unseen_points(current, trailing)

    points += _quality_points(spec, state, since)

    if has_records:
        windows = [*windows, current][-TRAILING_WINDOWS:]
        previous_schema = known
        segment_blobs = [*segment_blobs, state.segments.to_bytes()][-SEGMENT_WINDOWS:]
    return WindowResult(points=points,
                        baseline=_pack_baseline(previous_schema, windows, segment_blobs,
                                                presence),
                        observed_schema=known if has_records else {},
                        segments=state.segments,
                        segment_reference=segment_reference)


def _quality_points(spec: DatasetSpec, state: WindowState,
                    since: float | None) -> list[MetricPoint]:
    records = state.volume.records
    completeness = state.completeness
    paths = sorted(spec.fields) or sorted(completeness.present)
    if records and paths:
        present = sum(min(completeness.present.get(p, 0), records) for p in paths)
        completeness_score: float | None = present / (records * len(paths))
    else:
        completeness_score = None

    violations, checks = state.validity.totals()
    validity_score = None if not checks else 1.0 - violations / checks

    duplicate = state.uniqueness.duplicate_ratio()
    uniqueness_score = None if duplicate is None else 1.0 - duplicate

    timeliness: float | None
    if spec.freshness_sla is not None:
        within = state.freshness.share_within(spec.freshness_sla)
        if within is not None:
            timeliness = within
        else:
            timeliness = None if since is None else float(since <= spec.freshness_sla)
    else:
        arrived = records + state.volume.late_records
        timeliness = ratio(records, arrived)

    dominant, values = state.schema.consistency()
    consistency = None if not values else dominant / values
    return [
        MetricPoint("quality.completeness", completeness_score),
        MetricPoint("quality.validity", validity_score),
        MetricPoint("quality.uniqueness", uniqueness_score),
        MetricPoint("quality.timeliness", timeliness),
        MetricPoint("quality.consistency", consistency),
    ]
