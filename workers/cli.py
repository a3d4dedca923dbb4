"""The ``dqpulse`` command line: validate/apply config, migrate, run the API and workers,
the embedded demo, API tokens, and offline scoring of a CSV series.

Settings are read here, once, and passed down.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence
from typing import Any

from dqpulse.config import Settings
from dqpulse.errors import ConfigError


def _cmd_validate(args: argparse.Namespace, settings: Settings) -> int:
    from dqpulse.spec import load_spec

    spec = load_spec(args.file)
    print(f"{args.file}: OK ({len(spec.datasets)} datasets, {len(spec.lineage)} lineage edges, "
          f"{len(spec.notifications)} notification channels)")
    return 0


def _cmd_apply(args: argparse.Namespace, settings: Settings) -> int:
    from dqpulse.services.model import apply_model
    from dqpulse.spec import load_spec
    from dqpulse.store.db import make_engine

    spec = load_spec(args.file)
    changes = apply_model(make_engine(settings.database_url), spec, prune=args.prune)
    for verb in ("created", "updated", "unchanged", "deleted"):
        for name in changes[verb]:
            print(f"dataset {name}: {verb}")
    return 0


def _cmd_migrate(args: argparse.Namespace, settings: Settings) -> int:
    from dqpulse.store.db import upgrade_to_head

    upgrade_to_head(settings.database_url)
    print("database is at the latest schema")
    return 0


def _cmd_retention(args: argparse.Namespace, settings: Settings) -> int:
    from dqpulse.services.retention import run_retention
    from dqpulse.store.db import make_engine

    engine = make_engine(settings.database_url)
    try:
        report = run_retention(engine, settings)
    finally:
        engine.dispose()
    print(json.dumps(report.as_dict(), indent=2))
    return 0 if report.ran else 1


def _cmd_api(args: argparse.Namespace, settings: Settings) -> int:
    import uvicorn

    from service.app import create_app

    app = create_app(settings)
    uvicorn.run(app, host=args.host or settings.api_host, port=args.port or settings.api_port,
                log_level=settings.log_level.lower())
    return 0


def _cmd_worker(args: argparse.Namespace, settings: Settings) -> int:
    if args.role == "ingest":
        from workers.ingest import run_ingest

        return run_ingest(settings, client=args.client, max_seconds=args.max_seconds)
    if args.role == "score":
        from workers.score import run_score

        return run_score(settings, max_seconds=args.max_seconds)
    from workers.notify import run_notify

    return run_notify(settings, max_seconds=args.max_seconds)


def _cmd_demo(args: argparse.Namespace, settings: Settings) -> int:
    from workers.demo import run_demo

    return run_demo(port=args.port, database=args.database, speed=args.speed,
                    max_seconds=args.max_seconds)


def _cmd_token(args: argparse.Namespace, settings: Settings) -> int:
    from dqpulse.services.tokens import create_token
    from dqpulse.store.db import make_engine

    token = create_token(make_engine(settings.database_url), name=args.name, owner=args.owner)
    print(token)
    return 0


def _param(text: str) -> tuple[str, Any]:
    """``k=v`` with ``v`` read as JSON when it parses (numbers, true/false, null)."""
    key, sep, raw = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected key=value, got {text!r}")
    try:
        return key, json.loads(raw)
    except ValueError:
        return key, raw


# The kinds of dqpulse.detectors.offline.KIND_METRICS, named here so that building the
# parser does not import the detectors (River, NumPy: ~3 s and ~120 MiB for every command);
# a unit test keeps the two equal.
METRIC_KINDS = ("distribution", "freshness", "ratio", "volume")


class _DetectHelp(argparse.Action):
    """``detect --help``: only now load the detectors, to name each kind's default and
    every registered detector."""

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace,
                 values: object, option_string: str | None = None) -> None:
        from dqpulse.detectors import available  # heavy: see METRIC_KINDS
        from dqpulse.detectors.offline import KIND_METRICS, detector_for_kind

        defaults = "; ".join(f"{kind}: {detector_for_kind(kind)[0]}" for kind in KIND_METRICS)
        parser.description = (f"{parser.description} Defaults per kind: {defaults}. "
                              f"Detectors: {', '.join(available())}.")
        parser.print_help()
        parser.exit()


def _cmd_detect(args: argparse.Namespace, settings: Settings) -> int:
    from dqpulse.detectors.offline import detect_csv

    out = sys.stdout
    alert = args.threshold is not None
    out.write("timestamp,value,alert,score\n" if alert else "timestamp,value,score\n")
    rows = detect_csv(args.csv, args.detector, args.metric_kind, **dict(args.param))
    for timestamp, value, score in rows:
        if alert:
            out.write(f"{timestamp},{value},{int(score >= args.threshold)},{score:.6f}\n")
        else:
            out.write(f"{timestamp},{value},{score:.6f}\n")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="dqpulse", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("validate", help="check a dqpulse.yaml; every problem with its line")
    p.add_argument("-f", "--file", required=True)
    p.set_defaults(func=_cmd_validate)

    p = sub.add_parser("apply", help="validate and store datasets and lineage (all or nothing)")
    p.add_argument("-f", "--file", required=True)
    p.add_argument("--prune", action="store_true", help="delete datasets not in the file")
    p.set_defaults(func=_cmd_apply)

    p = sub.add_parser("migrate", help="upgrade the database schema to the latest version")
    p.set_defaults(func=_cmd_migrate)

    p = sub.add_parser("retention", help="one history retention pass: partitions ahead, "
                       "drop expired days, delete expired rollups and resolved incidents")
    p.set_defaults(func=_cmd_retention)

    p = sub.add_parser("api", help="serve the REST API (OpenAPI at /docs)")
    p.add_argument("--host")
    p.add_argument("--port", type=int)
    p.set_defaults(func=_cmd_api)

    p = sub.add_parser("worker", help="run a worker process")
    p.add_argument("role", choices=["ingest", "score", "notify"])
    p.add_argument("--client", choices=["confluent", "kafka-python"],
                   help="Kafka client (default: DQPULSE_KAFKA_CLIENT)")
    p.add_argument("--max-seconds", type=float, help="stop after this long (tests)")
    p.set_defaults(func=_cmd_worker)

    p = sub.add_parser("demo", help="everything in one process: SQLite + a built-in stream")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--database", default="sqlite:///dqpulse-demo.db")
    p.add_argument("--speed", type=float, default=60.0,
                   help="simulated seconds per real second")
    p.add_argument("--max-seconds", type=float, help="stop after this long")
    p.set_defaults(func=_cmd_demo)

    p = sub.add_parser("token", help="API tokens")
    tsub = p.add_subparsers(dest="token_command", required=True)
    t = tsub.add_parser("create", help="create a token (printed once)")
    t.add_argument("--name", required=True)
    t.add_argument("--owner")
    t.set_defaults(func=_cmd_token)

    p = sub.add_parser(
        "detect", help="score a timestamp,value CSV offline, one score per row",
        add_help=False,
        description="Score each row before learning it, as the service scores a window. "
                    "Without --detector a series gets the service's default for a metric of "
                    "its kind.")
    p.add_argument("-h", "--help", action=_DetectHelp, nargs=0,
                   help="show this help (with each kind's default and every detector)")
    p.add_argument("--csv", required=True)
    p.add_argument("--metric-kind", choices=METRIC_KINDS, default="distribution",
                   help="which production default to use: volume (record counts: bounded "
                        "below by 0, counting-noise floor), ratio (robust median/MAD, alerts "
                        "upwards), freshness (seconds, alerts upwards), distribution (any "
                        "measurement; the default)")
    p.add_argument("--detector", help="detector name instead of the kind's default")
    p.add_argument("--param", type=_param, action="append", default=[], metavar="K=V",
                   help="detector parameter, repeatable (e.g. --param adopt_after=24)")
    p.add_argument("--threshold", type=float,
                   help="also print an alert column: 1 where score >= THRESHOLD")
    p.set_defaults(func=_cmd_detect)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        settings = Settings()
    except Exception as exc:  # noqa: BLE001 - pydantic names the bad variable
        print(f"error: invalid DQPULSE_* settings:\n{exc}", file=sys.stderr)
        return 2
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else getattr(logging, settings.log_level.upper(),
                                                         logging.INFO),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        return int(args.func(args, settings))
    except ConfigError as exc:
        for problem in exc.problems:
            print(f"error: {problem}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
