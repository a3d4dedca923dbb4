"""A stream of another shape than our generator's: do the detectors hold on it?

The incident benchmark (``bench/incidents``) runs on the ``orders`` records of
``EmbeddedSource``, which the detectors were tuned on. This bench writes records of a
different kind, chosen without looking at the detectors' params: IoT devices that upload
in bursts (one upload is 1-30 readings of one device), epoch-millisecond event times,
nested readings, a sensor fault that sends a device's batch as nulls, a sparse
``error_code`` present only when a device is not ``ok``, a long-tailed ``region``, a
firmware rollout that moves a category share over the test days, a battery that drains
and recharges, and no weekly cycle. Then it injects incidents of the kinds a user would
expect caught and counts, through the real pipeline (``IngestWorker`` -> finalize ->
``ScoringHook`` -> incidents, on a simulated clock, as ``bench/incidents/run.py`` does):

* recall: an injection is caught when an alert window of the data set falls in it or in
  the two windows after it, and the number of windows that took;
* false alerts: alert episodes (runs of alert windows, a gap of 3 quiet windows ending
  one, as incidents auto-resolve) that start outside every injection and its slack, per
  simulated day, with the series that raise them; and the incidents opened outside them.

    .venv/bin/python bench/foreign_stream.py                    # 4 warm-up + 3 test days
    .venv/bin/python bench/foreign_stream.py --seed 5 --window 60
    .venv/bin/python bench/foreign_stream.py --clean            # no injection: false alerts

Nothing here is tuned on: it is a check that what the generator showed carries over.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import random
import string
import sys
import tempfile
import time
from collections import Counter, defaultdict
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path

import orjson
from sqlalchemy import event, select

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from dqpulse.config import Settings  # noqa: E402
from dqpulse.finalize.scoring import default_hooks  # noqa: E402
from dqpulse.finalize.watch import AUTOENCODER_METRIC, is_watched  # noqa: E402
from dqpulse.ingest import IngestWorker  # noqa: E402
from dqpulse.records import RawMessage  # noqa: E402
from dqpulse.sources.embedded import EmbeddedSource, Injection, StreamProfile, poisson  # noqa: E402
from dqpulse.spec import parse_spec  # noqa: E402
from dqpulse.store import datasets as dataset_store  # noqa: E402
from dqpulse.store.db import make_engine, upgrade_to_head  # noqa: E402
from dqpulse.store.tables import incidents, metric_points  # noqa: E402
from dqpulse.telemetry import Telemetry  # noqa: E402

START = 1_767_225_600.0  # Thursday 2026-01-01 00:00:00Z

SPEC_TEMPLATE = """
datasets:
  - name: telemetry
    topic: device-telemetry
    format: json
    event_time: ts_ms
    window: {window}s
    lateness: 2m
    owner: iot
    freshness_sla: 10m
    key: msg_id
    fields:
      reading.temp:     {{type: number}}
      reading.humidity: {{type: number, min: 0, max: 100}}
      battery:          {{type: number, min: 0, max: 100}}
      status:           {{type: string, allowed: [ok, degraded, offline]}}
"""

CLICKS_SPEC_TEMPLATE = """
datasets:
  - name: clicks
    topic: web-clicks
    format: json
    event_time: ts
    window: {window}s
    lateness: 1m
    owner: web
    freshness_sla: 15m
    key: event_id
    fields:
      latency_ms: {{type: number, min: 0}}
      country:    {{type: string}}
      page:       {{type: string}}
"""

KINDS = ("silence", "volume_drop", "null_spike", "type_change", "removed_field",
         "distribution_shift", "category_explosion", "duplicate_burst", "new_field",
         "volume_spike")
REGIONS = [f"r{i:02d}" for i in range(14)]
REGION_WEIGHTS = [1.0 / (i + 1) ** 1.2 for i in range(len(REGIONS))]
ERRORS = [f"E{i}" for i in range(1, 41)]
ERROR_WEIGHTS = [1.0 / i ** 1.5 for i in range(1, 41)]


@dataclasses.dataclass
class Device:
    name: str
    offset: float       # temperature offset
    battery: float
    draining: bool
    faulty_until: float = 0.0  # sends null temperatures until then


def _append(source: EmbeddedSource, topic: str, partition: int, t: float,
            record: dict[str, object], key: bytes | None) -> None:
    """Append ``record``, produced at ``t``, to the end of a partition's log."""
    tp = (topic, partition)
    log = source._log.setdefault(tp, [])  # noqa: SLF001
    offset = source._base.get(tp, 0) + len(log)  # noqa: SLF001
    log.append(RawMessage(topic, partition, offset, int(t * 1000), orjson.dumps(record), key))


