"""``dqpulse demo``: the whole pipeline in one process with no external service.

SQLite instead of Postgres and the built-in stream source instead of Kafka; everything
else (aggregation, checkpoints, finalizing, detectors, incidents, API) is the production
code. A simulated clock runs ``speed`` times faster than the wall clock so windows and
injected problems show up within seconds.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence

from sqlalchemy import Engine

from dqpulse.config import Settings
from dqpulse.finalize.scoring import default_hooks
from dqpulse.ingest import IngestWorker
from dqpulse.services.metrics import latest_windows
from dqpulse.services.model import apply_model
from dqpulse.sources.embedded import EmbeddedSource, Injection, StreamProfile
from dqpulse.spec import Spec, parse_spec
from dqpulse.store.db import make_engine, upgrade_to_head
from dqpulse.telemetry import Telemetry

log = logging.getLogger(__name__)

DEMO_SPEC = """
datasets:
  - name: orders
    topic: orders
    format: json
    event_time: ts
    window: 1m
    lateness: 10s
    owner: payments
    freshness_sla: 3m
    key: order_id
    label: is_fraud
    fields:
      # not `required`: the demo stream has ~1% null amounts, and a missing and a null
      # value count alike, so the rule would fire on every window
      amount:  {type: number, min: 0}
      country: {type: string, allowed: [DE, FR, US, GB, NL, ES]}
      email:   {type: string, pattern: '^[^@]+@[^@]+$'}
  - name: clicks
    topic: clicks
    format: json
    event_time: ts
    window: 1m
    lateness: 10s
    owner: growth
lineage:
  - {from: clicks, to: orders, job: attribute-orders}
"""


class SimClock:
    """Simulated epoch seconds: starts at ``start`` and runs ``speed`` times real time."""

    def __init__(self, start: float, speed: float) -> None:
        self.start, self.speed = start, speed
        self._t0 = time.monotonic()

    def __call__(self) -> float:
        return self.start + (time.monotonic() - self._t0) * self.speed


def demo_injections(start: float) -> list[Injection]:
    minute = 60.0
    plan = [("null_spike", "orders", 20, 6, "amount"), ("silence", "orders", 40, 6, None),
            ("volume_spike", "clicks", 55, 5, None),
            ("category_explosion", "orders", 70, 6, "country"),
            ("type_change", "orders", 90, 4, "amount")]
    injections = []
    for cycle in range(24):
        base = start + cycle * 120 * minute
        for kind, topic, at, length, field in plan:
            injections.append(Injection(kind, topic, base + at * minute,
                                        base + (at + length) * minute, field))
    return injections


def build_demo(database: str, speed: float, *, start: float | None = None,
               spec_text: str = DEMO_SPEC, injections: Sequence[Injection] | None = None
               ) -> tuple[Settings, Engine, Spec, EmbeddedSource, SimClock]:
    # the demo is local and throwaway: the API is open (no token; every request an admin)
    settings = Settings(database_url=database, checkpoint_interval_s=0.5, poll_timeout_s=0.05,
                        idle_partition_timeout_s=20.0, worker_metrics_port=0, auth="open")
    upgrade_to_head(database)
    engine = make_engine(database)
    spec = parse_spec(spec_text, source="demo.yaml")
    apply_model(engine, spec, applied_by="demo", source="demo.yaml")
    clock = SimClock(time.time() if start is None else start, speed)
    profiles = [StreamProfile("orders", base_rate=6.0, kind="orders"),
                StreamProfile("clicks", base_rate=12.0, kind="clicks")]
    source = EmbeddedSource(profiles, start=clock.start, clock=clock,
                            injections=demo_injections(clock.start) if injections is None
                            else injections)
    return settings, engine, spec, source, clock


def run_demo(*, port: int = 8000, database: str = "sqlite:///dqpulse-demo.db",
             speed: float = 60.0, max_seconds: float | None = None) -> int:
    import uvicorn

    from service.app import create_app

    settings, engine, spec, source, clock = build_demo(database, speed)
    telemetry = Telemetry()
    app = create_app(settings, engine=engine, telemetry=telemetry, spec=spec)
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    threading.Thread(target=server.run, daemon=True).start()
    worker = IngestWorker(settings=settings, engine=engine, datasets=spec.datasets,
                          source=source, telemetry=telemetry, clock=clock,
                          hooks=default_hooks(spec, settings, telemetry))
    worker.start()
    url = f"http://127.0.0.1:{port}"
    print(f"dqpulse demo: API at {url}/api/v1/datasets  (OpenAPI: {url}/docs)", flush=True)
    print(f"  console at {url}/ui/", flush=True)
    print(f"  simulated clock runs {speed:g}x; database {database}", flush=True)
    started = time.monotonic()
    last_report = 0.0
    try:
        while max_seconds is None or time.monotonic() - started < max_seconds:
            worker.run_once()
            if time.monotonic() - last_report >= 5.0:
                last_report = time.monotonic()
                _report(engine, spec)
    except KeyboardInterrupt:
        pass
    finally:
        worker.checkpoint(commit=True)
        server.should_exit = True
    return 0


def _report(engine: Engine, spec: Spec) -> None:
    latest = latest_windows(engine, [dataset.name for dataset in spec.datasets])
    for name, points in latest.items():
        values = {p["metric"]: p["value"] for p in points if p["field"] == ""}
        window = time.strftime("%H:%M", time.gmtime(points[0]["window_start"]))
        anomalies = sum(1 for p in points if p["anomalous"])
        print(f"  {name:8s} window {window}Z  records={values.get('volume.records')}"
              f"  quality.completeness={values.get('quality.completeness')}"
              f"  anomalous points={anomalies}", flush=True)
