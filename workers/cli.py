"""The ``dqpulse`` command line: validate/apply config, migrate, run the API and workers,
the embedded demo, API tokens, and offline scoring of a CSV series.

Settings are read here, once, and passed down.
"""

from __future__ import annotations

import argparse
import itertools
import json
import logging
import os
import sys
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy.exc import SQLAlchemyError

from dqpulse.config import Settings
from dqpulse.errors import ConfigError, ConflictError, NotFoundError, ValidationError
from dqpulse.logs import configure_logging

if TYPE_CHECKING:  # typing only: each command imports what it runs
    from sqlalchemy import Engine

    from dqpulse.spec import DatasetSpec


def _cmd_validate(args: argparse.Namespace, settings: Settings) -> int:
    from dqpulse.spec import load_spec

    # the shape and references of the model; the channels' ${VAR}s are the notifier's to
    # set (`dqpulse doctor` checks them where it runs), so they need not be set here
    spec = load_spec(args.file, expand_env=False)
    print(f"{args.file}: OK ({len(spec.datasets)} datasets, {len(spec.lineage)} lineage edges, "
          f"{len(spec.notifications)} notification channels)")
    return 0


def _cmd_apply(args: argparse.Namespace, settings: Settings) -> int:
    import getpass

    from dqpulse.services.model import apply_model, literal_secrets, plan_apply
    from dqpulse.spec import load_spec
    from dqpulse.store.db import make_engine

    # secrets stay ${VAR} references in the stored model; the notifier expands them
    spec = load_spec(args.file, expand_env=False)
    engine = make_engine(settings.database_url)
    for name in literal_secrets(spec):
        print(f"warning: channel {name}: its secret is written out, so it is stored in the "
              "database; write it as ${VAR} and set VAR where the notifier runs",
              file=sys.stderr)
    if args.dry_run:
        plan = plan_apply(engine, spec, source=str(args.file))
        print("\n".join(plan.lines()) or "nothing to apply")
        print("dry run: nothing applied" if not plan.empty else "dry run: no change")
        return 0
    result = apply_model(engine, spec, applied_by=args.actor or getpass.getuser(),
                         source=str(args.file), prune=args.prune)
    print("\n".join(result.plan.lines()))
    if result.new_version:
        print(f"model version {result.version} applied; running processes pick it up "
              f"within {settings.model_poll_interval_s:g}s")
    else:
        print(f"model version {result.version} is already this model: nothing changed")
    return 0


def _cmd_plan(args: argparse.Namespace, settings: Settings) -> int:
    args.dry_run, args.prune, args.actor = True, False, None
    return _cmd_apply(args, settings)


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
    # log_config=None: uvicorn's loggers go through the process's handler (JSON, redacted);
    # on SIGTERM it stops accepting, closes idle keep-alive connections and gives requests
    # in flight up to the stop deadline
    uvicorn.run(app, host=args.host or settings.api_host, port=args.port or settings.api_port,
                log_level=settings.log_level.lower(), log_config=None,
                timeout_graceful_shutdown=max(1, int(settings.stop_deadline_s)))
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


def _cmd_doctor(args: argparse.Namespace, settings: Settings) -> int:
    if not args.verbose:  # the check lines say it all; library chatter only with -v
        logging.getLogger().setLevel(logging.WARNING)
    from dqpulse.doctor import run_checks

    failed = 0
    for check in run_checks(settings, model_file=args.file, timeout_s=args.timeout):
        failed += not check.ok
        print(check.line(), flush=True)
    print(f"{failed} check(s) failed" if failed else "all checks passed")
    return 1 if failed else 0


def _model_datasets(engine: Engine, file: str | None, names: Sequence[str]
                    ) -> dict[str, DatasetSpec]:
    """The datasets of the model applied to the database (or of ``file``), by name; each
    of ``names`` must be one of them."""
    from dqpulse.services.model import current_model
    from dqpulse.spec import load_spec

    spec = load_spec(file, expand_env=False) if file else current_model(engine).spec
    by_name = {dataset.name: dataset for dataset in spec.datasets}
    unknown = [name for name in names if name not in by_name]
    if unknown:
        raise NotFoundError(f"dataset {unknown[0]!r} is not in the model"
                            + (f" ({file})" if file else ""))
    return by_name