class DeviceSource(EmbeddedSource):
    """``EmbeddedSource``'s log, offsets and protocol, with device uploads as records."""

    def __post_init__(self) -> None:
        super().__post_init__()
        rng = random.Random(self.seed * 7919 + 1)
        self._devices = [Device(f"dev-{i:04d}", rng.gauss(0.0, 2.0), rng.uniform(20, 100),
                                rng.random() < 0.5) for i in range(400)]
        # device shares: lognormal, the busiest of 400 about 3 % of the readings
        self._weights = [rng.lognormvariate(0.0, 1.0) for _ in self._devices]
        self._test_start = START

    def _generate_second(self, profile: StreamProfile, t: float) -> None:
        active = {i.kind: i for i in self.active(profile.topic, t)}
        if "silence" in active:
            return
        rng = self._rng
        hour = (t / 3600.0) % 24.0
        daily = 1.0 + 0.3 * math.sin((hour - 14.0) / 24.0 * 2 * math.pi)
        uploads_per_s = profile.base_rate / 8.0 * daily
        if "volume_drop" in active:
            uploads_per_s *= 0.2
        if "volume_spike" in active:
            uploads_per_s *= 3.0
        for _ in range(poisson(rng, uploads_per_s)):
            device = rng.choices(self._devices, weights=self._weights)[0]
            if device.faulty_until <= t and rng.random() < 0.002:
                device.faulty_until = t + rng.uniform(60.0, 1800.0)  # a sensor fault
            size = min(30, 1 + int(rng.expovariate(1.0 / 7.0)))
            partition = rng.randrange(profile.partitions)
            for k in range(size):
                event_time = t - rng.uniform(0.0, 60.0) + k * 0.01
                _append(self, profile.topic, partition, t,
                        self._reading(device, event_time, active), device.name.encode())

    def _reading(self, device: Device, t: float,
                 active: Mapping[str, Injection]) -> dict[str, object]:
        rng = self._rng
        hour = (t / 3600.0) % 24.0
        temp: float | None = round(21.0 + 4.0 * math.sin((hour - 15.0) / 24.0 * 2 * math.pi)
                                   + device.offset + rng.gauss(0.0, 0.4), 2)
        if device.faulty_until > t:
            temp = None
        if "distribution_shift" in active and temp is not None:
            temp = round(temp + 8.0, 2)
        if "null_spike" in active and rng.random() < 0.5:
            temp = None
        device.battery += -0.002 if device.draining else 0.004
        if device.battery < 5.0 or device.battery > 100.0:
            device.draining = not device.draining
            device.battery = min(100.0, max(5.0, device.battery))
        status = rng.choices(["ok", "degraded", "offline"], weights=[95, 4, 1])[0]
        # the firmware rollout: 3.2.0 from 0 % at the start of the test days to 60 % at
        # their end (a slow drift, not an incident)
        rollout = min(0.6, max(0.0, (t - self._test_start) / (3 * 86400.0) * 0.6))
        record: dict[str, object] = {
            "msg_id": f"{rng.getrandbits(64):016x}",
            "device_id": device.name,
            "ts_ms": int(t * 1000),
            "reading": {"temp": temp, "humidity": max(0, min(100, int(rng.gauss(55, 12))))},
            "battery": round(device.battery, 1),
            "status": status,
            "fw": "3.2.0" if rng.random() < rollout else "3.1.4",
            "region": rng.choices(REGIONS, weights=REGION_WEIGHTS)[0],
            "tags": rng.sample(["indoor", "outdoor", "mains", "solar", "beta"],
                               k=rng.randint(0, 2)),
        }
        if status != "ok":
            record["error_code"] = rng.choices(ERRORS, weights=ERROR_WEIGHTS)[0]
        if "duplicate_burst" in active and rng.random() < 0.3:
            record["msg_id"] = "0000000000000042"
        if "type_change" in active:
            record["battery"] = f"{record['battery']}%"
        if "removed_field" in active:
            record.pop("status", None)
        if "new_field" in active:
            record["calibration"] = {"gain": 1.0}
        if "category_explosion" in active and rng.random() < 0.5:
            record["region"] = "".join(rng.choices(string.ascii_lowercase, k=3))
        return record


