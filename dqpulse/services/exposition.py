"""Data-quality values for Prometheus, read from the database at scrape time.

One collector, registered in the API, reads the newest finalized window of every dataset
in the model, the active incidents and each dataset's progress, and turns them into gauge
families (names in :mod:`dqpulse.services.exposition_names`, listed in docs/metrics.md).

Why a collector over the database rather than gauges set by the finalizing worker: a
window is finalized by whichever worker owns the dataset's last partition, so gauges set
there live in several processes at once (``sum by (dataset)`` over-counts) and outlive the
dataset. Read at scrape time, a value exists only while its row does: a removed dataset's
series are gone at the next scrape. Exactly once across replicas: only the process that
holds a session advisory lock (``dqpulse:exporter``) exports; the others export
``dqpulse_exporter_leader 0`` and no data series, and take over at their next scrape when
the holder's database session ends.

Cost: a dataset's newest window is read again only when its ``finalized_until`` moves
(one query for all the moved ones, at most their share of ``field_series_budget``
per-field rows each); progress and incidents are one indexed query each per scrape. Each
dataset's samples and their exposition text are kept while its inputs (progress row,
window, admitted per-field series, incidents) are unchanged, so a scrape renders only the
datasets that moved (:func:`render`: what the API's ``/metrics`` serves, byte for byte
what ``generate_latest`` writes for the same samples). :meth:`warm` runs one collection
as the API starts, so the first scrape is not the cold one. Per-field series are bounded
by ``field_series_budget``, shared round-robin among the datasets; what the budget leaves
out is counted.
"""

from __future__ import annotations

import itertools
import logging
import math
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from prometheus_client.samples import Sample
from sqlalchemy import Connection, Engine
from sqlalchemy.exc import SQLAlchemyError

from dqpulse.services.exposition_names import DATA_FAMILIES, MAPPINGS, Family
from dqpulse.spec import Spec
from dqpulse.store import exposition as store
from dqpulse.store.exposition import DatasetProgress, LatestPoint

log = logging.getLogger(__name__)

LEADER_LOCK = "dqpulse:exporter"
_Family = GaugeMetricFamily | CounterMetricFamily


class _RenderedGauge(GaugeMetricFamily):
    """A data family whose exposition text was assembled from cached per-dataset lines
    (``exposition``; None: render it from its samples)."""

    exposition: str | None = None


class _Many(Collector):
    def __init__(self, metrics: list[Metric]) -> None:
        self.metrics = metrics

    def collect(self) -> Iterable[Metric]:
        return self.metrics


def _lines(metric: Metric) -> str:
    """A family's exposition text as ``generate_latest`` writes it (header included)."""
    return generate_latest(_Many([metric])).decode()


def render(registry: Collector) -> bytes:
    """``generate_latest(registry)``, except that a family carrying its exposition text
    (this module's data families) is not rendered again sample by sample."""
    parts, plain = [], []
    for metric in registry.collect():
        text = getattr(metric, "exposition", None)
        if text is None:
            plain.append(metric)
            continue
        parts.append(generate_latest(_Many(plain)))
        parts.append(text.encode())
        plain = []
    parts.append(generate_latest(_Many(plain)))
    return b"".join(parts)


@dataclass(slots=True)
class _Fragment:
    """One dataset's samples per data family and their exposition lines, valid while
    ``key`` (its progress row, window, admitted per-field series, incidents) holds."""

    key: tuple[Any, ...]
    samples: dict[str, list[Sample]]
    text: dict[str, str]

    def valid_for(self, key: tuple[Any, ...]) -> bool:
        item, window, admitted, incidents = key
        return (self.key[1] is window and self.key[2] == admitted
                and self.key[3] == incidents and self.key[0] == item)


@dataclass(slots=True)
class _Window:
    """A dataset's newest window as read: its dataset-level points, its first per-field
    points in (metric, field) order (at most the budget) and how many it has in all."""

    finalized_until: float | None
    dataset_level: list[LatestPoint] = field(default_factory=list)
    per_field: list[LatestPoint] = field(default_factory=list)
    per_field_total: int = 0


