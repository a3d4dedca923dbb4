"""Consumer-setting experiment: librdkafka prefetch / poll-batch variants, same run.

Produces the bench data set once into a 1- and a 4-partition topic, then for each variant
(interleaved, ``--repeat`` rounds) runs, each in a fresh pinned process: the bare
consume + ``orjson.loads`` ceiling (1 partition), the real IngestWorker on 1 partition and
one IngestWorker on 4 partitions. Variants: ``name=key:value,key:value[,poll:N][,root:DIR]``
(``root``: run the children from another checkout, e.g. ``git archive HEAD`` unpacked, for a
before/after comparison in one run).
Usage: ``eval "$(deploy/local/stack env)"; .venv/bin/python bench/kafka_settings.py
--variant default= --variant q=queued.max.messages.kbytes:16384``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import uuid
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

import ingest_compute as compute  # noqa: E402
import ingest_e2e as e2e  # noqa: E402


def parse_variant(text: str) -> tuple[str, dict[str, Any], int | None]:
    name, _, body = text.partition("=")
    config: dict[str, Any] = {}
    poll = None
    for item in filter(None, body.split(",")):
        key, _, value = item.partition(":")
        if key == "poll":
            poll = int(value)
        elif key == "root":
            config["__root"] = value
        else:
            config[key] = int(value) if value.lstrip("-").isdigit() else value
    return name, config, poll


def patch_consumer(extra: dict[str, Any]) -> None:
    import confluent_kafka

    import dqpulse.sources.kafka_confluent as module

    base = confluent_kafka.Consumer

    def consumer(config: dict[str, Any]) -> Any:
        return base({**config, **extra})

    module.Consumer = consumer  # type: ignore[assignment,misc]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--variant", action="append", default=[])
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--records", type=int, default=1_000_000)
    parser.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        extra = json.loads(os.environ.get("DQPULSE_BENCH_CONSUMER_EXTRA", "{}"))
        patch_consumer(extra)
        kind, rest = args.child[0], args.child[1:]
        if kind == "bare":
            import confluent_kafka
            base = confluent_kafka.Consumer
            confluent_kafka.Consumer = lambda c: base({**c, **extra})  # type: ignore
            result = e2e.child_bare(rest[0], rest[1], rest[2], int(rest[3]), int(rest[4]))
        else:
            result = e2e.child_worker(rest[0], rest[1], rest[2], rest[3], rest[4], rest[5],
                                      int(rest[6]), int(rest[7]), int(rest[8]))
        print(json.dumps(result))
        return

    variants = [parse_variant(v) for v in args.variant]
    bootstrap = os.environ.get("DQPULSE_KAFKA_BOOTSTRAP", e2e.DEFAULT_KAFKA)
    admin_url = os.environ.get("DQPULSE_DATABASE_URL", e2e.DEFAULT_PG)
    data = Path(tempfile.gettempdir()) / f"dqpulse-bench-{args.records}.ndjson"
    if not data.exists():
        compute.generate(data, args.records)
    values = compute.read_values(data)
    total = len(values)
    run_id = uuid.uuid4().hex[:8]
    topic1, topic4 = f"bench-ks-{run_id}-p1", f"bench-ks-{run_id}-p4"
    e2e.create_topic(bootstrap, topic1, 1)
    e2e.create_topic(bootstrap, topic4, 4)
    db_url = e2e.create_database(admin_url)
    import subprocess

    def spawn(env: dict[str, str], *child: str) -> subprocess.Popen[str]:
        config = json.loads(env["DQPULSE_BENCH_CONSUMER_EXTRA"])
        root = config.pop("__root", None)  # another checkout of the code (before/after)
        env = {**env, "DQPULSE_BENCH_CONSUMER_EXTRA": json.dumps(config)}
        script = Path(root) / "bench" / Path(__file__).name if root else Path(__file__)
        return subprocess.Popen([sys.executable, str(script.resolve()), "--child",
                                 *child], stdout=subprocess.PIPE, text=True,
                                env={**os.environ, **env})

    results: dict[tuple[str, str], list[dict[str, Any]]] = {}
    try:
        e2e.produce(bootstrap, topic1, values, 1)
        e2e.produce(bootstrap, topic4, values, 4)
        del values
        for round_ in range(args.repeat):
            for name, config, poll in variants:
                env = {"DQPULSE_BENCH_CONSUMER_EXTRA": json.dumps(config)}
                if poll:
                    env["DQPULSE_POLL_MAX_RECORDS"] = str(poll)
                results.setdefault((name, "bare 1p"), []).append(e2e.collect(
                    spawn(env, "bare", "confluent", bootstrap, topic1, "1", str(total))))
                for parts, topic in ((1, topic1), (4, topic4)):
                    dataset = f"ks_{name}_{parts}_{round_}_{uuid.uuid4().hex[:4]}".replace(
                        "-", "_")
                    out = e2e.collect(spawn(env, "worker", "confluent", bootstrap, db_url,
                                            topic, dataset, f"ks-{dataset}", "1", str(parts),
                                            str(total)))
                    out["records"] = total
                    out["seconds"] = out["done"] - out["first_poll"]
                    out["consume_seconds"] = out["last_record"] - out["first_poll"]
                    results.setdefault((name, f"worker {parts}p"), []).append(out)
                line = ", ".join(f"{k[1]} {r[-1]['records'] / r[-1]['seconds']:,.0f} "
                                 f"({r[-1]['peak_rss_mib']:.0f} MiB)"
                                 for k, r in results.items() if k[0] == name)
                print(f"round {round_} {name}: {line}", flush=True)
    finally:
        e2e.drop_database(admin_url, db_url)
        e2e.delete_topics(bootstrap, [topic1, topic4])
    print(f"\n{'variant':12s} {'path':10s} {'median rec/s':>13s} {'consumed/s':>11s} "
          f"{'RSS MiB':>8s}  runs")
    for (name, path), runs in results.items():
        rates = sorted(r["records"] / r["seconds"] for r in runs)
        cons = sorted(r["records"] / r.get("consume_seconds", r["seconds"]) for r in runs)
        rss = max(r["peak_rss_mib"] for r in runs)
        print(f"{name:12s} {path:10s} {rates[len(rates) // 2]:13,.0f} "
              f"{cons[len(cons) // 2]:11,.0f} {rss:8.0f}  {', '.join(f'{x:,.0f}' for x in rates)}")


if __name__ == "__main__":
    main()