COUNTRIES = [f"C{i:02d}" for i in range(60)]
COUNTRY_WEIGHTS = [1.0 / (i + 1) for i in range(60)]
DOMAINS = [f"site{i}.example" for i in range(50)]


class ClickSource(EmbeddedSource):
    """Web clicks: a strong daily and weekly cycle, quiet nights, independent events with
    heavy-tailed latencies, ids of high cardinality, a long tail of pages where new ones
    turn up all the time, a referrer null in 30 % of the events, revenue in 5 %."""

    _test_start = START

    def _generate_second(self, profile: StreamProfile, t: float) -> None:
        active = {i.kind: i for i in self.active(profile.topic, t)}
        if "silence" in active:
            return
        rng = self._rng
        hour = (t / 3600.0) % 24.0
        daily = 1.0 + 0.8 * math.sin((hour - 10.0) / 24.0 * 2 * math.pi)
        weekday = int((t - START) // 86400.0 + 3) % 7  # 2026-01-01 is a Thursday
        rate = profile.base_rate * daily * (0.4 if weekday >= 5 else 1.0)
        if "volume_drop" in active:
            rate *= 0.2
        if "volume_spike" in active:
            rate *= 3.0
        for _ in range(poisson(rng, rate)):
            event_time = t + rng.random()
            _append(self, profile.topic, rng.randrange(profile.partitions), t,
                    self._click(event_time, active), None)

    def _click(self, t: float, active: Mapping[str, Injection]) -> dict[str, object]:
        rng = self._rng
        latency: object = round(rng.lognormvariate(5.0, 1.0), 1)
        if rng.random() < 0.001:
            latency = 30000.0  # a timeout
        if "distribution_shift" in active:
            latency = round(float(latency) * 3.0, 1)  # type: ignore[arg-type]
        record: dict[str, object] = {
            "event_id": f"{rng.getrandbits(64):016x}",
            "ts": datetime.fromtimestamp(t, UTC).isoformat().replace("+00:00", "Z"),
            "user_id": f"u{int(rng.paretovariate(1.1) * 1000)}",
            "session_id": f"{rng.getrandbits(40):010x}",
            "page": f"/p/{int(rng.paretovariate(0.8) * 10)}",
            "referrer": None if rng.random() < 0.3 else rng.choice(DOMAINS),
            "latency_ms": latency,
            "is_bot": rng.random() < 0.03,
            "country": rng.choices(COUNTRIES, weights=COUNTRY_WEIGHTS)[0],
            "device": {"os": rng.choices(["ios", "android", "web"], weights=[3, 4, 5])[0],
                       "version": f"{rng.randint(10, 17)}.{rng.randint(0, 4)}"},
            "items": [rng.randint(1, 500) for _ in range(rng.randint(0, 5))],
        }
        if rng.random() < 0.05:
            record["revenue"] = round(rng.lognormvariate(3.0, 1.2), 2)
        if "null_spike" in active and rng.random() < 0.5:
            record["country"] = None
        if "duplicate_burst" in active and rng.random() < 0.3:
            record["event_id"] = "0000000000000042"
        if "type_change" in active:
            record["latency_ms"] = f"{record['latency_ms']}ms"
        if "removed_field" in active:
            record.pop("page", None)
        if "new_field" in active:
            record["experiment"] = {"id": "exp-7", "arm": rng.choice(["a", "b"])}
        if "category_explosion" in active and rng.random() < 0.5:
            record["country"] = "".join(rng.choices(string.ascii_uppercase, k=3))
        return record


@dataclasses.dataclass(frozen=True)
class Stream:
    dataset: str
    topic: str
    spec: str
    source: type[EmbeddedSource]
    partitions: int


STREAMS = {
    "devices": Stream("telemetry", "device-telemetry", SPEC_TEMPLATE, DeviceSource, 3),
    "clicks": Stream("clicks", "web-clicks", CLICKS_SPEC_TEMPLATE, ClickSource, 4),
}


def plan(seed: int, test_start: float, test_days: float, per_kind: int, window: float,
         clean: bool, topic: str = "device-telemetry") -> list[Injection]:
    if clean:
        return []
    rng = random.Random(seed)
    kinds = [k for k in KINDS for _ in range(per_kind)]
    rng.shuffle(kinds)
    slots = int(test_days * 86400.0 // len(kinds))
    out = []
    for i, kind in enumerate(kinds):
        start = test_start + i * slots + rng.uniform(0.2, 0.6) * slots
        start -= start % window
        windows = 3 if kind == "volume_drop" else rng.randint(3, 6)
        out.append(Injection(kind, topic, start, start + windows * window))
    return out


def run(stream: Stream, database: str, injections: list[Injection], days: float,
        window: float, rate: float, seed: int, test_start: float) -> dict[str, float]:
    settings = Settings(database_url=database, checkpoint_interval_s=1e9, poll_timeout_s=0.01,
                        poll_max_records=100_000, idle_partition_timeout_s=window,
                        worker_metrics_port=0)
    upgrade_to_head(database)
    engine = make_engine(database)

    @event.listens_for(engine, "connect")
    def _no_fsync(dbapi_conn, _record):  # type: ignore[no-untyped-def]
        dbapi_conn.execute("PRAGMA synchronous=OFF")

    spec = parse_spec(stream.spec.format(window=int(window)), source="foreign.yaml")
    with engine.begin() as conn:
        dataset_store.apply_spec(conn, spec=spec)
    now = [START]
    profile = StreamProfile(stream.topic, base_rate=rate, partitions=stream.partitions)
    source = stream.source([profile], start=START, clock=lambda: now[0],
                           injections=injections, seed=seed)
    source._test_start = test_start  # noqa: SLF001  # where the firmware rollout begins
    telemetry = Telemetry()
    worker = IngestWorker(settings=settings, engine=engine, datasets=spec.datasets,
                          source=source, telemetry=telemetry, clock=lambda: now[0],
                          hooks=default_hooks(spec, settings, telemetry))
    worker.start()
    end = START + days * 86400.0 + 3 * window
    started = time.perf_counter()
    while now[0] < end:
        now[0] += window
        worker.run_once()
        worker.checkpoint(commit=True)
        worker.finalize_ready()
    engine.dispose()
    return {"seconds": time.perf_counter() - started, "records": float(worker.stats.accepted)}


def covering(injections: list[Injection], window: float, t: float) -> Injection | None:
    """The injection whose alerts a window starting at ``t`` counts for: an upload carries
    readings of the minute before it, so an injection shows from the window before its
    start, and the two windows after its end are its slack."""
    return next((i for i in injections if i.start - window <= t < i.end + 2 * window), None)


def count_alerts(alerts: Mapping[float, set[str]], injections: list[Injection],
                 window: float) -> dict[str, object]:
    """Recall and false alert episodes of the test days' alert windows (window start ->
    the watched series that alerted): what each injection took to be caught (windows),
    what was missed, and the episodes (a gap of 3 quiet windows ends one) that start
    outside every injection, with the series that raised them."""
    caught: dict[str, list[int]] = defaultdict(list)
    missed: Counter[str] = Counter()
    for injection in injections:
        hits = sorted(t for t in alerts
                      if injection.start - window <= t < injection.end + 2 * window)
        if hits:
            caught[injection.kind].append(max(0, int((hits[0] - injection.start) // window)))
        else:
            missed[injection.kind] += 1
    episodes = 0
    by_series: Counter[str] = Counter()
    last = -math.inf
    for t in sorted(alerts):
        if covering(injections, window, t) is None and t - last > 3 * window:
            episodes += 1
            by_series.update(alerts[t])
        last = t
    return {"caught": dict(caught), "missed": dict(missed), "false_episodes": episodes,
            "by_series": by_series.most_common(12)}


def evaluate(stream: Stream, database: str, injections: list[Injection], window: float,
             test_start: float, end: float) -> dict[str, object]:
    spec = parse_spec(stream.spec.format(window=int(window)),
                      source="foreign.yaml").datasets[0]
    engine = make_engine(database)
    alerts: dict[float, set[str]] = defaultdict(set)
    autoencoder: list[tuple[float, bool]] = []  # (window, anomalous) in the test days
    with engine.connect() as conn:
        for metric, field, window_start, anomalous in conn.execute(
                select(metric_points.c.metric, metric_points.c.field,
                       metric_points.c.window_start, metric_points.c.anomalous)
                .where(metric_points.c.dataset == stream.dataset)):
            if window_start < test_start:
                continue
            if anomalous and is_watched(spec, metric, field):
                alerts[window_start].add(f"{metric}|{field}")
            elif metric == AUTOENCODER_METRIC:
                autoencoder.append((window_start, bool(anomalous)))
        # an incident's first window (opened_at is the wall clock, not the simulated one)
        opened = [(row.first_window_start, row.kind, row.metric, row.field)
                  for row in conn.execute(
                      select(incidents).where(incidents.c.dataset == stream.dataset))]
    engine.dispose()
    result = count_alerts(alerts, injections, window)
    false_incidents = [o for o in opened
                       if o[0] >= test_start and covering(injections, window, o[0]) is None]
    # the autoencoder scores (no alerts by default): its share of anomalous windows
    # outside the injections, which should be about as rare as its threshold says
    quiet = [anomalous for t, anomalous in autoencoder
             if covering(injections, window, t) is None]
    warmup_incidents = [o for o in opened if o[0] < test_start]
    test_days = (end - test_start) / 86400.0
    return {**result, "false_per_day": result["false_episodes"] / test_days,  # type: ignore[operator]
            "false_incidents": len(false_incidents),
            "warmup_incidents": len(warmup_incidents),
            "autoencoder_anomalous": sum(quiet) / len(quiet) if quiet else None,
            "false_incident_kinds": Counter(f"{k}:{m}|{f}" for _, k, m, f in false_incidents)
            .most_common(12)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--stream", choices=sorted(STREAMS), default="devices")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--window", type=float, default=300.0)
    parser.add_argument("--rate", type=float, default=1.5,
                        help="records per second (the mean; clicks: at the daily mean)")
    parser.add_argument("--warmup-days", type=float, default=4.0)
    parser.add_argument("--test-days", type=float, default=3.0)
    parser.add_argument("--per-kind", type=int, default=2)
    parser.add_argument("--clean", action="store_true", help="no injections")
    parser.add_argument("--database", help="keep the run here (sqlite URL)")
    args = parser.parse_args()
    test_start = START + args.warmup_days * 86400.0
    end = test_start + args.test_days * 86400.0
    stream = STREAMS[args.stream]
    injections = plan(args.seed, test_start, args.test_days, args.per_kind, args.window,
                      args.clean, stream.topic)
    with tempfile.TemporaryDirectory() as tmp:
        database = args.database or f"sqlite:///{tmp}/foreign.db"
        cost = run(stream, database, injections, args.warmup_days + args.test_days,
                   args.window, args.rate, args.seed, test_start)
        result = evaluate(stream, database, injections, args.window, test_start, end)
    found = sum(len(v) for v in result["caught"].values())  # type: ignore[union-attr]
    print(f"foreign stream {args.stream}, seed {args.seed}, {args.window:g}s windows, "
          f"{cost['records']:.0f} records in {cost['seconds']:.0f}s")
    print(f"caught {found}/{len(injections)}; delays (windows) {result['caught']}; "
          f"missed {result['missed']}")
    print(f"false alert episodes {result['false_episodes']} "
          f"({result['false_per_day']:.2f}/day); series {result['by_series']}")
    print(f"incidents opened outside injections {result['false_incidents']}: "
          f"{result['false_incident_kinds']}; in the warm-up days {result['warmup_incidents']}")
    share = result["autoencoder_anomalous"]
    print("autoencoder (scores, no alerts): anomalous windows outside injections "
          + ("-" if share is None else f"{share:.1%}"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