def _cmd_windows_refinalize(args: argparse.Namespace, settings: Settings) -> int:
    from dqpulse.finalize import finalize_skipped, skipped_windows
    from dqpulse.store.db import make_engine
    from dqpulse.utc import iso

    engine = make_engine(settings.database_url)
    try:
        names = [args.dataset] if args.dataset else sorted(skipped_windows(engine))
        by_name = _model_datasets(engine, args.file, names)
        window = None
        if args.window is not None:
            try:
                window = datetime.fromisoformat(args.window.replace("Z", "+00:00"))
            except ValueError as exc:
                raise ValidationError(f"--window {args.window!r}: not an ISO-8601 time "
                                      "(2026-05-28T20:30:00Z)") from exc
            if window.tzinfo is None:
                window = window.replace(tzinfo=UTC)
        failed = written = 0
        for name in names:
            for item in finalize_skipped(
                    engine, by_name[name],
                    window_start=None if window is None else window.timestamp()):
                if item.error is None:
                    written += 1
                    records = "?" if item.records is None else f"{item.records:,.0f}"
                    print(f"{name} {iso(item.window_start)}: written, {records} records, "
                          f"{item.points} points (unscored)")
                else:
                    failed += 1
                    print(f"{name} {iso(item.window_start)}: still skipped: {item.error}")
        if not written and not failed:
            print("no skipped window" + (f" of {args.dataset}" if args.dataset else "")
                  + (f" at {args.window}" if args.window else ""))
        return 1 if failed else 0
    finally:
        engine.dispose()


def _cmd_partitions_skip(args: argparse.Namespace, settings: Settings) -> int:
    from dqpulse.ingest.skip import skip_records
    from dqpulse.store.db import make_engine

    engine = make_engine(settings.database_url)
    try:
        by_name = _model_datasets(engine, args.file, [args.dataset])
        done = skip_records(engine, settings, by_name[args.dataset], args.partition,
                            args.through, drop=args.drop, max_records=args.max)
        where = ("dropped" if args.drop else
                 f"{done.dead_lettered} sent to {settings.dead_letter_topic}")
        print(f"{done.dataset}[{done.partition}]: offsets {done.first}..{done.last} skipped "
              f"({where}); the checkpoint reads on at {done.last + 1} (version "
              f"{done.version}: a worker that owns the partition reloads it)")
        others = sorted(name for name, d in by_name.items()
                        if d.topic == by_name[args.dataset].topic and name != args.dataset)
        if others:
            print(f"the topic also feeds {', '.join(others)}: each has its own checkpoint")
        return 0
    finally:
        engine.dispose()


def _cmd_demo(args: argparse.Namespace, settings: Settings) -> int:
    from workers.demo import run_demo

    return run_demo(port=args.port, database=args.database, speed=args.speed,
                    max_seconds=args.max_seconds)


def _token_line(row: dict[str, Any]) -> str:
    expires = row["expires_at"].isoformat() if row["expires_at"] else "never"
    state = "revoked" if row["revoked_at"] else "active"
    return (f"{row['name']}\trole={row['role']}\tteams={','.join(row['teams']) or '-'}\t"
            f"expires={expires}\t{state}")


def _token_engine(settings: Settings) -> Any:
    from dqpulse.store.db import make_engine

    return make_engine(settings.database_url)


def _later(duration: str | None) -> datetime | None:
    from dqpulse.spec import parse_duration

    if not duration:
        return None
    try:
        return datetime.now(UTC) + timedelta(seconds=parse_duration(duration))
    except ValueError as exc:
        raise ValidationError(str(exc)) from None


def _cmd_token_create(args: argparse.Namespace, settings: Settings) -> int:
    from dqpulse.services import tokens as token_service

    token, row = token_service.create_token(_token_engine(settings), name=args.name,
                                            role=args.role, teams=args.team,
                                            expires_at=_later(args.expires_in))
    print(_token_line(row), file=sys.stderr)
    print(token)
    return 0


def _cmd_token_list(args: argparse.Namespace, settings: Settings) -> int:
    from dqpulse.services import tokens as token_service

    for row in token_service.list_tokens(_token_engine(settings)):
        print(_token_line(row))
    return 0


def _cmd_token_revoke(args: argparse.Namespace, settings: Settings) -> int:
    from dqpulse.services import tokens as token_service

    print(_token_line(token_service.revoke_token(_token_engine(settings), name=args.name)))
    return 0


def _cmd_token_expire(args: argparse.Namespace, settings: Settings) -> int:
    from dqpulse.services import tokens as token_service

    at = _later(args.expires_in) or datetime.now(UTC)
    print(_token_line(token_service.expire_token(_token_engine(settings), name=args.name,
                                                 at=at)))
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


