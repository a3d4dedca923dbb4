"""Root cause on the real stack: a break in one upstream dataset and one value of a
dimension, found through Kafka -> ingest worker -> Postgres -> REST API (issue 14).

Ten seeded runs share one database, one worker process and one API (each run has its own
five datasets and topics): a 4-hop lineage ``src-a, src-b -> join -> out-x, out-y``;
per run one of ``src-a``, ``src-b``, ``join`` is the true root and one of 24 producers
the injected value. Every record of that producer has ``customer.segment`` null in the
broken window, in the root and in everything downstream of it; all datasets carry ~1%
random nulls, spread over every producer, country, app version and key prefix (declared:
``kafka.key_prefix`` is opt-in, kept here as a distracting dimension). The
acceptance: in at least 9 of 10 runs the root-cause endpoint ranks the true dataset first
and names ``producer=<injected>`` first, and one incident is opened with the downstream
datasets as its impacts (the notifications carry the root, the impacts and the segment).

The scenarios are random: the seed is drawn per session and printed (``root cause e2e
seed=...``); ``DQPULSE_RCA_SEED=<seed>`` replays one. About 30 s on a quiet 2-core box.
"""

from __future__ import annotations

import math
import os
import random
import time

import pytest
from confluent_kafka import Producer
from fastapi.testclient import TestClient

from dqpulse.config import Settings
from dqpulse.finalize.scoring import default_hooks
from dqpulse.ingest import IngestWorker
from dqpulse.spec import parse_spec
from dqpulse.store import checkpoints
from dqpulse.store import datasets as dataset_store
from dqpulse.store import incidents as incident_store
from dqpulse.store import outbox as outbox_store
from dqpulse.store.db import make_engine
from service.app import create_app
from tests.integration.helpers import WorkerThread, json_bytes, wait_until
from workers.ingest import make_source

pytestmark = pytest.mark.integration

RUNS = 10
WINDOW = 10
WINDOWS = 3          # 0..1 healthy (the segment reference), 2 broken
BROKEN = 2
PRODUCERS = [f"svc-{i:02d}" for i in range(24)]
COUNTRIES = ["DE", "FR", "US", "BR", "JP"]
VERSIONS = [f"5.{i}" for i in range(6)]
PER_PRODUCER = 20    # records per producer and window: 480 per window and dataset
NODES = ("src-a", "src-b", "join", "out-x", "out-y")
DOWNSTREAM = {"src-a": {"join", "out-x", "out-y"}, "src-b": {"join", "out-x", "out-y"},
              "join": {"out-x", "out-y"}}


def _spec(run_topics: list[dict[str, str]]) -> str:
    lines = ["notifications:",
             "  - {name: oncall, type: webhook, url: 'http://127.0.0.1:9/hook', secret: s}",
             "datasets:"]
    for run, topics in enumerate(run_topics):
        for node in NODES:
            lines += [
                f"  - name: r{run}-{node}", f"    topic: {topics[node]}",
                "    event_time: ts", f"    window: {WINDOW}s", "    lateness: 0s",
                f"    owner: team-{node}",
                "    dimensions: [producer, country, app_version, kafka.key_prefix]",
                "    fields:",
                "      customer.segment: {type: string}",
                "      amount: {type: number}",
                "    detectors:",
                "      - {metric: completeness.null_ratio, field: customer.segment,"
                " detector: threshold, params: {max: 0.04}}",
            ]
    lines.append("lineage:")
    for run in range(len(run_topics)):
        for source, target in (("src-a", "join"), ("src-b", "join"), ("join", "out-x"),
                               ("join", "out-y")):
            lines.append(f"  - {{from: r{run}-{source}, to: r{run}-{target}}}")
    return "\n".join(lines) + "\n"


def _records(rng: random.Random, base: float, broken_producer: str | None
             ) -> list[tuple[int | None, bytes]]:
    out: list[tuple[int | None, bytes]] = []
    for window in range(WINDOWS):
        rows = [p for p in PRODUCERS for _ in range(PER_PRODUCER)]
        rng.shuffle(rows)
        for i, producer in enumerate(rows):
            null = rng.random() < 0.01 or (window == BROKEN and producer == broken_producer)
            out.append((0, json_bytes({
                "ts": base + window * WINDOW + (i % WINDOW) + rng.random() * 0.9,
                "producer": producer, "country": rng.choice(COUNTRIES),
                "app_version": rng.choice(VERSIONS),
                "customer": {"segment": None if null else rng.choice(["smb", "ent", "pro"])},
                "amount": round(rng.lognormvariate(3, 0.5), 2)})))
    return out


