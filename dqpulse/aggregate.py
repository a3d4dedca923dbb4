"""Poll batches -> per-window partial states of one (dataset, partition).

``PartitionAggregator.add`` takes a poll batch of raw messages of one partition:

1. Values that are missing/blank (``empty``) or longer than ``max_message_bytes``
   (``oversized``) are rejected before decoding; the decoder rejects the rest of the bad
   ones (see ``dqpulse.decode`` for the reasons). Each becomes a ``BadRecord`` for the
   dead-letter topic and is counted in ``AddReport.bad_by_reason``; it is in no metric.
2. Event times come from ``spec.event_time`` (epoch s/ms/us/ns or ISO-8601). When the
   field is declared but absent, null, unparseable, before 1970, or more than
   ``max_future_s`` ahead of the ingest clock, the Kafka timestamp is used instead and the
   record is counted in ``AddReport.event_time_fallbacks`` (it is otherwise a normal
   record). Without ``event_time`` the Kafka timestamp is the event time.
3. Each record goes to the window ``floor(event_time / window) * window``. If that window
   is already closed for this partition (``window_end + lateness <= watermark``, with the
   watermark as it stood before this batch), the record is *late*: counted in
   ``AddReport.late`` and in ``volume.late_records`` of the partition's newest open window
   (the window holding the watermark), and in no other metric, so no window's
   ``volume.records`` changes after it was emitted.
4. The watermark then moves up to the newest event time of the batch.

5. If counting a batch raises anyway (a bug in a metric family met by some record), the
   aggregator's state may be half updated and is no longer trusted: the worker reloads
   the partition from its checkpoint and replays, and counts the batch that raised with
   :func:`add_isolating`, which finds the records whose update raises by halving the
   batch on copies of the state. Those are reported as ``unprocessable`` (dead-lettered,
   logged with the error) and every other record counts once.

``pop_closed`` hands out the windows that are now closed (oldest first) and forgets them.
Windows without records are never produced here: a finalizer treats a window as final
once every partition's watermark has passed its end plus lateness, and merges whatever
partials exist (``merge_partials`` of none is the zero state).

``snapshot``/``restore`` cover all state; the bytes are deterministic for a given state
(a restored state's bytes may differ in sketch layout: DataSketches' frequent-items
serialization is not canonical). After ``restore`` + ``add`` every count equals that of
the uninterrupted aggregator exactly and so do HLL and frequent-items estimates,
and KLL quantile sketches use randomized compaction, so quantiles agree within the
sketch's error bound (identical while a window holds fewer than ~200 values per field).
Within one batch, event-time values of a minority type (say one epoch number among ISO
strings) cannot be read back from the columns and fall back to the Kafka timestamp.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt
import polars as pl

from dqpulse.decode import Decoder, DecodeResult, decoder_for, safe_decode
from dqpulse.metrics.codec import pack, unpack
from dqpulse.metrics.samples import SampleBoard, SamplesState
from dqpulse.metrics.segments import wants_key_prefix
from dqpulse.metrics.window_state import WindowState
from dqpulse.records import ColumnBatch, PartitionBatch, RawMessage
from dqpulse.spec import DatasetSpec
from dqpulse.windows import PartitionClock, parse_event_times, window_starts

log = logging.getLogger(__name__)

#: the reason of a record whose window update raised (see :func:`add_isolating`)
UNPROCESSABLE = "unprocessable"
#: per batch, how many of its unprocessable records are logged with their traceback
LOGGED_TRACEBACKS = 3


@dataclass(slots=True)
class BadRecord:
    """A message that could not be used, for the dead-letter topic."""

    message: RawMessage
    reason: str
    detail: str


@dataclass(slots=True)
class AddReport:
    accepted: int
    late: int
    bad: list[BadRecord]
    event_time_fallbacks: int = 0
    bad_by_reason: dict[str, int] = field(default_factory=dict)

    def combined(self, other: AddReport) -> AddReport:
        """Both reports as one (two batches aggregated one after the other)."""
        reasons = dict(self.bad_by_reason)
        for reason, count in other.bad_by_reason.items():
            reasons[reason] = reasons.get(reason, 0) + count
        return AddReport(self.accepted + other.accepted, self.late + other.late,
                         [*self.bad, *other.bad],
                         self.event_time_fallbacks + other.event_time_fallbacks, reasons)


@dataclass(slots=True)
class Decoded:
    """One poll batch after size checks and decoding, before it is counted."""

    batch_in: PartitionBatch
    result: DecodeResult
    #: positions in ``batch_in`` that were decoded, when not all of them
    candidates: list[int] | None
    bad: list[BadRecord]


class PartitionAggregator:
    """Open windows and the watermark of one (dataset, partition)."""

    def __init__(self, spec: DatasetSpec, partition: int, *,
                 max_message_bytes: int = 1_048_576, idle_timeout_s: float = 10.0,
                 decoder: Decoder | None = None, max_future_s: float = 86_400.0,
                 samples_board: SampleBoard | None = None) -> None:
        """``samples_board``: shared by the aggregators of this data set's partitions in
        one process, so that only the lowest-numbered partitions collect each window's
        failing samples (see :mod:`dqpulse.metrics.samples`)."""
        self.spec = spec
        self.partition = partition
        self.max_message_bytes = max_message_bytes
        self.max_future_s = max_future_s
        self.decoder = decoder if decoder is not None else decoder_for(spec)
        self._clock = PartitionClock(spec.window, spec.lateness, idle_timeout_s)
        self._windows: dict[float, WindowState] = {}
        self._board = samples_board
        self.counters: dict[str, int] = {
            "accepted": 0, "late": 0, "event_time_fallbacks": 0}

    # -- properties ----------------------------------------------------------------------
    @property
    def watermark(self) -> float:
        return self._clock.watermark

    @property
    def last_record_at(self) -> float | None:
        return self._clock.last_record_at

    @property
    def open_windows(self) -> list[float]:
        return sorted(self._windows)

    # -- ingest --------------------------------------------------------------------------
    def add(self, messages: PartitionBatch | Sequence[RawMessage], now: float,
            poll_times: npt.NDArray[np.float64] | None = None) -> AddReport:
        """Count one poll batch of this partition (``RawMessage``s are accepted too).

        ``now`` is the wall clock; ``poll_times`` (one per message), when several polls
        were coalesced into one batch, when each record was polled (freshness lag).
        The same as :meth:`apply` of :meth:`prepare`."""
        return self.apply(self.prepare(messages), now, poll_times)

    def prepare(self, messages: PartitionBatch | Sequence[RawMessage]) -> Decoded:
        """Size checks and decoding of one poll batch, the first half of :meth:`add`.

        Touches nothing but the decoder (whose learned schema carries over between
        batches), so a worker can decode the next batches on another thread while it
        applies this one; batches of one partition must be prepared in their order."""
        batch_in = (messages if isinstance(messages, PartitionBatch)
                    else PartitionBatch.from_messages(messages))
        bad: list[BadRecord] = []
        values = batch_in.values
        sizes: npt.NDArray[np.int64] | None = None
        try:
            sizes = np.fromiter(map(len, values), dtype=np.int64, count=len(values))  # type: ignore[arg-type]
            clean = not ((sizes == 0).any() or (sizes > self.max_message_bytes).any())
        except TypeError:  # a None value (tombstone)
            clean = False
        candidates: list[int] | None = None  # positions in batch_in, when not all of them
        if not clean:
            sizes = None
            candidates = []
            for index, value in enumerate(values):
                if not value:
                    bad.append(BadRecord(batch_in.message(index), "empty", "no value"))
                elif len(value) > self.max_message_bytes:
                    bad.append(BadRecord(batch_in.message(index), "oversized",
                                         f"{len(value)} bytes > {self.max_message_bytes}"))
                else:
                    candidates.append(index)
            values = [values[i] for i in candidates]
        result: DecodeResult = safe_decode(self.decoder, values, sizes)  # type: ignore[arg-type]
        for failure in result.failures:
            index = failure.index if candidates is None else candidates[failure.index]
            bad.append(BadRecord(batch_in.message(index), failure.reason, failure.detail))
        return Decoded(batch_in, result, candidates, bad)

    def apply(self, decoded: Decoded, now: float,
              poll_times: npt.NDArray[np.float64] | None = None) -> AddReport:
        """Count a batch :meth:`prepare` decoded: the second half of :meth:`add`."""
        batch_in, result, candidates, bad = (decoded.batch_in, decoded.result,
                                             decoded.candidates, decoded.bad)
        by_reason: dict[str, int] = {}
        for record in bad:
            by_reason[record.reason] = by_reason.get(record.reason, 0) + 1
        for reason, count in by_reason.items():
            key = f"bad.{reason}"
            self.counters[key] = self.counters.get(key, 0) + count

        batch = result.batch
        if batch.n == 0:
            return AddReport(0, 0, bad, 0, by_reason)
        stamps, offsets = batch_in.timestamps_ms, batch_in.offsets
        polled = poll_times
        if candidates is not None:
            picked = np.asarray(candidates, dtype=np.int64)
            stamps, offsets = stamps[picked], offsets[picked]
            polled = None if polled is None else polled[picked]
        if result.rows.shape[0] != stamps.shape[0]:
            stamps, offsets = stamps[result.rows], offsets[result.rows]
            polled = None if polled is None else polled[result.rows]
        batch.timestamps = stamps / 1000.0
        batch.offsets = offsets
        batch.ingest_time = now if polled is None else polled
        batch.partition = self.partition
        if wants_key_prefix(self.spec):
            batch.key_prefixes = self._key_prefixes(batch_in, candidates, result.rows)
        fallbacks = self._set_event_times(batch, now)
        late = self._route(batch)
        assert batch.event_times is not None
        self._clock.observe(float(batch.event_times.max()), now)
        accepted = batch.n - late
        self.counters["accepted"] += accepted
        self.counters["late"] += late
        self.counters["event_time_fallbacks"] += fallbacks
        return AddReport(accepted, late, bad, fallbacks, by_reason)

    def _key_prefixes(self, batch_in: PartitionBatch, candidates: list[int] | None,
                      rows: npt.NDArray[np.int64]) -> pl.Series | None:
        """The decoded rows' message-key prefixes (segment dimension ``kafka.key_prefix``):
        the key up to its first ``:/|._-`` (or NUL), at most ``key_prefix_length``
        characters."""
        natives = batch_in.natives
        if natives is None:
            return None
        keys = list(map(batch_in.key_of, natives))
        if candidates is not None:
            keys = [keys[i] for i in candidates]
        if len(keys) != rows.shape[0]:
            keys = [keys[i] for i in rows.tolist()]
        length = self.spec.segments.key_prefix_length
        try:
            text = pl.Series("key", keys, dtype=pl.Binary).cast(pl.String, strict=False)
        except pl.exceptions.ComputeError:  # a key that is not UTF-8 (binary, Avro): lossy
            text = pl.Series("key", [None if k is None else bytes(k[:4 * length]).decode(
                "utf-8", "replace") for k in keys], dtype=pl.String)
        # a NUL ends the prefix too: PostgreSQL text cannot hold it
        return text.str.extract(f"^([^:/|._\\x00-]{{1,{length}}})", 1)

    def _set_event_times(self, batch: ColumnBatch, now: float) -> int:
        path = self.spec.event_time
        if path is None:
            batch.event_times = batch.timestamps.copy()
            return 0
        type_name = batch.types.get(path)
        if type_name is None:
            times = np.full(batch.n, math.nan)
        else:
            times = parse_event_times(batch.frame.get_column(path), type_name)
        # before 1970 is no event time of a live stream: -1e300 made a window of the year
        # -3e283, which every series' detectors then scored
        invalid = ~np.isfinite(times) | (times > now + self.max_future_s) | (times < 0.0)
        fallbacks = int(np.count_nonzero(invalid))
        if fallbacks:
            times = np.where(invalid, batch.timestamps, times)
        batch.event_times = times
        return fallbacks

    def _route(self, batch: ColumnBatch) -> int:
        """Add the batch's records to their windows; returns how many were late."""
        assert batch.event_times is not None
        starts = window_starts(batch.event_times, self.spec.window)
        late_mask = self._clock.closed_mask(starts)
        late = int(np.count_nonzero(late_mask))
        if late == batch.n:
            on_time_starts: npt.NDArray[np.float64] = np.zeros(0)
        else:
            on_time_starts = starts[~late_mask] if late else starts
        if not late and on_time_starts.size and on_time_starts.min() == on_time_starts.max():
            self._window(float(on_time_starts[0])).update(batch)  # the usual case
            return late
        unique = np.unique(on_time_starts)
        if unique.size == 1 and not late:
            self._window(float(unique[0])).update(batch)
        else:
            for start in unique.tolist():
                rows = np.flatnonzero((starts == start) & ~late_mask)
                self._window(start).update(batch.take(rows))
        if late:
            newest = self._newest_open_start()
            self._window(newest).add_late(late)
        return late

    def _newest_open_start(self) -> float:
        """The window holding the watermark (it is open: its end is past the watermark)."""
        watermark = self._clock.watermark
        start = math.floor(watermark / self.spec.window) * self.spec.window
        if self._windows:
            start = max(start, max(self._windows))
        return float(start)

    def _window(self, start: float) -> WindowState:
        state = self._windows.get(start)
        if state is None:
            state = self._windows[start] = WindowState.zero(self.spec)
            self._share_samples(start, state)
        return state

    def _share_samples(self, start: float, state: WindowState) -> None:
        samples = state.families.get("samples")
        if self._board is not None and isinstance(samples, SamplesState):
            samples.share(self._board, start, self.partition)

    # -- time ----------------------------------------------------------------------------
    def is_idle(self, now: float) -> bool:
        """No records for ``idle_timeout_s`` (or never): ``tick`` may advance the watermark."""
        return self._clock.is_idle(now)

    def tick(self, now: float) -> None:
        """Advance the watermark to the wall clock if the partition has been idle."""
        self._clock.tick(now)

    def snapshot_window(self, start: float) -> bytes:
        """The current partial state of one open window (for inspection and tests)."""
        return self._windows[start].to_bytes()

    def pop_all(self) -> list[tuple[float, bytes]]:
        """Every window, closed or not, as a partial: the partition is gone (its topic
        was recreated with fewer partitions) and nothing more can come to them."""
        return [(start, self._windows.pop(start).to_bytes()) for start in sorted(self._windows)]

    def pop_closed(self) -> list[tuple[float, bytes]]:
        closed = sorted(s for s in self._windows if self._clock.is_closed(s))
        return [(start, self._windows.pop(start).to_bytes()) for start in closed]

    # -- checkpoint ----------------------------------------------------------------------
    def snapshot(self) -> bytes:
        starts = sorted(self._windows)
        header: dict[str, Any] = {
            "dataset": self.spec.name, "partition": self.partition,
            "clock": self._clock.to_dict(), "windows": starts, "counters": self.counters,
        }
        return pack(header, [self._windows[s].to_bytes() for s in starts], checked=True)

    def resume(self, watermark: float, last_record_at: float | None) -> None:
        """Take up a partition's clock where a checkpoint left it, without its windows
        (:meth:`AggregatorOptions.new` when the checkpoint's state is corrupt): windows
        closed then stay closed, and late records are judged as before."""
        finite = watermark is not None and math.isfinite(watermark)
        self._clock.load({"max_event_time": watermark if finite else None,
                          "watermark": watermark if finite else None,
                          "last_record_at": last_record_at})

    def clone(self) -> PartitionAggregator:
        """An independent copy of this state (same decoder and samples board)."""
        return PartitionAggregator.restore(
            self.spec, self.partition, self.snapshot(),
            max_message_bytes=self.max_message_bytes, idle_timeout_s=self._clock.idle_timeout_s,
            decoder=self.decoder, max_future_s=self.max_future_s, samples_board=self._board)

    @classmethod
    def restore(cls, spec: DatasetSpec, partition: int, blob: bytes,
                **kwargs: Any) -> PartitionAggregator:
        aggregator = cls(spec, partition, **kwargs)
        header, blobs = unpack(blob)
        aggregator._clock.load(header["clock"])
        aggregator.counters = dict(header["counters"])
        aggregator._windows = {
            float(start): WindowState.from_bytes(spec, data)
            for start, data in zip(header["windows"], blobs, strict=True)
        }
        for start, state in aggregator._windows.items():
            aggregator._share_samples(start, state)
        return aggregator