#: what ``detect --explain`` prints of each row's explanation, in this order
EXPLAIN_COLUMNS = ("expected", "expected_low", "expected_high", "z", "evidence")


def _cmd_detect(args: argparse.Namespace, settings: Settings) -> int:
    from dqpulse.detectors.offline import detect_csv, explain_csv

    out = sys.stdout
    alert = args.threshold is not None
    params = dict(args.param)
    rows: Iterator[tuple[str, float, float, dict[str, Any]]]
    if args.explain:
        rows = explain_csv(args.csv, args.detector, args.metric_kind, **params)
    else:  # no explanation computed: as fast as the scores alone
        rows = ((*row, {}) for row in detect_csv(args.csv, args.detector, args.metric_kind,
                                                 **params))
    # the first row opens the file: one that cannot be read fails before any output
    first = list(itertools.islice(rows, 1))
    header = ["timestamp", "value", *(["alert"] if alert else []), "score",
              *(EXPLAIN_COLUMNS if args.explain else ())]
    out.write(",".join(header) + "\n")
    try:
        for timestamp, value, score, why in itertools.chain(first, rows):
            cells = [timestamp, str(value)]
            if alert:
                cells.append(str(int(score >= args.threshold)))
            cells.append(_score_text(score))
            if args.explain:
                cells += [_explained(why.get(column)) for column in EXPLAIN_COLUMNS]
            out.write(",".join(cells) + "\n")
        out.flush()
    except BrokenPipeError:  # the reader stopped early (| head): nothing left to say
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    return 0


def _explained(item: Any) -> str:
    """One ``detect --explain`` cell: a number to 6 significant digits, a list joined by
    ``;``, nothing for a key the detector did not give.

    >>> _explained(1234.56789), _explained(["point", "beyond_range"]), _explained(None)
    ('1234.57', 'point;beyond_range', '')
    """
    if item is None:
        return ""
    if isinstance(item, float):
        return f"{item:.6g}"
    if isinstance(item, list | tuple):
        return ";".join(str(part) for part in item)
    return str(item).replace(",", ";")