class _Leadership:
    """A session advisory lock on a connection of its own; lost with the connection."""

    def __init__(self, engine: Engine, key: str) -> None:
        self.engine = engine
        self.key = key
        self.conn: Connection | None = None
        self.held = False

    def check(self) -> bool:
        try:
            if self.conn is None:
                self.conn = self.engine.connect()
            if self.held:
                store.ping(self.conn)
            else:
                self.held = store.try_session_lock(self.conn, key=self.key)
            self.conn.commit()
        except SQLAlchemyError as exc:
            log.warning("exporter: lost the database session (%s)", type(exc).__name__)
            self.close()
        return self.held

    def close(self) -> None:
        if self.conn is not None:
            try:
                self.conn.invalidate()  # never back to the pool: the lock goes with it
                self.conn.close()
            except SQLAlchemyError:
                pass
        self.conn = None
        self.held = False


class DatasetMetricsCollector(Collector):
    """Prometheus collector of every dataset's data-quality values (see module docstring)."""

    def __init__(self, engine: Engine, *, field_series_budget: int = 200,
                 elect: bool = True, model: Callable[[], Spec] | None = None) -> None:
        self.engine = engine
        # the applied model, when the process follows one: a dataset removed from it stops
        # being exported even while its API rows remain (apply without --prune)
        self.model = model
        self.field_series_budget = field_series_budget
        # the election needs a connection of its own: an engine stand-in that hands out one
        # shared connection (tests' SAVEPOINT engine) is one process, the only exporter
        self.leadership = (_Leadership(engine, LEADER_LOCK)
                           if elect and isinstance(engine, Engine) else None)
        self._lock = threading.Lock()
        self._windows: dict[str, _Window] = {}
        self._fragments: dict[str, _Fragment] = {}
        self._headers: dict[str, str] = {}
        self._share = 0  # per-field series one dataset may get of the budget (last scrape)
        self.dropped_total = 0.0
        self.errors_total = 0.0

    def describe(self) -> Iterable[Metric]:
        return list(self._empty_families().values())

    def collect(self) -> Iterable[Metric]:
        with self._lock:
            started = time.perf_counter()
            families = self._empty_families()
            leader = self.leadership.check() if self.leadership is not None else True
            if leader:
                try:
                    self._fill(families)
                except Exception as exc:  # noqa: BLE001 - a scrape never fails for the data
                    # series: the process's own metrics (and `up`) must still come through
                    self.errors_total += 1
                    log.warning("exporter: reading the data-quality series failed (%s: %s)",
                                type(exc).__name__, exc)
                    families = self._empty_families()
            families["leader"].add_metric([], 1.0 if leader else 0.0)
            families["dropped_total"].add_metric([], self.dropped_total)
            families["errors"].add_metric([], self.errors_total)
            families["duration"].add_metric([], time.perf_counter() - started)
            return list(families.values())

    def warm(self) -> None:
        """One collection now (the API calls it in the background as it starts): the
        connections, statements and every dataset's window are ready for the first
        scrape. Only with an engine of its own (never a test's shared connection)."""
        if self.leadership is not None:
            self.collect()

    def close(self) -> None:
        if self.leadership is not None:
            self.leadership.close()

    # -- reading -------------------------------------------------------------------------
    def _fill(self, families: dict[str, _Family]) -> None:
        with self.engine.connect() as conn:
            progress = store.get_progress(conn)
            if self.model is not None:
                names = {dataset.name for dataset in self.model().datasets}
                progress = [item for item in progress if item.name in names]
            windows = self._windows_of(conn, progress)
            incidents = store.count_active_incidents(conn)
        self._windows = windows  # a removed dataset's cached window goes with it
        active: dict[str, list[tuple[str, str, int]]] = defaultdict(list)
        for dataset, kind, severity, count in incidents:
            active[dataset].append((kind, severity, count))
        admitted = Counter(dataset for dataset, _ in _round_robin(
            {d: w.per_field for d, w in windows.items()}, self.field_series_budget))
        dropped = sum(w.per_field_total for w in windows.values()) - sum(admitted.values())
        fragments: dict[str, _Fragment] = {}
        for item in progress:  # by dataset name
            key = (item, windows[item.name], admitted[item.name],
                   tuple(active.get(item.name, ())))
            cached = self._fragments.get(item.name)
            fragments[item.name] = (cached if cached is not None and cached.valid_for(key)
                                    else self._fragment(key))
        self._fragments = fragments  # a removed dataset's lines go with it
        for name, family in families.items():
            if isinstance(family, _RenderedGauge):
                header = self._header(name, family)  # before the samples go in
                family.samples = [s for f in fragments.values() for s in f.samples.get(name, ())]
                family.exposition = header + "".join(f.text.get(name, "")
                                                     for f in fragments.values())
        families["dropped"].add_metric([], float(dropped))
        self.dropped_total += dropped

    def _fragment(self, key: tuple[Any, ...]) -> _Fragment:
        item, window, admitted, incidents = key
        families = self._empty_families()
        _dataset_families(families, item)
        for kind, severity, count in incidents:
            families["incidents"].add_metric([item.name, kind, severity], float(count))
        for point in [*window.dataset_level, *window.per_field[:admitted]]:
            _add_point(families, item.name, point)
        samples = {name: f.samples for name, f in families.items()
                   if f.samples and isinstance(f, _RenderedGauge)}
        # generate_latest's own lines for these samples, rendered at once and cut at each
        # family's header (a label value never holds a newline: it is escaped)
        rendered = generate_latest(_Many([families[name] for name in samples])).decode()
        chunks = ("\n" + rendered.removesuffix("\n")).split("\n# HELP ")[1:]
        text = {name: chunk.split("\n", 2)[2] + "\n"
                for name, chunk in zip(samples, chunks, strict=True)}
        return _Fragment(key, samples, text)

    def _header(self, name: str, family: Metric) -> str:
        if name not in self._headers:
            self._headers[name] = _lines(family)  # no samples yet: HELP and TYPE only
        return self._headers[name]

    def _windows_of(self, conn: Connection, progress: list[DatasetProgress]
                    ) -> dict[str, _Window]:
        """Each dataset's newest window: cached until its ``finalized_until`` moves; the
        moved ones read in one query, each with no more per-field rows than its share of
        the budget can use."""
        windows: dict[str, _Window] = {}
        moved = []
        for item in progress:
            cached = self._windows.get(item.name)
            if cached is not None and cached.finalized_until == item.finalized_until:
                windows[item.name] = cached
            else:
                windows[item.name] = _Window(item.finalized_until)
                if item.finalized_until is not None:
                    moved.append(item.name)
        budget = self.field_series_budget
        share = max(self._share, -(-budget // max(1, len(progress)))) if budget else 0
        self._read(conn, windows, moved, min(share, budget))
        self._share = _water_level([w.per_field_total for w in windows.values()], budget)
        short = [name for name, w in windows.items() if w.finalized_until is not None
                 and len(w.per_field) < min(w.per_field_total, self._share)]
        self._read(conn, windows, short, self._share)  # a share grew: others have fewer
        return windows

    def _read(self, conn: Connection, windows: dict[str, _Window], names: list[str],
              field_limit: int) -> None:
        if not names:
            return
        read = store.get_newest_windows(conn, datasets=names, field_limit=field_limit)
        for name, (points, total) in read.items():
            window = windows[name]
            window.dataset_level = [p for p in points if p.field == ""]
            window.per_field = [p for p in points if p.field != ""]
            window.per_field_total = total

    # -- families ------------------------------------------------------------------------
    @staticmethod
    def _empty_families() -> dict[str, _Family]:
        out: dict[str, _Family] = {
            family.name: _RenderedGauge(
                family.name, family.help,
                labels=["dataset", *(["field"] if family.per_field else []), *family.labels])
            for family in DATA_FAMILIES
        }
        gauge, counter, data = GaugeMetricFamily, CounterMetricFamily, _RenderedGauge
        out.update({
            "score": data("dqpulse_anomaly_score",
                           "Detector score of the series in the newest window (higher is "
                           "more anomalous)", labels=["dataset", "metric", "field"]),
            "info": data("dqpulse_dataset_info", "Datasets in the model (value 1)",
                          labels=["dataset", "owner", "topic"]),
            "last_record": data("dqpulse_dataset_last_record_timestamp_seconds",
                                 "When ingest last accepted a record of the dataset "
                                 "(wall clock, as checkpointed)",
                                 labels=["dataset"]),
            "last_window": data("dqpulse_dataset_last_window_end_timestamp_seconds",
                                 "End of the newest finalized window", labels=["dataset"]),
            "freshness_objective": data("dqpulse_dataset_freshness_objective_seconds",
                                         "freshness_sla of the dataset", labels=["dataset"]),
            "quality_objective": data("dqpulse_dataset_quality_objective_ratio",
                                       "quality_objective of the dataset",
                                       labels=["dataset"]),
            "incidents": data("dqpulse_incidents_open",
                               "Open or acknowledged incidents",
                               labels=["dataset", "kind", "severity"]),
            "leader": gauge("dqpulse_exporter_leader",
                            "1 in the one process exporting the data-quality series"),
            "dropped": gauge("dqpulse_exporter_field_series_over_budget",
                             "Per-field series left out by the field series budget now"),
            "dropped_total": counter("dqpulse_exporter_field_series_dropped",
                                     "Per-field series left out, summed over scrapes"),
            "errors": counter("dqpulse_exporter_errors",
                              "Scrapes whose database read failed"),
            "duration": gauge("dqpulse_exporter_collect_duration_seconds",
                              "Time the last collection took"),
        })
        return out


def _dataset_families(families: dict[str, _Family], item: DatasetProgress) -> None:
    families["info"].add_metric([item.name, item.owner or "", item.topic], 1.0)
    if item.last_record_at is not None:
        families["last_record"].add_metric([item.name], float(item.last_record_at))
    if item.finalized_until is not None:
        families["last_window"].add_metric([item.name], float(item.finalized_until))
    sla = item.spec.get("freshness_sla")
    if isinstance(sla, int | float):
        families["freshness_objective"].add_metric([item.name], float(sla))
    objective = item.spec.get("quality_objective")
    if isinstance(objective, int | float):
        families["quality_objective"].add_metric([item.name], float(objective))


def _add_point(families: dict[str, _Family], dataset: str, point: LatestPoint) -> None:
    mapping = MAPPINGS.get(point.metric)
    if mapping is not None and _finite(point.value):
        family: Family = mapping.family
        labels = [dataset, *([point.field] if family.per_field else []), *mapping.label_values]
        families[family.name].add_metric(labels, float(point.value or 0.0))
    if _finite(point.score):
        families["score"].add_metric([dataset, point.metric, point.field],
                                     float(point.score or 0.0))


def _finite(value: float | None) -> bool:
    return value is not None and math.isfinite(value)


def _water_level(totals: list[int], budget: int) -> int:
    """The most per-field series any one dataset gets when ``budget`` is dealt round-robin
    among datasets holding ``totals``."""
    remaining, level = budget, 0
    for index, total in enumerate(sorted(totals)):
        share = -(-remaining // (len(totals) - index))  # ceil: the rest, evenly
        if total >= share:
            return max(level, share)
        remaining -= total
        level = total
    return level


def _round_robin(per_field: dict[str, list[LatestPoint]],
                 budget: int) -> list[tuple[str, LatestPoint]]:
    """Up to ``budget`` per-field series, one dataset at a time in turn (datasets by name,
    each dataset's series in (metric, field) order): a budget too small for all is shared
    fairly."""
    queues = [[(dataset, point) for point in points]
              for dataset, points in sorted(per_field.items())]
    interleaved = (item for group in itertools.zip_longest(*queues) for item in group
                   if item is not None)
    return list(itertools.islice(interleaved, budget))