def add_isolating(aggregator: PartitionAggregator, batch: PartitionBatch, now: float,
                  poll_times: npt.NDArray[np.float64] | None = None
                  ) -> tuple[PartitionAggregator, AddReport]:
    """Count ``batch`` on copies of ``aggregator``, leaving out the records whose update
    raises; returns the state to go on with and the report.

    For a batch whose :meth:`PartitionAggregator.add` raised (a bug met by some record):
    a copy of the state counts the batch; if that raises, each half is tried in turn on a
    copy of the state the records before it left, down to single records. A record that
    raises on its own is reported ``unprocessable`` with the error (it is in no metric,
    like a record that cannot be decoded); every other record counts exactly once, in
    offset order. A copy that raised is thrown away, so nothing is half counted. Costs a
    copy of the state per try: about ``2 log2(n)`` copies per record that raises."""
    report = AddReport(0, 0, [], 0, {})
    current = aggregator
    todo = [(0, len(batch))]
    while todo:
        start, stop = todo.pop()
        trial = current.clone()
        try:
            done = trial.add(batch.part(start, stop), now,
                             None if poll_times is None else poll_times[start:stop])
        except MemoryError:
            raise  # the process is short of memory: no record's fault, none is dropped
        except Exception as exc:  # noqa: BLE001 - narrowed down to single records
            if stop - start > 1:
                middle = (start + stop) // 2
                todo += [(middle, stop), (start, middle)]  # the first half first
                continue
            message = batch.message(start)
            # a state that raises on every record would log thousands: a few, then a count
            if report.bad_by_reason.get(UNPROCESSABLE, 0) < LOGGED_TRACEBACKS:
                log.error("counting %s[%d] offset %d raised; it is dead-lettered as %s",
                          message.topic, message.partition, message.offset,
                          UNPROCESSABLE, exc_info=exc)
            detail = f"the window update raised {type(exc).__name__}: {exc}"[:300]
            done = AddReport(0, 0, [BadRecord(message, UNPROCESSABLE, detail)], 0,
                             {UNPROCESSABLE: 1})
            key = f"bad.{UNPROCESSABLE}"
            current.counters[key] = current.counters.get(key, 0) + 1
        else:
            current = trial
        report = report.combined(done)
    unprocessable = report.bad_by_reason.get(UNPROCESSABLE, 0)
    if unprocessable > LOGGED_TRACEBACKS:
        log.error("%d records of %s[%d] (offsets %d-%d) raised when counted; all are "
                  "dead-lettered as %s (the first %d logged with their errors)",
                  unprocessable, batch.topic, batch.partition, batch.first_offset,
                  batch.last_offset, UNPROCESSABLE, LOGGED_TRACEBACKS)
    return current, report