def _score_text(score: float) -> str:
    """Six decimals, or fifteen where six would round a score below 1.0 up to 1.000000:
    scores keep rising towards 1.0 without reaching it, and a rounded tie cannot be ranked.

    >>> _score_text(0.9), _score_text(0.99999974), _score_text(1.0)
    ('0.900000', '0.999999740000000', '1.000000')
    """
    text = f"{score:.6f}"
    return f"{score:.15f}" if text == "1.000000" and score < 1.0 else text


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="dqpulse", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("validate", help="check a dqpulse.yaml; every problem with its line")
    p.add_argument("-f", "--file", required=True)
    p.set_defaults(func=_cmd_validate)

    p = sub.add_parser("apply", help="store the whole model (datasets, rules, detectors, "
                       "lineage, channels) as a new version; running processes pick it up")
    p.add_argument("-f", "--file", required=True)
    p.add_argument("--prune", action="store_true",
                   help="also delete the API rows of datasets not in the file")
    p.add_argument("--dry-run", action="store_true", help="print the plan; apply nothing")
    p.add_argument("--actor", help="who applies it, for the model history (default: the "
                   "OS user)")
    p.set_defaults(func=_cmd_apply)

    p = sub.add_parser("plan", help="what `apply -f` would change, dataset by dataset")
    p.add_argument("-f", "--file", required=True)
    p.set_defaults(func=_cmd_plan)

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

    p = sub.add_parser("doctor", help="check settings and model against the world: "
                                      "database, Kafka, topics, registry, channels, Prometheus")
    p.add_argument("-f", "--file", help="check this dqpulse.yaml instead of the model "
                                        "applied to the database")
    p.add_argument("--timeout", type=float, default=5.0, help="seconds per check (5)")
    p.set_defaults(func=_cmd_doctor)

    p = sub.add_parser("windows", help="windows finalization skipped")
    wsub = p.add_subparsers(dest="windows_command", required=True)
    w = wsub.add_parser(
        "refinalize", help="finalize again the windows that finalization skipped after "
                           "failing every try (`dqpulse doctor` lists them), once what "
                           "made them fail is fixed: written unscored, no incident")
    w.add_argument("--dataset", help="only this dataset (default: every one with skipped "
                                     "windows)")
    w.add_argument("--window", help="only the window starting at this ISO-8601 time "
                                    "(e.g. 2026-05-28T20:30:00Z)")
    w.add_argument("-f", "--file", help="the datasets of this dqpulse.yaml instead of the "
                                        "model applied to the database")
    w.set_defaults(func=_cmd_windows_refinalize)

    p = sub.add_parser("partitions", help="a data set's partitions as the ingest workers "
                                          "read them")
    psub = p.add_subparsers(dest="partitions_command", required=True)
    w = psub.add_parser(
        "skip", help="move a partition's checkpoint past records its worker cannot get past "
                     "(it dies on one, and again after each restart): each is sent "
                     "unchanged to DQPULSE_DEAD_LETTER_TOPIC (reason `skipped`), counted by "
                     "no window")
    w.add_argument("--dataset", required=True)
    w.add_argument("--partition", type=int, required=True)
    w.add_argument("--through", type=int, required=True, metavar="OFFSET",
                   help="the last offset to skip (from the checkpoint's offset on)")
    w.add_argument("--max", type=int, default=1000,
                   help="refuse to skip more records than this (1000)")
    w.add_argument("--drop", action="store_true",
                   help="do not send them to the dead-letter topic (they are lost)")
    w.add_argument("-f", "--file", help="the datasets of this dqpulse.yaml instead of the "
                                        "model applied to the database")
    w.set_defaults(func=_cmd_partitions_skip)

    p = sub.add_parser("demo", help="everything in one process: SQLite + a built-in stream")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--database", default="sqlite:///dqpulse-demo.db")
    p.add_argument("--speed", type=float, default=60.0,
                   help="simulated seconds per real second")
    p.add_argument("--max-seconds", type=float, help="stop after this long")
    p.set_defaults(func=_cmd_demo)

    p = sub.add_parser("token", help="API tokens")
    tsub = p.add_subparsers(dest="token_command", required=True)
    t = tsub.add_parser("create", help="create a token (printed once on stdout)")
    t.add_argument("--name", required=True)
    t.add_argument("--role", choices=["viewer", "editor", "admin"], default="viewer",
                   help="viewer reads; editor also acts on incidents, silences, lineage; "
                        "admin also manages tokens and sees every team")
    t.add_argument("--team", action="append", default=[], metavar="OWNER",
                   help="a dataset owner the token sees (repeatable)")
    t.add_argument("--owner", dest="team", action="append", help=argparse.SUPPRESS)
    t.add_argument("--expires-in", metavar="DURATION", help="e.g. 90d (default: never)")
    t.set_defaults(func=_cmd_token_create)
    t = tsub.add_parser("list", help="list tokens (never their secrets)")
    t.set_defaults(func=_cmd_token_list)
    t = tsub.add_parser("revoke", help="revoke a token for good")
    t.add_argument("name")
    t.set_defaults(func=_cmd_token_revoke)
    t = tsub.add_parser("expire", help="expire a token now, or set when it expires")
    t.add_argument("name")
    t.add_argument("--in", dest="expires_in", metavar="DURATION",
                   help="expire after this long instead of now (e.g. 7d)")
    t.set_defaults(func=_cmd_token_expire)

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
    p.add_argument("--explain", action="store_true",
                   help="also print why: expected, expected_low, expected_high (the band "
                        "the row's decision agrees with), z, evidence (what decided an "
                        "alert, ';'-separated)")
    p.set_defaults(func=_cmd_detect)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        settings = Settings()
    except Exception as exc:  # noqa: BLE001 - pydantic names the bad variable
        print(f"error: invalid DQPULSE_* settings:\n{exc}", file=sys.stderr)
        return 2
    configure_logging(settings, verbose=args.verbose)
    try:
        return int(args.func(args, settings))
    except ConfigError as exc:
        for problem in exc.problems:
            print(f"error: {problem}", file=sys.stderr)
        return 2
    except (ConflictError, NotFoundError, ValidationError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except SQLAlchemyError:
        behind = _schema_behind(settings)
        if behind is None:
            raise  # not the schema: logged whole, with its traceback
        print(f"error: {behind}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


def _schema_behind(settings: Settings) -> str | None:
    """Why a database error came from a schema this version cannot use (never migrated,
    or migrations missing), or None (that, or the database cannot even be asked)."""
    from dqpulse.store.db import make_engine, schema_behind_if_known

    engine = make_engine(settings.database_url)
    try:
        return schema_behind_if_known(engine)
    finally:
        engine.dispose()


if __name__ == "__main__":
    sys.exit(main())
