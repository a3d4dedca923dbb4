"""A worker raises the cyclic collector's first threshold (``gc_threshold``), and every
process reports its time in the collector (``dqpulse_gc_seconds_total``)."""

from __future__ import annotations

import gc

import pytest
from prometheus_client import CollectorRegistry

from dqpulse.config import Settings
from dqpulse.ingest import IngestWorker
from dqpulse.sources.embedded import EmbeddedSource, StreamProfile
from dqpulse.spec import parse_spec
from dqpulse.telemetry import Telemetry

SPEC = """
datasets:
  - name: orders
    topic: orders
    window: 10s
"""


@pytest.fixture
def restore_gc():  # noqa: ANN201
    before = gc.get_threshold()
    yield
    gc.set_threshold(*before)


def test_a_started_worker_sets_the_first_threshold_and_keeps_the_others(engine, restore_gc):
    gc.set_threshold(700, 10, 10)
    source = EmbeddedSource([StreamProfile("orders", base_rate=5.0, partitions=1)],
                            start=1_764_500_000.0, clock=lambda: 1_764_500_000.0)
    worker = IngestWorker(settings=Settings(database_url="sqlite://", worker_metrics_port=0,
                                            gc_threshold=12_345),
                          engine=engine, datasets=parse_spec(SPEC).datasets, source=source,
                          telemetry=Telemetry(CollectorRegistry()), finalize=False)
    assert gc.get_threshold() == (700, 10, 10)  # building a worker changes nothing
    worker.start()
    assert gc.get_threshold() == (12_345, 10, 10)


def test_the_time_in_the_collector_is_exported_by_generation():
    registry = CollectorRegistry()
    Telemetry(registry)

    def sample(name: str, generation: str) -> float:
        value = registry.get_sample_value(name, {"generation": generation})
        assert value is not None, name
        return value

    before = [sample("dqpulse_gc_collections_total", g) for g in "012"]
    seconds_before = sample("dqpulse_gc_seconds_total", "2")
    cycle: list[object] = []
    cycle.append(cycle)  # garbage only the cyclic collector finds
    del cycle
    gc.collect()
    gc.collect(0)
    assert sample("dqpulse_gc_collections_total", "2") == before[2] + 1
    assert sample("dqpulse_gc_collections_total", "0") >= before[0] + 1
    assert sample("dqpulse_gc_seconds_total", "2") > seconds_before
    # a second registry in the same process does not hook the collector twice
    Telemetry(CollectorRegistry())
    gc.collect()
    assert sample("dqpulse_gc_collections_total", "2") == before[2] + 2


def test_the_threshold_must_be_positive():
    with pytest.raises(ValueError, match="gc_threshold"):
        Settings(database_url="sqlite://", gc_threshold=0)
