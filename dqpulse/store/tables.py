"""SQLAlchemy tables: the one place that knows the relational schema.

Alembic migrations under ``dqpulse/migrations/`` create and change this schema; nothing in a
production path calls ``create_all``.
"""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    false,
    func,
)

# BIGINT ids on Postgres; SQLite autoincrements only an INTEGER PRIMARY KEY
ID_TYPE = BigInteger().with_variant(Integer, "sqlite")

metadata = MetaData(
    naming_convention={
        "ix": "ix_%(column_0_label)s",
        "uq": "uq_%(table_name)s_%(column_0_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)

# Timestamps are stored as float epoch seconds where they are window/event times
# (exact, sortable, cheap) and as timezone-aware DateTime where they are audit times.

datasets = Table(
    "datasets",
    metadata,
    Column("name", String(200), primary_key=True),
    Column("topic", String(255), nullable=False),
    Column("owner", String(200)),
    Column("spec", JSON, nullable=False),
    Column("created_at", DateTime(timezone=True), server_default=func.now(), nullable=False),
    Column("updated_at", DateTime(timezone=True), server_default=func.now(), nullable=False),
)

# One row per (dataset, partition): the checkpoint of that partition's consumer.
# ``state`` holds the open-window partial states + watermark; written together with
# ``next_offset`` in one transaction (exactly-once metrics).
partition_checkpoints = Table(
    "partition_checkpoints",
    metadata,
    Column("dataset", String(200), primary_key=True),
    Column("partition", Integer, primary_key=True),
    Column("next_offset", BigInteger, nullable=False),
    Column("watermark", Float, nullable=False),
    Column("last_record_at", Float),
    Column("high_watermark_offset", BigInteger),
    Column("state", LargeBinary, nullable=False),
    # compare-and-set fencing: a save must name the version it loaded, so a zombie owner
    # that lost the partition in a rebalance cannot overwrite its successor's progress
    Column("version", BigInteger, nullable=False, server_default="0"),
    Column("owner_id", String(200)),
    Column("updated_at", DateTime(timezone=True), server_default=func.now(), nullable=False),
    # workers that restored this version on assignment (a save sets 0, and a worker saves
    # each partition it restored at its first checkpoint): three or more, and each died
    # before that checkpoint (a record that kills the worker as it is read?)
    Column("restores", Integer, nullable=False, server_default="0"),
    # a worker counting this version carefully (its owners before died before their first
    # checkpoint): the offsets it was counting, or (``careful_at``) the one record it was
    # counting alone, and (``careful_tries``) how many workers began counting it alone;
    # a save clears them (dqpulse.ingest.careful)
    Column("careful_first", BigInteger),
    Column("careful_last", BigInteger),
    Column("careful_at", BigInteger),
    Column("careful_tries", Integer),
    # one record the saved state counted, below ``next_offset``: its offset and a hash of
    # its key, value and timestamp, checked when a worker restores the checkpoint (a log
    # that holds another record there replaced the one counted: dqpulse.ingest.witness)
    Column("witness_offset", BigInteger),
    Column("witness_hash", BigInteger),
    # the topic whose offsets these are (NULL: saved before migration 0013): a dataset
    # whose topic changed reads the new one from its start (dqpulse.ingest.assignment)
    Column("topic", String(249)),
)

# Closed per-partition partial states of a window, waiting for every partition to pass
# the window; merged and deleted by the finalizer in one transaction.
window_partials = Table(
    "window_partials",
    metadata,
    Column("dataset", String(200), primary_key=True),
    Column("partition", Integer, primary_key=True),
    Column("window_start", Float, primary_key=True),
    Column("state", LargeBinary, nullable=False),
)

# Number of partitions of each dataset's topic, so the finalizer knows when a window is
# final for all partitions.
dataset_partitions = Table(
    "dataset_partitions",
    metadata,
    Column("dataset", String(200), primary_key=True),
    Column("partition_count", Integer, nullable=False),
    Column("finalized_until", Float),
    Column("baseline", LargeBinary),
    Column("last_schema", JSON),
    # the first window of the last finalize passes that began there without committing
    # past it, and how many (dqpulse.finalize.failures: a pass its process never saw end
    # is a crash, counted across restarts)
    Column("finalize_try_window", Float),
    Column("finalize_tries", Integer, nullable=False, server_default="0"),
)

# One row per (dataset, metric, field, window). On Postgres the table is partitioned by
# range of ``window_start``, one partition per UTC day plus a DEFAULT partition for windows
# that fall outside the created days (migration 0005; store/partitions.py keeps the days
# ahead and drops the expired ones); SQLite (the demo) keeps one plain table. A partitioned
# table's primary key must hold the partition key, so the natural key is the primary key.
metric_points = Table(
    "metric_points",
    metadata,
    Column("dataset", String(200), primary_key=True),
    Column("metric", String(120), primary_key=True),
    Column("field", String(500), primary_key=True, server_default=""),
    Column("window_start", Float, primary_key=True),
    Column("window_end", Float, nullable=False),
    Column("value", Float),
    Column("score", Float),
    Column("anomalous", Boolean, nullable=False, server_default=false()),
    Column("explanation", JSON),
    postgresql_partition_by="RANGE (window_start)",
)
# a dataset's windows in time order: the newest window, one window's points, retention
Index("ix_metric_points_dataset_time", metric_points.c.dataset, metric_points.c.window_start)

# Rollups of metric_points per series and UTC bucket of ``resolution`` seconds (3600 and
# 86400), maintained in the transaction that writes the points (store/rollups.py).
# mean = sum / value_count; ``last`` is the value of the newest window (``last_at``);
# the expected band is the first window's (``first_at``).
metric_rollups = Table(
    "metric_rollups",
    metadata,
    Column("dataset", String(200), primary_key=True),
    Column("metric", String(120), primary_key=True),
    Column("field", String(500), primary_key=True, server_default=""),
    Column("resolution", Integer, primary_key=True),
    Column("bucket_start", Float, primary_key=True),
    Column("points", Integer, nullable=False),
    Column("value_count", Integer, nullable=False),
    Column("sum", Float),
    Column("min", Float),
    Column("max", Float),
    Column("last", Float),
    Column("last_at", Float, nullable=False),
    Column("score", Float),
    Column("anomalous", Boolean, nullable=False, server_default=false()),
    Column("first_at", Float, nullable=False),
    Column("expected_low", Float),
    Column("expected_high", Float),
)
# retention deletes the expired buckets of one resolution
Index("ix_metric_rollups_resolution_time", metric_rollups.c.resolution,
      metric_rollups.c.bucket_start)

schema_versions = Table(
    "schema_versions",
    metadata,
    Column("id", ID_TYPE, primary_key=True, autoincrement=True),
    Column("dataset", String(200), nullable=False),
    Column("version", Integer, nullable=False),
    Column("fingerprint", String(64), nullable=False),
    Column("fields", JSON, nullable=False),
    Column("diff", JSON, nullable=False),
    Column("first_seen", Float, nullable=False),
    Column("last_seen", Float, nullable=False),
    UniqueConstraint("dataset", "version", name="uq_schema_version"),
)

detector_states = Table(
    "detector_states",
    metadata,
    Column("dataset", String(200), primary_key=True),
    Column("series", String(700), primary_key=True),
    Column("state", LargeBinary, nullable=False),
    Column("updated_at", DateTime(timezone=True), server_default=func.now(), nullable=False),
)

incidents = Table(
    "incidents",
    metadata,
    Column("id", ID_TYPE, primary_key=True, autoincrement=True),
    Column("dataset", String(200), nullable=False),
    Column("kind", String(40), nullable=False),
    Column("metric", String(120)),
    Column("field", String(500)),
    Column("severity", String(20), nullable=False),
    Column("status", String(20), nullable=False),
    Column("dedup_key", String(300), nullable=False),
    Column("opened_at", DateTime(timezone=True), nullable=False),
    Column("acknowledged_at", DateTime(timezone=True)),
    Column("resolved_at", DateTime(timezone=True)),
    Column("last_alert_at", DateTime(timezone=True), nullable=False),
    Column("healthy_windows", Integer, nullable=False, server_default="0"),
    Column("reopen_count", Integer, nullable=False, server_default="0"),
    Column("alert_count", Integer, nullable=False, server_default="0"),
    Column("summary", Text, nullable=False),
    Column("score", Float),
    Column("details", JSON),
    Column("feedback", String(20)),
    # added in 0002: routing owner, data-time span, notification sequence, flapping flag
    Column("owner", String(200)),
    Column("first_window_start", Float),
    Column("last_window_end", Float),
    Column("event_seq", Integer, nullable=False, server_default="0"),
    Column("flapping", Boolean, nullable=False, server_default=false()),
)
Index("ix_incidents_dataset_status", incidents.c.dataset, incidents.c.status)
Index("ix_incidents_dedup", incidents.c.dedup_key)

alerts = Table(
    "alerts",
    metadata,
    Column("id", ID_TYPE, primary_key=True, autoincrement=True),
    Column("incident_id", BigInteger, ForeignKey("incidents.id", ondelete="CASCADE")),
    Column("dataset", String(200), nullable=False),
    Column("kind", String(40), nullable=False),
    Column("metric", String(120), nullable=False),
    Column("field", String(500), nullable=False, server_default=""),
    Column("window_start", Float, nullable=False),
    Column("severity", String(20), nullable=False),
    Column("score", Float, nullable=False),
    Column("explanation", JSON),
    Column("created_at", DateTime(timezone=True), server_default=func.now(), nullable=False),
)
Index("ix_alerts_incident", alerts.c.incident_id)

incident_events = Table(
    "incident_events",
    metadata,
    Column("id", ID_TYPE, primary_key=True, autoincrement=True),
    Column("incident_id", BigInteger, ForeignKey("incidents.id", ondelete="CASCADE"),
           nullable=False),
    Column("action", String(40), nullable=False),
    Column("actor", String(200), nullable=False),
    Column("comment", Text),
    Column("at", DateTime(timezone=True), server_default=func.now(), nullable=False),
)
Index("ix_incident_events_incident", incident_events.c.incident_id)

# The datasets an incident impacts (one incident per break, issue 14; added after 0007):
# a downstream dataset that joined its upstream root's incident. Mirrors the incident's
# details["impacts"] so that a dataset finds the incidents that hit it by index.
incident_impacts = Table(
    "incident_impacts",
    metadata,
    Column("incident_id", BigInteger, ForeignKey("incidents.id", ondelete="CASCADE"),
           primary_key=True),
    Column("dataset", String(200), primary_key=True),
)
Index("ix_incident_impacts_dataset", incident_impacts.c.dataset)

notification_outbox = Table(
    "notification_outbox",
    metadata,
    Column("id", ID_TYPE, primary_key=True, autoincrement=True),
    Column("incident_id", BigInteger, ForeignKey("incidents.id", ondelete="CASCADE"),
           nullable=False),
    Column("channel", String(200), nullable=False),
    Column("event", String(40), nullable=False),
    Column("idempotency_key", String(300), nullable=False, unique=True),
    Column("payload", JSON, nullable=False),
    Column("status", String(20), nullable=False, server_default="pending"),
    Column("attempts", Integer, nullable=False, server_default="0"),
    Column("next_attempt_at", DateTime(timezone=True), server_default=func.now(), nullable=False),
    Column("last_error", Text),
    Column("created_at", DateTime(timezone=True), server_default=func.now(), nullable=False),
    Column("delivered_at", DateTime(timezone=True)),
)
Index("ix_outbox_due", notification_outbox.c.status, notification_outbox.c.next_attempt_at)
# delivery runs in order per (incident, channel): the dispatcher walks this chain
Index("ix_outbox_chain", notification_outbox.c.incident_id, notification_outbox.c.channel,
      notification_outbox.c.id)

silences = Table(
    "silences",
    metadata,
    Column("id", ID_TYPE, primary_key=True, autoincrement=True),
    Column("dataset", String(200)),
    Column("owner", String(200)),
    Column("kind", String(40)),
    Column("starts_at", DateTime(timezone=True), nullable=False),
    Column("ends_at", DateTime(timezone=True), nullable=False),
    Column("comment", Text),
    Column("created_by", String(200), nullable=False),
    Column("created_at", DateTime(timezone=True), server_default=func.now(), nullable=False),
)

lineage_edges = Table(
    "lineage_edges",
    metadata,
    Column("source", String(300), primary_key=True),
    Column("target", String(300), primary_key=True),
    Column("job", String(300), nullable=False, server_default=""),
    Column("origin", String(20), nullable=False, server_default="declared"),
    Column("updated_at", DateTime(timezone=True), server_default=func.now(), nullable=False),
)

api_tokens = Table(
    "api_tokens",
    metadata,
    Column("id", ID_TYPE, primary_key=True, autoincrement=True),
    Column("name", String(200), nullable=False, unique=True),
    Column("token_hash", String(128), nullable=False, unique=True),
    Column("owner", String(200)),
    Column("created_at", DateTime(timezone=True), server_default=func.now(), nullable=False),
    # added in 0004: role (viewer | editor | admin), teams (dataset owners it may see),
    # expiry and revocation (the row stays for the audit trail)
    Column("role", String(20), nullable=False, server_default="viewer"),
    Column("teams", JSON, nullable=False, server_default="[]"),
    Column("expires_at", DateTime(timezone=True)),
    Column("revoked_at", DateTime(timezone=True)),
    Column("created_by", String(200), nullable=False, server_default="cli"),
)

# Every `dqpulse apply`: the whole dqpulse.yaml model as validated, secrets still ``${VAR}``
# references. Every process runs the newest version and polls for a newer one.
model_versions = Table(
    "model_versions",
    metadata,
    Column("version", ID_TYPE, primary_key=True, autoincrement=True),
    Column("digest", String(64), nullable=False),
    Column("spec", JSON, nullable=False),
    Column("changes", JSON, nullable=False),
    Column("applied_by", String(200), nullable=False),
    Column("source", String(500), nullable=False, server_default=""),
    Column("applied_at", DateTime(timezone=True), server_default=func.now(), nullable=False),
)

# Every write through the API (and token administration from the CLI): who, what, on what.
# ``team`` is the owner of the object acted on (null: not a team's object, e.g. a token).
audit_log = Table(
    "audit_log",
    metadata,
    Column("id", ID_TYPE, primary_key=True, autoincrement=True),
    Column("at", DateTime(timezone=True), server_default=func.now(), nullable=False),
    Column("actor", String(200), nullable=False),
    Column("token_id", BigInteger),
    Column("role", String(20), nullable=False),
    Column("action", String(60), nullable=False),
    Column("target", String(300), nullable=False),
    Column("team", String(200)),
    Column("detail", JSON),
)
Index("ix_audit_log_team", audit_log.c.team, audit_log.c.id)

# OpenLineage run events received (0007): one row per (job, run, event type), so a FAIL or
# ABORT of an upstream job can be named as a root-cause suspect. ``inputs``/``outputs`` are
# the lineage node names the event's datasets resolved to.
openlineage_runs = Table(
    "openlineage_runs",
    metadata,
    Column("id", ID_TYPE, primary_key=True, autoincrement=True),
    Column("job", String(300), nullable=False),
    Column("run_id", String(64), nullable=False),
    Column("event_type", String(20), nullable=False),
    Column("event_time", Float, nullable=False),
    Column("inputs", JSON, nullable=False),
    Column("outputs", JSON, nullable=False),
    Column("received_at", DateTime(timezone=True), server_default=func.now(), nullable=False),
    UniqueConstraint("job", "run_id", "event_type", name="uq_openlineage_run_event"),
)
Index("ix_openlineage_runs_type_time", openlineage_runs.c.event_type,
      openlineage_runs.c.event_time)

# Finalized windows waiting to be emitted as OpenLineage events (0007): written in the
# finalize transaction, drained by a background sender (dqpulse/rca/emitter.py) through
# the openlineage-python HTTP transport; a row stays pending until the receiver took it.
openlineage_outbox = Table(
    "openlineage_outbox",
    metadata,
    Column("id", ID_TYPE, primary_key=True, autoincrement=True),
    Column("dataset", String(200), nullable=False),
    Column("window_start", Float, nullable=False),
    Column("event", JSON, nullable=False),
    Column("status", String(20), nullable=False, server_default="pending"),
    Column("attempts", Integer, nullable=False, server_default="0"),
    Column("next_attempt_at", DateTime(timezone=True), server_default=func.now(), nullable=False),
    Column("last_error", Text),
    Column("created_at", DateTime(timezone=True), server_default=func.now(), nullable=False),
    Column("delivered_at", DateTime(timezone=True)),
    UniqueConstraint("dataset", "window_start", name="uq_openlineage_outbox_window"),
)
Index("ix_openlineage_outbox_due", openlineage_outbox.c.status,
      openlineage_outbox.c.next_attempt_at)
