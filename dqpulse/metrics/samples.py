"""Failing samples: a few offending records per window, with their partition and offset.

Kept for the series whose alerts people investigate by example:

- ``validity:<path>:<rule>``: records that break a declared rule,
- ``completeness:<path>``: records where a declared (or the key) field is null or missing,
- ``type:<path>:<type>``: records whose ``path`` holds a value of ``type`` (per type seen in
  the window; a type change is shown with the records of its new type),
- ``uniqueness``: records whose ``key`` repeats another key of the same poll batch of one
  partition (a repeat across partitions or poll batches is counted by the uniqueness
  family but has no sample: finding it would need every key of the window).

Within one process, the partitions of a data set share a :class:`SampleBoard`: once a
partition holds its full set of samples of a series in a window, the higher-numbered
partitions stop collecting that series for that window. A merge keeps the first samples
by partition and offset, so what they would have collected is never kept; a partition's
first samples by offset are final once it has them all (a replay collects the same).

Bounded: at most ``samples.per_window`` records per series and ``MAX_SERIES`` series per
window (type samples: ``TYPE_SAMPLES`` records for each of at most ``MAX_TYPE_SERIES``
field types), the first ones by partition and offset after a merge. A sample holds only the
declared fields, the key and the offending field, each value cut to
``samples.max_value_chars``; a path listed in ``samples.redact`` (or under it) is never
stored: it is named in the sample's ``redacted`` list instead. Validity samples are taken
only for rules the validity family found broken in the batch (``batch.cache``), so a
clean stream pays nothing for them.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt
import polars as pl

from dqpulse.metrics.base import FamilyState, register_family
from dqpulse.metrics.batchstats import ColumnStats, column_stats
from dqpulse.metrics.codec import pack, unpack
from dqpulse.metrics.validity import VIOLATIONS_CACHE, violation_mask
from dqpulse.records import ColumnBatch, MetricPoint
from dqpulse.spec import DatasetSpec

MAX_SERIES = 100
#: type samples (one key per field and type seen) have their own budget, so that a wide
#: record cannot crowd out the validity and completeness samples
MAX_TYPE_SERIES = 200
TYPE_SAMPLES = 2
Sample = dict[str, Any]


class SampleBoard:
    """Which series each window's lowest-numbered partitions hold in full (one data set,
    one process; the last ``windows`` window starts are remembered, older ones forgotten:
    a partition that finds nothing here collects as it would alone).

    >>> board = SampleBoard()
    >>> board.covered(60.0, "completeness:a", 3)
    False
    >>> board.mark(60.0, "completeness:a", 1)
    >>> board.covered(60.0, "completeness:a", 3), board.covered(60.0, "completeness:a", 0)
    (True, False)
    """

    def __init__(self, windows: int = 64) -> None:
        self.windows = windows
        self._full: dict[float, dict[str, int]] = {}

    def covered(self, start: float, key: str, partition: int) -> bool:
        """Whether a partition below ``partition`` holds every sample of ``key``."""
        full = self._full.get(start)
        return full is not None and full.get(key, partition) < partition

    def mark(self, start: float, key: str, partition: int) -> None:
        """``partition`` holds every sample of ``key`` in the window at ``start``."""
        full = self._full.get(start)
        if full is None:
            full = self._full[start] = {}
            if len(self._full) > self.windows:
                del self._full[min(self._full)]
        if full.get(key, partition) >= partition:
            full[key] = partition


def is_redacted(path: str, redact: list[str]) -> bool:
    """Whether ``path`` is a redacted path or lies under one.

    >>> is_redacted("card.number", ["card"]), is_redacted("cardholder", ["card"])
    (True, False)
    """
    return any(path == r or path.startswith(r + ".") for r in redact)


@register_family
class SamplesState(FamilyState):
    family = "samples"

    def __init__(self, spec: DatasetSpec) -> None:
        super().__init__(spec)
        self.samples: dict[str, list[Sample]] = {}
        self.limit = spec.samples.per_window
        self._shown = [p for p in dict.fromkeys([*spec.fields, *([spec.key] if spec.key else [])])
                       if not is_redacted(p, spec.samples.redact)]
        self._asked: list[tuple[str, npt.NDArray[np.int64], str | None]] = []
        # how many type / other series there are (None: count them again)
        self._series: dict[bool, int] | None = None
        self._board: SampleBoard | None = None
        self._start = 0.0
        self._partition = 0

    def share(self, board: SampleBoard, start: float, partition: int) -> None:
        """Take part in ``board`` as ``partition``'s state of the window at ``start``."""
        self._board, self._start, self._partition = board, start, partition
        for key in self.samples:  # restored from a checkpoint
            if self._room(key) <= 0:
                board.mark(start, key, partition)

    def _room(self, key: str) -> int:
        have = self.samples.get(key)
        typed = key.startswith("type:")
        limit = min(self.limit, TYPE_SAMPLES) if typed else self.limit
        if have is None:
            if self._series is None:
                typed_count = sum(1 for k in self.samples if k.startswith("type:"))
                self._series = {True: typed_count, False: len(self.samples) - typed_count}
            count = self._series[typed]
            return limit if count < (MAX_TYPE_SERIES if typed else MAX_SERIES) else 0
        return limit - len(have)

    def _wants(self, key: str) -> bool:
        """Whether this state would take samples of ``key`` now (room, not covered by a
        lower partition's full set)."""
        if self._room(key) <= 0:
            return False
        board = self._board
        return board is None or not board.covered(self._start, key, self._partition)

    def _value(self, value: Any) -> Any:
        if isinstance(value, str | bytes) and len(value) > self.spec.samples.max_value_chars:
            text = value if isinstance(value, str) else value.decode("utf-8", "replace")
            return text[:self.spec.samples.max_value_chars] + "…"
        return value

    def _take(self, key: str, batch: ColumnBatch, rows: npt.NDArray[np.int64],
              path: str | None) -> None:
        """Ask for the first records at ``rows`` as samples of ``key`` (as many as it has
        room for); :meth:`_gather` reads every asked record of the batch at once. Callers
        ask :meth:`_wants` first (before building a mask), so the board is not asked again."""
        room = self._room(key)
        if room <= 0 or not rows.size:
            return
        if key not in self.samples:  # counted against MAX_SERIES from now on
            self.samples[key] = []
            if self._series is not None:
                self._series[key.startswith("type:")] += 1
        self._asked.append((key, rows[:room], path))

    def _gather(self, batch: ColumnBatch) -> None:
        """Read the asked records in one selection of the batch's frame (a selection per
        series cost ~0.2 ms each: 40 per batch for 20 fields), then file them."""
        asked, self._asked = self._asked, []
        if not asked:
            return
        self._file(batch, asked)
        board = self._board
        if board is not None:
            for key, _, _ in asked:
                if self._room(key) <= 0:
                    board.mark(self._start, key, self._partition)

    def _file(self, batch: ColumnBatch,
              asked: list[tuple[str, npt.NDArray[np.int64], str | None]]) -> None:
        redact = self.spec.samples.redact
        columns = set(batch.frame.columns)
        shown = [p for p in self._shown if p in columns]
        extra = [path for _, _, path in asked if path is not None and path not in shown
                 and path in columns and not is_redacted(path, redact)]
        selected = [*shown, *dict.fromkeys(extra)]
        position = {p: i for i, p in enumerate(selected)}
        wanted = np.unique(np.concatenate([rows for _, rows, _ in asked]))
        lines: dict[int, tuple[Any, ...]] = {}
        textual: list[int] = []  # the shown columns whose values may need cutting
        if selected:
            frame = batch.frame.select(selected)[wanted]
            lines = dict(zip(wanted.tolist(), frame.iter_rows(), strict=True))
            textual = [i for i, dtype in enumerate(frame.dtypes[:len(shown)])
                       if dtype in (pl.String, pl.Binary)]
        # the shown part of a record, cut once per row: many series sample the same rows
        # (every field's type samples are the first records)
        cut: dict[int, dict[str, Any]] = {}
        for key, rows, path in asked:
            hidden = ([path] if path is not None and path not in shown
                      and is_redacted(path, redact) else [])
            own = position[path] if path is not None and path not in shown \
                and path in columns and not hidden else None
            out = self.samples[key]
            for row in rows.tolist():
                line = lines.get(row, ())
                part = cut.get(row)
                if part is None:
                    # the line goes on with the asked fields that are not shown
                    part = cut[row] = dict(zip(shown, line, strict=False))
                    for i in textual:
                        part[shown[i]] = self._value(line[i])
                record = dict(part)
                if own is not None:
                    record[selected[own]] = self._value(line[own])
                sample: Sample = {"partition": batch.partition,
                                  "offset": None if batch.offsets is None
                                  else int(batch.offsets[row]), "record": record}
                if hidden:
                    sample["redacted"] = hidden
                out.append(sample)

    def update(self, batch: ColumnBatch) -> None:
        if self.limit <= 0 or not batch.n:
            return
        broken: dict[str, int] = batch.cache.get(VIOLATIONS_CACHE, {})
        for key, count in broken.items():
            if count and self._wants(f"validity:{key}"):
                path, _, rule = key.rpartition(":")
                mask = violation_mask(batch, path, rule, self.spec.fields[path])
                self._take(f"validity:{key}", batch, np.flatnonzero(mask), path)
        stats = column_stats(batch)
        watched = [*self.spec.fields, *([self.spec.key] if self.spec.key else [])]
        columns = set(batch.frame.columns)
        # which records are null, for every column that needs it, in one polars call
        nullable = [p for p in dict.fromkeys([*watched, *batch.types]) if p in columns
                    and stats[p].nulls and (self._wants(f"completeness:{p}") or (
                        p in batch.types and self._wants(f"type:{p}:{batch.types[p]}")))]
        null_masks: dict[str, npt.NDArray[np.bool_]] = {}
        if nullable:
            matrix = batch.frame.select([pl.col(p).is_null() for p in nullable]).to_numpy()
            null_masks = {p: matrix[:, i] for i, p in enumerate(nullable)}
        for path in dict.fromkeys(watched):
            nulls = stats[path].nulls if path in stats else batch.n
            if nulls and self._wants(f"completeness:{path}"):
                if path in columns:
                    missing = null_masks[path].copy()
                    for mask in batch.other_types.get(path, {}).values():
                        missing &= ~mask
                    rows = np.flatnonzero(missing)
                else:
                    rows = np.arange(batch.n, dtype=np.int64)
                self._take(f"completeness:{path}", batch, rows, path)
        self._types(batch, stats, null_masks)
        self._duplicates(batch)
        self._gather(batch)

    def _types(self, batch: ColumnBatch, stats: dict[str, ColumnStats],
               null_masks: dict[str, npt.NDArray[np.bool_]]) -> None:
        for path, type_name in batch.types.items():
            if type_name != "null" and self._wants(f"type:{path}:{type_name}"):
                if not stats[path].nulls:  # every record holds the type: the first ones
                    rows = np.arange(min(batch.n, TYPE_SAMPLES), dtype=np.int64)
                else:
                    rows = np.flatnonzero(~null_masks[path])
                self._take(f"type:{path}:{type_name}", batch, rows, path)
            for other, mask in batch.other_types.get(path, {}).items():
                if self._wants(f"type:{path}:{other}"):
                    self._take(f"type:{path}:{other}", batch, np.flatnonzero(mask), path)

    def _duplicates(self, batch: ColumnBatch) -> None:
        key = self.spec.key
        if key is None or key not in batch.frame.columns or not self._wants("uniqueness"):
            return
        column = batch.frame.get_column(key)
        repeated = (column.is_duplicated() & column.is_not_null()).to_numpy()
        if repeated.any():
            self._take("uniqueness", batch, np.flatnonzero(repeated), key)

    def merge(self, other: SamplesState) -> SamplesState:
        for key, samples in other.samples.items():
            room = self._room(key)
            new = key not in self.samples
            if new and room <= 0:
                continue
            combined = [*self.samples.get(key, []), *samples]
            combined.sort(key=lambda s: (s["partition"], s["offset"] or 0))
            self.samples[key] = combined[:len(self.samples.get(key, [])) + max(room, 0)]
            if new and self._series is not None:
                self._series[key.startswith("type:")] += 1
        return self

    def to_bytes(self) -> bytes:
        return pack({"samples": self.samples})

    @classmethod
    def from_bytes(cls, spec: DatasetSpec, data: bytes) -> SamplesState:
        header, _ = unpack(data)
        state = cls(spec)
        state.samples = {k: list(v) for k, v in header["samples"].items()}
        state._series = None
        return state

    def points(self) -> list[MetricPoint]:
        return []

    def for_series(self, metric: str, field: str,
                   extra: dict[str, object] | None = None) -> list[Sample]:
        """The samples that illustrate one alerted series of the window."""
        if metric == "validity.violation_ratio":
            return self.samples.get(f"validity:{field}", [])
        if metric in ("completeness.null_ratio", "completeness.required_violations"):
            return self.samples.get(f"completeness:{field}", [])
        if metric == "uniqueness.duplicate_ratio":
            return self.samples.get("uniqueness", [])
        if metric == "schema.type_changes" and extra:
            out: list[Sample] = []
            changes: Any = extra.get("changes") or {}
            for path, change in sorted(changes.items()):
                for type_name in change["to"]:
                    if type_name not in change["from"]:
                        out += self.samples.get(f"type:{path}:{type_name}", [])
            return out[:self.limit * 4]
        return []
