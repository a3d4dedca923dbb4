"""The periodic checkpoint stretches its interval when checkpoints are costly (a worker
owning hundreds of partitions), within the configured bounds."""

from __future__ import annotations

from prometheus_client import CollectorRegistry

from dqpulse.config import Settings
from dqpulse.ingest import IngestWorker
from dqpulse.sources.embedded import EmbeddedSource, StreamProfile
from dqpulse.spec import parse_spec
from dqpulse.telemetry import Telemetry

START = 1_764_500_000.0
SPEC = """
datasets:
  - name: orders
    topic: orders
    event_time: ts
    window: 10s
    lateness: 2s
"""


def _worker(engine, **settings):  # noqa: ANN001, ANN202
    now = [START]
    source = EmbeddedSource([StreamProfile("orders", base_rate=20.0, partitions=2)],
                            start=START, clock=lambda: now[0])
    telemetry = Telemetry(CollectorRegistry())
    worker = IngestWorker(settings=Settings(database_url="sqlite://", worker_metrics_port=0,
                                            **settings),
                          engine=engine, datasets=parse_spec(SPEC).datasets, source=source,
                          telemetry=telemetry, clock=lambda: now[0], finalize=False)
    return worker, source, now, telemetry


def test_interval_is_the_base_until_checkpoints_cost_more_than_their_share(engine):
    worker, _, _, _ = _worker(engine, checkpoint_interval_s=2.0, checkpoint_max_share=0.2,
                              checkpoint_max_interval_s=10.0)
    for cost, interval in ((0.0, 2.0), (0.1, 2.0), (0.4, 2.0), (1.0, 5.0), (1.5, 7.5),
                           (2.0, 10.0), (30.0, 10.0)):
        worker._checkpoint_cost_s = cost
        assert worker.checkpoint_interval_s == interval, cost


def test_a_periodic_checkpoint_measures_its_cost_and_publishes_the_interval(engine):
    worker, source, now, telemetry = _worker(engine, checkpoint_interval_s=2.0)
    worker.start()
    for _ in range(5):
        now[0] += 3.0
        worker._ingest(source.poll(1000, 0.0))
    worker.checkpoint()
    assert worker.stats.checkpoints == 1
    assert 0.0 < worker._checkpoint_cost_s < 5.0
    gauge = telemetry.registry.get_sample_value("dqpulse_checkpoint_interval_seconds")
    assert gauge == worker.checkpoint_interval_s >= 2.0
    # a checkpoint of some partitions only (a revocation's) leaves the measure alone
    worker._checkpoint_cost_s = 1.0
    now[0] += 3.0
    worker._ingest(source.poll(1000, 0.0))
    worker.checkpoint(only=[("orders", 0)])
    assert worker._checkpoint_cost_s == 1.0
