"""Generate dqpulse's Grafana dashboards with Grafana's grafana-foundation-sdk.

    python deploy/grafana/generate.py          # writes deploy/grafana/dashboards/*.json
    python deploy/grafana/generate.py --check  # exit 1 when a committed file differs

The dashboards are code: edit this file, run it, commit the JSON. Metric names are in
docs/metrics.md; the heavy queries use the recording rules of
deploy/prometheus/rules/dqpulse.yml. tests/integration/test_dashboards.py runs every
PromQL target on a Prometheus scraping real dqpulse processes and every SQL target on a
real database, and checks that this script reproduces the committed bytes.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from grafana_foundation_sdk.builders import bargauge, stat, table, timeseries
from grafana_foundation_sdk.builders import common as common_builder
from grafana_foundation_sdk.builders import dashboard as db
from grafana_foundation_sdk.builders import prometheus as prom_builder
from grafana_foundation_sdk.cog import builder as cogbuilder
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.cog.runtime import UnknownDataquery
from grafana_foundation_sdk.cog.variants import Dataquery
from grafana_foundation_sdk.models import common
from grafana_foundation_sdk.models import dashboard as model

OUT = Path(__file__).resolve().parent / "dashboards"
PROMETHEUS = model.DataSourceRef(type_val="prometheus", uid="prometheus")
POSTGRES = model.DataSourceRef(type_val="grafana-postgresql-datasource", uid="dqpulse-postgres")
DATASET = 'dataset=~"$dataset"'
ONE = 'dataset="$dataset"'


# -- targets ---------------------------------------------------------------------------
def promql(expr: str, legend: str = "__auto") -> prom_builder.Dataquery:
    return prom_builder.Dataquery().expr(expr).legend_format(legend).datasource(PROMETHEUS)


class SqlQuery(cogbuilder.Builder[Dataquery]):
    """A Postgres target (the SDK has no SQL data-source builder; Grafana reads this JSON)."""

    def __init__(self, sql: str, fmt: str = "table") -> None:
        self.sql = " ".join(sql.split())
        self.fmt = fmt
        self.ref = "A"

    def ref_id(self, ref: str) -> SqlQuery:
        self.ref = ref
        return self

    def build(self) -> Dataquery:
        return UnknownDataquery({"datasource": {"type": POSTGRES.type_val, "uid": POSTGRES.uid},
                                 "editorMode": "code", "format": self.fmt, "rawQuery": True,
                                 "rawSql": self.sql, "refId": self.ref})


class _SqlAnnotationQuery(model.AnnotationQuery):
    def __init__(self, name: str, sql: str, color: str) -> None:
        super().__init__(name=name, datasource=POSTGRES, enable=True, icon_color=color)
        self.sql = " ".join(sql.split())

    def to_json(self) -> dict[str, object]:
        out = super().to_json()
        out["rawQuery"] = self.sql
        out["target"] = {"editorMode": "code", "format": "table", "rawQuery": True,
                         "rawSql": self.sql, "refId": "Anno"}
        return out


class SqlAnnotation(cogbuilder.Builder[model.AnnotationQuery]):
    def __init__(self, name: str, sql: str, color: str = "red") -> None:
        self.query = _SqlAnnotationQuery(name, sql, color)

    def build(self) -> model.AnnotationQuery:
        return self.query


# -- panels ----------------------------------------------------------------------------
def thresholds(*steps: tuple[float | None, str]) -> db.ThresholdsConfig:
    return (db.ThresholdsConfig().mode(model.ThresholdsMode.ABSOLUTE)
            .steps([model.Threshold(value=value, color=color) for value, color in steps]))


GREEN = ((None, "green"),)
QUALITY = ((None, "red"), (0.9, "orange"), (0.95, "green"))
ANY_BAD = ((None, "green"), (1, "red"))


def _common(panel: Any, title: str, description: str, unit: str,
            targets: Sequence[cogbuilder.Builder[Dataquery]],
            steps: Sequence[tuple[float | None, str]], width: int, height: int) -> Any:
    panel = (panel.title(title).description(description).unit(unit)
             .thresholds(thresholds(*steps)).span(width).height(height))
    for ref, target in zip("ABCDEFGHIJ", targets, strict=False):
        panel = panel.with_target(target.ref_id(ref))  # type: ignore[attr-defined]
    return panel


LEGEND = (common_builder.VizLegendOptions().show_legend(True)
          .display_mode(common.LegendDisplayMode.LIST).placement(common.LegendPlacement.BOTTOM))
TOOLTIP = common_builder.VizTooltipOptions().mode(common.TooltipDisplayMode.MULTI)
LAST = common_builder.ReduceDataOptions().calcs(["lastNotNull"]).values(False)


def series(title: str, description: str, unit: str, *targets: cogbuilder.Builder[Dataquery],
           steps: Sequence[tuple[float | None, str]] = GREEN, width: int = 12,
           height: int = 8, lo: float | None = None, hi: float | None = None
           ) -> timeseries.Panel:
    panel = _common(timeseries.Panel(), title, description, unit, targets, steps, width, height)
    panel = panel.legend(LEGEND).tooltip(TOOLTIP)
    panel = panel.thresholds_style(common_builder.GraphThresholdsStyleConfig().mode(
        common.GraphTresholdsStyleMode.DASHED if len(steps) > 1
        else common.GraphTresholdsStyleMode.OFF))
    if lo is not None:
        panel = panel.min(lo)
    if hi is not None:
        panel = panel.max(hi)
    return panel


def single(title: str, description: str, unit: str, target: cogbuilder.Builder[Dataquery],
           steps: Sequence[tuple[float | None, str]] = GREEN, width: int = 6) -> stat.Panel:
    panel = _common(stat.Panel(), title, description, unit, [target], steps, width, 4)
    return panel.reduce_options(LAST).color_mode(common.BigValueColorMode.BACKGROUND)


def bars(title: str, description: str, unit: str, target: cogbuilder.Builder[Dataquery],
         steps: Sequence[tuple[float | None, str]] = GREEN, width: int = 12) -> bargauge.Panel:
    panel = _common(bargauge.Panel(), title, description, unit, [target], steps, width, 8)
    return panel.reduce_options(LAST).orientation(common.VizOrientation.HORIZONTAL)


def grid(title: str, description: str, target: cogbuilder.Builder[Dataquery],
         width: int = 24, height: int = 10) -> table.Panel:
    panel = _common(table.Panel(), title, description, "none", [target], GREEN, width, height)
    return panel.show_header(True)


def dataset_variable(multi: bool) -> db.QueryVariable:
    return (db.QueryVariable("dataset").label("Dataset").datasource(PROMETHEUS)
            .query("label_values(dqpulse_dataset_info, dataset)")
            .refresh(model.VariableRefresh.ON_TIME_RANGE_CHANGED)
            .sort(model.VariableSort.ALPHABETICAL_ASC).multi(multi).include_all(multi))


def new_dashboard(uid: str, title: str, description: str) -> db.Dashboard:
    return (db.Dashboard(title).uid(uid).description(description).tags(["dqpulse"])
            .refresh("30s").time("now-6h", "now").timezone("browser").readonly())


# -- the dashboards --------------------------------------------------------------------
def fleet() -> db.Dashboard:
    d = new_dashboard("dqpulse-fleet", "dqpulse / Fleet overview",
                      "Quality, open incidents, freshness and throughput of every dataset.")
    d = d.with_variable(dataset_variable(multi=True))
    d = d.with_panel(single(
        "Datasets", "Datasets in the applied model (dqpulse apply).", "none",
        promql(f"count(dqpulse_dataset_info{{{DATASET}}})")))
    d = d.with_panel(single(
        "Open incidents", "Open or acknowledged incidents of the selected datasets.", "none",
        promql(f"sum(dqpulse:incidents_open:sum{{{DATASET}}})"), ANY_BAD))
    d = d.with_panel(single(
        "Lowest quality score", "The lowest quality dimension of any selected dataset in its "
        "newest window.", "percentunit",
        promql(f"min(dqpulse:quality_score_ratio:min{{{DATASET}}})"), QUALITY))
    d = d.with_panel(single(
        "Records per second", "Records accepted by ingest, all workers, last 5 minutes.",
        "suffix: rec/s", promql(f"sum(dqpulse:ingest_records:rate5m{{{DATASET}}})")))
    d = d.with_panel(series(
        "Quality score by dataset and dimension", "Quality score of each dataset's newest "
        "window per dimension (0..1); the dashed lines are 90% and 95%.", "percentunit",
        promql(f"dqpulse_quality_score_ratio{{{DATASET}}}", "{{dataset}} {{dimension}}"),
        steps=QUALITY, lo=0, hi=1))
    d = d.with_panel(series(
        "Open incidents by dataset", "Open or acknowledged incidents per dataset.", "none",
        promql(f"dqpulse:incidents_open:sum{{{DATASET}}}", "{{dataset}}"), steps=ANY_BAD))
    d = d.with_panel(series(
        "Time since the last record", "Wall-clock time since ingest last accepted a record "
        "of the dataset; the dashed line is the default staleness bound (1 h).", "s",
        promql(f"dqpulse:dataset_last_record_age_seconds{{{DATASET}}}", "{{dataset}}"),
        steps=((None, "green"), (3600, "red"))))
    d = d.with_panel(series(
        "Records per second by dataset", "Records accepted by ingest per dataset (all "
        "workers, 5-minute rate).", "suffix: rec/s",
        promql(f"dqpulse:ingest_records:rate5m{{{DATASET}}}", "{{dataset}}")))
    d = d.with_panel(series(
        "Records per window", "Records in each dataset's newest finalized window.", "none",
        promql(f"sum by (dataset) (dqpulse_volume_records{{{DATASET}}})", "{{dataset}}")))
    return d.with_panel(series(
        "Freshness objective", "Each dataset's freshness_sla next to its event lag (p95).",
        "s", promql(f"dqpulse_dataset_freshness_objective_seconds{{{DATASET}}}",
                    "{{dataset}} objective"),
        promql(f'dqpulse_freshness_event_lag_seconds{{{DATASET}, quantile="0.95"}}',
               "{{dataset}} event lag p95")))


FIELD = f'{ONE}, field=~"$field"'


def _field_variable() -> db.QueryVariable:
    families = "completeness_null_ratio|distribution_statistic|validity_violation_ratio"
    return (db.QueryVariable("field").label("Field").datasource(PROMETHEUS)
            .query(f'label_values({{__name__=~"dqpulse_({families})", {ONE}}}, field)')
            .refresh(model.VariableRefresh.ON_TIME_RANGE_CHANGED)
            .sort(model.VariableSort.ALPHABETICAL_ASC).multi(True).include_all(True)
            .all_value(".*"))


def dataset() -> db.Dashboard:
    d = new_dashboard("dqpulse-dataset", "dqpulse / Dataset",
                      "One dataset: every metric family of its newest windows, the detectors' "
                      "anomaly scores and its incidents (annotations).")
    d = d.with_variable(dataset_variable(multi=False)).with_variable(_field_variable())
    d = d.annotation(SqlAnnotation("Incidents", """
        SELECT opened_at AS time, COALESCE(resolved_at, now()) AS timeend,
               severity || ' ' || kind || ': ' || summary AS text, kind AS tags
        FROM incidents WHERE dataset = '$dataset' AND $__timeFilter(opened_at)"""))
    d = d.with_row(db.Row("Volume and freshness"))
    d = d.with_panel(series(
        "Records and late records per window", "volume.records and volume.late_records of "
        "each finalized window.", "none",
        promql(f"dqpulse_volume_records{{{ONE}}}", "records"),
        promql(f"dqpulse_volume_late_records{{{ONE}}}", "late records"), width=8))
    d = d.with_panel(series(
        "Bytes per window", "volume.bytes of each finalized window.", "bytes",
        promql(f"dqpulse_volume_bytes{{{ONE}}}", "bytes"), width=8))
    d = d.with_panel(series(
        "Consumer lag", "Records of the topic not yet consumed when the window finalized.",
        "none", promql(f"dqpulse_freshness_consumer_lag_records{{{ONE}}}", "lag"),
        steps=((None, "green"), (10000, "red")), width=8))
    d = d.with_panel(series(
        "Event lag", "Ingest time minus event time in the window (p50, p95, max).", "s",
        promql(f"dqpulse_freshness_event_lag_seconds{{{ONE}}}", "q{{quantile}}"), width=12))
    d = d.with_panel(series(
        "Last record age and objective", "Seconds from the newest record to the window's "
        "end, and the dataset's freshness_sla.", "s",
        promql(f"dqpulse_freshness_last_record_age_seconds{{{ONE}}}", "age"),
        promql(f"dqpulse_dataset_freshness_objective_seconds{{{ONE}}}", "objective"),
        width=12))
    d = d.with_row(db.Row("Quality and schema"))
    d = d.with_panel(series(
        "Quality score by dimension", "Quality score per dimension (0..1) and the dataset's "
        "quality_objective.", "percentunit",
        promql(f"dqpulse_quality_score_ratio{{{ONE}}}", "{{dimension}}"),
        promql(f"dqpulse_dataset_quality_objective_ratio{{{ONE}}}", "objective"),
        steps=QUALITY, lo=0, hi=1))
    d = d.with_panel(series(
        "Schema", "Fields observed, new, removed, retyped and untracked in the window, and "
        "records breaking the contract.", "none",
        promql(f"dqpulse_schema_fields{{{ONE}}}", "{{state}} fields"),
        promql(f"dqpulse_schema_contract_violations{{{ONE}}}", "contract violations")))
    d = d.with_row(db.Row("Fields"))
    d = d.with_panel(series(
        "Null and empty ratio", "Share of records where the field is null, and of present "
        "values that are empty.", "percentunit",
        promql(f"dqpulse_completeness_null_ratio{{{FIELD}}}", "{{field}} null"),
        promql(f"dqpulse_completeness_empty_ratio{{{FIELD}}}", "{{field}} empty"),
        steps=((None, "green"), (0.05, "red")), lo=0, width=8))
    d = d.with_panel(series(
        "Required fields missing", "Records without a required field.", "none",
        promql(f"dqpulse_completeness_required_violations{{{FIELD}}}", "{{field}}"),
        steps=ANY_BAD, width=8))
    d = d.with_panel(series(
        "Rule violations", "Share of checked values breaking each rule (field:rule).",
        "percentunit", promql(f"dqpulse_validity_violation_ratio{{{FIELD}}}", "{{field}}"),
        steps=((None, "green"), (0.01, "red")), lo=0, width=8))
    d = d.with_panel(series(
        "Field statistics", "min, max, mean, std and mean length of numeric and text fields, "
        "in the field's own units.", "short",
        promql(f"dqpulse_distribution_statistic{{{FIELD}}}", "{{field}} {{statistic}}"),
        width=8))
    d = d.with_panel(series(
        "Quantiles", "Field value quantiles (1% .. 99%), in the field's units.", "short",
        promql(f"dqpulse_distribution_quantile{{{FIELD}}}", "{{field}} q{{quantile}}"),
        width=8))
    d = d.with_panel(series(
        "Distinct values and top-k share", "Estimated distinct values, and the share taken "
        "by the most frequent values.", "short",
        promql(f"dqpulse_distribution_distinct_values{{{FIELD}}}", "{{field}} distinct"),
        promql(f"dqpulse_distribution_top_k_share_ratio{{{FIELD}}}", "{{field}} top-k share"),
        width=8))
    d = d.with_panel(series(
        "Drift", "Distribution drift of each field against the previous window and the "
        "baseline (PSI above 0.2 is a large shift).", "short",
        promql(f"dqpulse_distribution_drift{{{FIELD}}}",
               "{{field}} {{statistic}} vs {{reference}}"),
        steps=((None, "green"), (0.2, "red")), width=12))
    d = d.with_panel(series(
        "Duplicate keys", "Share of duplicate values of the dataset's key.", "percentunit",
        promql(f"dqpulse_uniqueness_duplicate_ratio{{{ONE}}}", "{{field}}"),
        steps=((None, "green"), (0.001, "red")), lo=0, width=12))
    d = d.with_row(db.Row("ML data"))
    d = d.with_panel(series(
        "Label balance", "Share of each label class, smallest over largest class, and "
        "normalized label entropy.", "percentunit",
        promql(f"dqpulse_ml_data_class_share_ratio{{{ONE}}}", "{{field}}"),
        promql(f"dqpulse_ml_data_minority_ratio{{{ONE}}}", "minority ratio {{field}}"),
        promql(f"dqpulse_ml_data_label_entropy_ratio{{{ONE}}}", "entropy {{field}}"),
        lo=0, hi=1))
    d = d.with_panel(series(
        "Fairness", "Positive-rate difference and ratio between groups; a disparate impact "
        "below 0.8 is the usual four-fifths bound.", "short",
        promql(f"dqpulse_ml_data_parity_difference{{{ONE}}}", "parity difference {{field}}"),
        promql(f"dqpulse_ml_data_disparate_impact_ratio{{{ONE}}}",
               "disparate impact {{field}}"),
        steps=((None, "red"), (0.8, "green"))))
    d = d.with_row(db.Row("Detectors and incidents"))
    d = d.with_panel(series(
        "Anomaly scores (top 10)", "The detectors' score of each series in the newest window "
        "(higher is more anomalous).", "short",
        promql(f"topk(10, dqpulse_anomaly_score{{{ONE}}})", "{{metric}} {{field}}"),
        steps=((None, "green"), (0.99, "red"))))
    return d.with_panel(series(
        "Open incidents", "Open or acknowledged incidents of the dataset by kind and "
        "severity.", "none",
        promql(f"dqpulse_incidents_open{{{ONE}}}", "{{kind}} {{severity}}"), steps=ANY_BAD))


def incidents() -> db.Dashboard:
    d = new_dashboard("dqpulse-incidents", "dqpulse / Incidents & root cause",
                      "Incidents, their timeline and the datasets, owners and series "
                      "behind them, from dqpulse's Postgres store.")
    d = d.with_panel(single(
        "Incidents opened", "Incidents opened in the time range.", "none", SqlQuery("""
        SELECT count(*) AS incidents FROM incidents WHERE $__timeFilter(opened_at)"""),
        ANY_BAD))
    d = d.with_panel(single(
        "Open now", "Incidents open or acknowledged now.", "none", SqlQuery("""
        SELECT count(*) AS open FROM incidents WHERE status IN ('open', 'acknowledged')"""),
        ANY_BAD))
    d = d.with_panel(single(
        "Median time to resolve", "Median time from opening to resolution of the incidents "
        "resolved in the time range.", "s", SqlQuery("""
        SELECT COALESCE(percentile_cont(0.5) WITHIN GROUP (ORDER BY
               EXTRACT(EPOCH FROM resolved_at - opened_at)), 0) AS seconds
        FROM incidents WHERE $__timeFilter(opened_at)"""),
        ((None, "green"), (3600, "orange"), (86400, "red"))))
    d = d.with_panel(single(
        "Notifications dead", "Notifications given up (receiver refused or retries "
        "exhausted) in the time range.", "none", SqlQuery("""
        SELECT count(*) AS dead FROM notification_outbox
        WHERE status = 'dead' AND $__timeFilter(created_at)"""), ANY_BAD))
    d = d.with_panel(series(
        "Incidents opened per hour by severity", "Incidents opened per hour, by severity.",
        "none", SqlQuery("""
        SELECT date_trunc('hour', opened_at) AS time, severity AS metric, count(*) AS value
        FROM incidents WHERE $__timeFilter(opened_at) GROUP BY 1, 2 ORDER BY 1""",
                         fmt="time_series"), width=24))
    d = d.with_panel(grid(
        "Incidents", "Newest incidents in the time range with their owner and score; the id "
        "opens /api/v1/incidents/{id} (root cause: /api/v1/incidents/{id}/root-cause).",
        SqlQuery("""
        SELECT id, opened_at, dataset, owner, kind, severity, status, metric, field, score,
               alert_count, reopen_count, resolved_at, summary
        FROM incidents WHERE $__timeFilter(opened_at) ORDER BY opened_at DESC LIMIT 200""")))
    d = d.with_panel(grid(
        "Timeline", "What happened to each incident (opened, acknowledged, resolved, "
        "reopened, feedback), newest first.", SqlQuery("""
        SELECT e.at AS time, e.incident_id, i.dataset, e.action, e.actor, e.comment
        FROM incident_events e JOIN incidents i ON i.id = e.incident_id
        WHERE $__timeFilter(e.at) ORDER BY e.at DESC LIMIT 500"""), width=12))
    d = d.with_panel(grid(
        "Root cause candidates", "The series whose anomalies raised the most alerts: the "
        "metric and field behind the incidents.", SqlQuery("""
        SELECT dataset, metric, field, count(*) AS alerts, max(score) AS max_score
        FROM alerts WHERE $__timeFilter(created_at)
        GROUP BY dataset, metric, field ORDER BY alerts DESC LIMIT 20"""), width=12))
    d = d.with_panel(bars(
        "Top offending datasets", "Datasets by incidents opened in the time range.", "none",
        SqlQuery("""
        SELECT dataset, count(*) AS incidents FROM incidents WHERE $__timeFilter(opened_at)
        GROUP BY dataset ORDER BY incidents DESC LIMIT 10""")))
    return d.with_panel(bars(
        "Top owners", "Owners (dqpulse.yaml owner) by incidents opened in the time range.",
        "none", SqlQuery("""
        SELECT COALESCE(owner, '(no owner)') AS owner, count(*) AS incidents FROM incidents
        WHERE $__timeFilter(opened_at) GROUP BY 1 ORDER BY incidents DESC LIMIT 10""")))


def service() -> db.Dashboard:
    d = new_dashboard("dqpulse-service", "dqpulse / Service",
                      "dqpulse's own processes: ingest, checkpoints, dead letters, "
                      "notifications and the API.")
    d = d.with_panel(bars(
        "Processes up", "1 when Prometheus can scrape the process.", "none",
        promql('up{job=~"dqpulse-.*"}', "{{job}} {{instance}}"),
        ((None, "red"), (1, "green")), width=8))
    d = d.with_panel(series(
        "Ingest rate by worker", "Records accepted per second by each ingest worker.",
        "suffix: rec/s", promql("sum by (instance) "
                                "(rate(dqpulse_ingest_records_total[$__rate_interval]))",
                                "{{instance}}"), width=8))
    d = d.with_panel(series(
        "Bytes per window by dataset", "Bytes of records in each dataset's newest finalized "
        "window.", "bytes", promql("sum by (dataset) (dqpulse_volume_bytes)", "{{dataset}}"),
        width=8))
    d = d.with_panel(series(
        "Consumer lag", "Records of each dataset's topic not yet consumed.", "none",
        promql("max by (dataset) (dqpulse_freshness_consumer_lag_records)", "{{dataset}}"),
        steps=((None, "green"), (10000, "red")), width=8))
    d = d.with_panel(series(
        "Assigned partitions", "Partitions each ingest worker owns.", "none",
        promql("dqpulse_assigned_partitions", "{{instance}}"), width=8))
    d = d.with_panel(series(
        "Windows finalized", "Windows finalized per second, by the worker that finalized "
        "them.", "ops", promql("sum by (instance) "
                               "(rate(dqpulse_windows_finalized_total[$__rate_interval]))",
                               "{{instance}}"), width=8))
    d = d.with_panel(series(
        "Checkpoint duration (p99)", "99th percentile of the checkpoint transaction time per "
        "worker.", "s", promql("dqpulse:checkpoint_duration_seconds:p99_5m", "{{instance}}"),
        steps=((None, "green"), (1, "orange"), (5, "red")), width=8))
    d = d.with_panel(series(
        "Checkpoints and failures", "Checkpoints committed, fenced and failed per second.",
        "ops",
        promql("sum by (instance) (rate(dqpulse_checkpoints_total[$__rate_interval]))",
               "{{instance}} committed"),
        promql("sum by (instance) (rate(dqpulse_checkpoint_fenced_total[$__rate_interval]))",
               "{{instance}} fenced"),
        promql("sum by (instance) (rate(dqpulse_checkpoint_failures_total[$__rate_interval]))",
               "{{instance}} failed"), steps=((None, "green"), (0.001, "red")), width=8))
    d = d.with_panel(series(
        "Dead letters and decode errors", "Records sent to the dead-letter topic, and decode "
        "failures by reason, per second.", "suffix: rec/s",
        promql("dqpulse:dead_lettered:rate5m", "{{dataset}} dead-lettered"),
        promql("dqpulse:decode_errors:rate5m", "{{dataset}} {{reason}}"),
        steps=((None, "green"), (1, "red")), width=8))
    d = d.with_panel(series(
        "Notification outcomes", "Notification delivery attempts per second by channel and "
        "outcome (delivered, retry, dead).", "ops",
        promql("dqpulse:notifications:rate5m", "{{channel}} {{outcome}}"), width=12))
    d = d.with_panel(series(
        "Anomalies, detector errors, degraded windows",
        "Anomalous metric points per second by dataset and kind; points whose detector "
        "failed (scored 0, the series' baseline started over; alert DqpulseDetectorErrors, "
        "whose metric label names the series) by dataset; and windows that failed every "
        "try to finalize them and went through unalerted, unscored or skipped (alert "
        "DqpulseWindowsDegraded); and batches whose metric update raised, replayed "
        "without the records that raise (alert DqpulseRecordsUnprocessable).",
        "ops",
        promql("sum by (dataset, kind) (rate(dqpulse_anomalies_total[$__rate_interval]))",
               "{{dataset}} {{kind}}"),
        # 0 for a data set being scored without failures (the counter has no series
        # until its first failure)
        promql("sum by (dataset) (rate(dqpulse_detector_errors_total[$__rate_interval])) "
               "or sum by (dataset) (rate(dqpulse_windows_finalized_total"
               "[$__rate_interval])) * 0", "{{dataset}} detector errors"),
        promql("sum by (dataset, outcome) (rate(dqpulse_windows_degraded_total"
               "[$__rate_interval])) or sum by (dataset) (rate(dqpulse_windows_finalized_total"
               "[$__rate_interval])) * 0", "{{dataset}} windows {{outcome}}"),
        promql("sum by (dataset) (rate(dqpulse_ingest_batch_failures_total"
               "[$__rate_interval])) or sum by (dataset) (rate(dqpulse_ingest_records_total"
               "[$__rate_interval])) * 0", "{{dataset}} batches that raised"), width=12))
    d = d.with_panel(series(
        "API latency (p99)", "99th percentile of the API's request time per route.", "s",
        promql("dqpulse:http_request_duration_seconds:p99_5m", "{{route}}"),
        steps=((None, "green"), (0.5, "orange"), (2, "red")), width=12))
    d = d.with_panel(series(
        "API requests by status", "API requests per second by HTTP status.", "reqps",
        promql("sum by (status) (rate(dqpulse_http_requests_total[$__rate_interval]))",
               "{{status}}"), width=12))
    return d.with_panel(series(
        "Exporter", "Time the data-quality exporter's last collection took, and per-field "
        "series the field budget leaves out.", "s",
        promql("max(dqpulse_exporter_collect_duration_seconds)", "collect duration"),
        promql("sum(dqpulse_exporter_field_series_over_budget)", "series over budget"),
        steps=((None, "green"), (0.1, "red")), width=24))


DASHBOARDS = {"dqpulse-fleet.json": fleet, "dqpulse-dataset.json": dataset,
              "dqpulse-incidents.json": incidents, "dqpulse-service.json": service}


def render() -> dict[str, str]:
    """File name -> the dashboard's JSON, byte for byte what is committed."""
    return {name: json.dumps(make().build(), cls=JSONEncoder, indent=2, sort_keys=True) + "\n"
            for name, make in DASHBOARDS.items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true",
                        help="exit 1 when a committed dashboard differs from the generated one")
    args = parser.parse_args(argv)
    OUT.mkdir(exist_ok=True)
    stale = []
    for name, text in render().items():
        path = OUT / name
        if args.check:
            if not path.is_file() or path.read_text() != text:
                stale.append(name)
        else:
            path.write_text(text)
    if stale:
        print("out of date (run deploy/grafana/generate.py):", ", ".join(stale),
              file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