def test_root_cause_names_the_broken_dataset_and_value_and_opens_one_incident(
        fresh_db, make_topic, kafka_bootstrap):
    started = time.monotonic()
    seed = int(os.environ.get("DQPULSE_RCA_SEED") or random.SystemRandom().randrange(10**6))
    print(f"root cause e2e seed={seed} (replay: DQPULSE_RCA_SEED={seed})")
    base = math.floor(time.time() / WINDOW) * WINDOW - (WINDOWS + 3) * WINDOW
    plans = []
    run_topics = []
    for run in range(RUNS):
        rng = random.Random(seed * 100 + run)
        plans.append({"root": rng.choice(["src-a", "src-b", "join"]),
                      "value": rng.choice(PRODUCERS), "rng": rng})
        run_topics.append({node: make_topic(f"rc{run}-{node}") for node in NODES})
    producer = Producer({"bootstrap.servers": kafka_bootstrap, "linger.ms": 20,
                         "enable.idempotence": True})
    for run, plan in enumerate(plans):
        affected = {plan["root"]} | DOWNSTREAM[plan["root"]]
        for node in NODES:
            broken = plan["value"] if node in affected else None
            for i, (_, value) in enumerate(_records(plan["rng"], base, broken)):
                key = f"cust{plan['rng'].randrange(30)}:{i}".encode()
                while True:
                    try:
                        producer.produce(run_topics[run][node], value=value, key=key,
                                         partition=0)
                        break
                    except BufferError:
                        producer.poll(0.1)
    assert producer.flush(60) == 0

    settings = Settings(database_url=fresh_db, kafka_bootstrap=kafka_bootstrap,
                        kafka_group=f"g-{run_topics[0]['src-a']}", idle_partition_timeout_s=1.0,
                        checkpoint_interval_s=0.5, worker_metrics_port=0, auth="open",
                        autoencoder="off")
    spec = parse_spec(_spec(run_topics))
    engine = make_engine(fresh_db)
    with engine.begin() as conn:
        dataset_store.apply_spec(conn, spec=spec)
    source, _ = make_source(settings, "confluent")
    worker = IngestWorker(settings=settings, engine=engine, datasets=spec.datasets,
                          source=source, hooks=default_hooks(spec, settings))
    api = TestClient(create_app(settings, engine=engine))
    end = base + WINDOWS * WINDOW

    def all_finalized() -> bool:
        done = 0
        with engine.connect() as conn:
            for dataset in spec.datasets:
                progress = checkpoints.get_progress(conn, dataset=dataset.name)
                if progress is not None and (progress.finalized_until or 0) >= end:
                    done += 1
        return done == len(spec.datasets)

    with WorkerThread(worker):
        wait_until(all_finalized, 420, interval_s=1.0, message="every window finalized")

    ranked_right, one_incident, notified = 0, 0, 0
    failures = []
    for run, plan in enumerate(plans):
        names = {f"r{run}-{node}" for node in NODES}
        with engine.connect() as conn:
            rows = [r for name in sorted(names)
                    for r in incident_store.get_page(conn, dataset=name, limit=20)]
        own = [r for r in rows if (r.get("details") or {}).get("merged_into") is None]
        root_name = f"r{run}-{plan['root']}"
        expected_impacts = {f"r{run}-{n}" for n in DOWNSTREAM[plan["root"]]}
        if not own:
            failures.append((run, plan["root"], plan["value"], "no incident"))
            continue
        incident = min(own, key=lambda r: r["id"])
        body = api.get(f"/api/v1/incidents/{incident['id']}/root-cause").json()
        root = body.get("root") or {}
        segment = root.get("segment") or {}
        impacts = {i["dataset"] for i in body.get("impacts", [])}
        if (root.get("dataset") == root_name and segment.get("dimension") == "producer"
                and segment.get("value") == plan["value"]):
            ranked_right += 1
            assert f"comes from producer={plan['value']}" in segment["text"], segment
        else:
            failures.append((run, plan["root"], plan["value"], root, segment))
        if (len(own) == 1 and incident["dataset"] == root_name
                and impacts == expected_impacts
                and all(i["owner"] for i in body["impacts"])):
            one_incident += 1
        else:
            failures.append((run, "incidents", [(r["dataset"], r["kind"]) for r in own],
                             sorted(impacts)))
        # notifications: "opened" for the root, one "impact" per downstream dataset, each
        # carrying the root; the last one lists every impact with its owner (healthy
        # windows after the break may resolve the incident: that message comes last)
        with engine.connect() as conn:
            messages = [r["payload"] for r in outbox_store.get_all(
                conn, incident_id=int(incident["id"])) if r["event"] != "resolved"]
        events = sorted(m["event"] for m in messages)
        if (events == sorted(["opened", *["impact"] * len(expected_impacts)])
                and all(m["root"]["dataset"] == incident["dataset"] for m in messages)
                and {(i["dataset"], i["owner"]) for i in messages[-1]["impacts"]}
                == {(name, f"team-{name.split('-', 1)[1]}") for name in impacts}):
            notified += 1
        else:
            failures.append((run, "notifications", events))
    elapsed = time.monotonic() - started
    print(f"root cause e2e seed={seed}: ranked right {ranked_right}/{RUNS}, one incident with "
          f"its impacts {one_incident}/{RUNS}, notified {notified}/{RUNS}, {elapsed:.0f}s; "
          f"misses: {failures}")
    assert ranked_right >= 9, (seed, ranked_right, failures)
    assert one_incident >= 9, (seed, one_incident, failures)
    assert notified >= 9, (seed, notified, failures)
    engine.dispose()
