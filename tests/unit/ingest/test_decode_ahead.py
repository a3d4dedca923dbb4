"""Decoding ahead on a second thread (``decode_ahead``) counts exactly what decoding inline
counts: same window states byte for byte, same bad records in the same order, same stats,
on a stream with schema drift, bad values, coalescing and two data sets on one topic."""

from __future__ import annotations

import numpy as np
from prometheus_client import CollectorRegistry

from dqpulse.aggregate import PartitionAggregator
from dqpulse.config import Settings
from dqpulse.ingest import IngestWorker
from dqpulse.records import PartitionBatch
from dqpulse.sources.embedded import EmbeddedSource, Injection, StreamProfile
from dqpulse.spec import parse_spec
from dqpulse.telemetry import Telemetry

START = 1_764_500_000.0
# 10-second windows keep every field under 200 values per window, where KLL sketches are
# exact and their bytes comparable (larger ones compact at random)
SPEC = """
datasets:
  - name: orders
    topic: orders
    event_time: ts
    window: 10s
    lateness: 2s
    key: order_id
    fields:
      amount:  {type: number, min: 0}
      country: {type: string, allowed: [DE, FR, US, GB, NL, ES]}
      email:   {type: string, pattern: '^[^@]+@[^@]+$'}
  - name: orders_raw
    topic: orders
    window: 10s
    lateness: 2s
"""
INJECTIONS = [
    Injection("type_change", "orders", START + 40, START + 70, "amount"),
    Injection("null_spike", "orders", START + 60, START + 90, "email"),
    Injection("new_field", "orders", START + 80, START + 120),
    Injection("late_burst", "orders", START + 100, START + 130),
]


class _Recorder:
    def __init__(self) -> None:
        self.sent: list[tuple[str, int, int, str]] = []

    def send(self, message, reason: str, detail: str) -> None:  # noqa: ANN001
        self.sent.append((message.topic, message.partition, message.offset, reason))


def _corrupt(batch: PartitionBatch, step: int) -> PartitionBatch:
    """Some bad values: truncated JSON, an empty value, a top-level array."""
    values = list(batch.values)
    if step % 3 == 0 and len(values) > 2:
        values[1] = b'{"ts": 1, "amount": '
    if step % 4 == 1 and len(values) > 3:
        values[3] = b""
    if step % 5 == 2 and values:
        values[-1] = b"[1, 2]"
    return PartitionBatch(batch.topic, batch.partition, values, batch.timestamps_ms,
                          batch.offsets, batch.natives, batch.key_of)


def _run(engine, decode_ahead: bool):  # noqa: ANN001, ANN202
    now = [START]
    source = EmbeddedSource([StreamProfile("orders", base_rate=12.0, partitions=3)],
                            start=START, clock=lambda: now[0], injections=INJECTIONS, seed=3)
    settings = Settings(database_url="sqlite://", decode_ahead=decode_ahead,
                        coalesce_records=25, coalesce_max_wait_s=7.0, worker_metrics_port=0)
    dead = _Recorder()
    worker = IngestWorker(settings=settings, engine=engine,
                          datasets=parse_spec(SPEC).datasets, source=source,
                          dead_letter=dead, telemetry=Telemetry(CollectorRegistry()),
                          clock=lambda: now[0], finalize=False)
    worker.start()
    for step in range(60):
        now[0] += 2.5
        # uneven polls: a few records of each partition, or many of some
        batches = source.poll(40 if step % 2 else 15, 0.0)
        worker._ingest([_corrupt(batch, step) for batch in batches])
    worker._flush_held(None)
    if worker._decoder is not None:
        worker._decoder.shutdown(wait=True)
    states = {key: owned.aggregator.snapshot() for key, owned in sorted(worker.owned.items())}
    return states, dead.sent, worker.stats


def test_decoding_ahead_counts_exactly_what_decoding_inline_counts(engine):
    ahead_states, ahead_bad, ahead_stats = _run(engine, decode_ahead=True)
    inline_states, inline_bad, inline_stats = _run(engine, decode_ahead=False)
    assert ahead_states.keys() == inline_states.keys()
    assert len(ahead_states) == 6  # 2 data sets x 3 partitions
    for key, state in ahead_states.items():
        assert state == inline_states[key], key
    assert ahead_bad == inline_bad
    assert {reason for *_, reason in ahead_bad} == {"truncated", "empty", "not_an_object"}
    assert (ahead_stats.polled, ahead_stats.accepted, ahead_stats.late, ahead_stats.bad) == (
        inline_stats.polled, inline_stats.accepted, inline_stats.late, inline_stats.bad)
    assert ahead_stats.accepted > 2000 and ahead_stats.late > 0
    # every polled record of both data sets is accepted, late or bad: none lost
    assert ahead_stats.accepted + ahead_stats.late + ahead_stats.bad == 2 * ahead_stats.polled


def test_prepare_then_apply_is_add():
    spec = parse_spec(SPEC).datasets[0]
    values = [b'{"ts": %d, "amount": %d, "country": "DE"}' % (START + i, i) for i in range(50)]
    values[7] = b'{"ts": 3, "amount": "x"}'  # a type change within the batch
    values[9] = b"not json"
    batch = PartitionBatch("orders", 0, values,  # type: ignore[arg-type]
                           np.full(50, int(START * 1000), dtype=np.int64),
                           np.arange(50, dtype=np.int64))
    whole, halves = PartitionAggregator(spec, 0), PartitionAggregator(spec, 0)
    first = whole.add(batch, START + 60)
    second = halves.apply(halves.prepare(batch), START + 60)
    assert (first.accepted, first.late, [b.reason for b in first.bad]) == (
        second.accepted, second.late, [b.reason for b in second.bad])
    assert whole.snapshot() == halves.snapshot()
    assert halves.counters == whole.counters and whole.counters["bad.invalid_json"] == 1
