"""Settings, read once at the entry point and passed down frozen (prefix ``DQPULSE_``)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    """Process settings. Library code receives this object; it never reads the environment."""

    model_config = SettingsConfigDict(env_prefix="DQPULSE_", frozen=True, extra="ignore")

    database_url: str = "postgresql+psycopg://dqpulse@127.0.0.1:55432/dqpulse"

    kafka_bootstrap: str = "127.0.0.1:19092"
    kafka_client: Literal["confluent", "kafka-python"] = "confluent"
    kafka_group: str = "dqpulse-ingest"
    kafka_security_protocol: str = "PLAINTEXT"
    kafka_sasl_mechanism: str | None = None
    kafka_sasl_username: str | None = None
    kafka_sasl_password: SecretStr | None = None
    kafka_ssl_cafile: str | None = None
    kafka_session_timeout_ms: int = Field(default=10_000, ge=1_000)
    # the longest wait between reconnects to a broker that is away (both clients back off
    # exponentially up to it; kafka-python's own default is 30 s, librdkafka's 10 s)
    kafka_reconnect_backoff_max_ms: int = Field(default=5_000, ge=100)
    dead_letter_topic: str | None = None
    schema_registry_url: str | None = None

    poll_max_records: int = Field(default=20_000, ge=1)
    poll_timeout_s: float = Field(default=0.5, gt=0)
    checkpoint_interval_s: float = Field(default=2.0, gt=0)
    # ... stretched so that checkpointing (snapshot + transaction) takes at most this share
    # of a worker's time: a worker owning hundreds of partitions writes every open window
    # state at each checkpoint, and at 2 s that alone can cost more than the records
    checkpoint_max_share: float = Field(default=0.2, gt=0, le=1)
    # ... but never beyond this (replay after a crash, readiness: 15 x the base interval)
    checkpoint_max_interval_s: float = Field(default=10.0, gt=0)
    # a partition's polled records are aggregated once it holds this many (or at the
    # next checkpoint): many partitions polled a few records at a time pay a metric
    # update's fixed cost once per this many records; 1: aggregate every poll as it comes
    coalesce_records: int = Field(default=2000, ge=1)
    # ... or once its oldest held record was polled this long ago (by the worker's clock);
    # held records are aggregated anyway once their window may close, so this bounds what
    # a crash replays and how far the committed offset trails, not a window's latency
    coalesce_max_wait_s: float = Field(default=10.0, ge=0)
    # records held back for coalescing in all partitions together; above it, all are
    # aggregated at once (bounds the memory: records x their size)
    coalesce_max_held_records: int = Field(default=200_000, ge=0)
    # decode the next batches of a poll on a second thread while the worker counts the
    # ones already decoded (decoding runs outside the GIL); off: on the project's 2-core
    # box, where the broker and Postgres share the cores, it cost 45 % more CPU per record
    # (GIL hand-offs) and 16 % of the records/s; for workers with a core to spare
    decode_ahead: bool = False
    # parse a large JSON batch (>= 1 MiB of values) in 512 KiB blocks on Arrow's thread
    # pool (C++ threads, no GIL): the consuming thread waits for the parse instead of
    # doing all of it (fleet bench, 2-vCPU box: 1.17x records/s)
    decode_threads: bool = True
    # the cyclic garbage collector's first-generation threshold in a worker (Python's
    # default: 700 allocations); a poll allocates a message object per record, which at
    # 700 ran a collection every few hundred records (about 4,600 collections, 3.3-3.6 s
    # of a worker consuming 3M records in the fleet bench; 6 and 0.16 s at 50,000);
    # reference counting frees all but cycles either way
    gc_threshold: int = Field(default=50_000, ge=1)
    # whether an ingest worker finalizes and scores windows itself (on its own thread,
    # sharing the process's GIL with consuming); off: it only checkpoints, and a
    # `dqpulse worker score` process finalizes and scores every dataset (a process of its
    # own: a fleet's burst of windows at each window end no longer slows consuming)
    ingest_finalize: bool = True
    # finalization runs beside checkpoints (Postgres); above this many windows ready and
    # not finalized (all datasets), each poll waits for the finalize pass in flight
    finalize_max_backlog_windows: int = Field(default=1000, ge=0)
    # tries of a window whose finalization raises something not transient, before it is
    # finalized without alerting (then without scoring, then skipped): dqpulse.finalize.failures
    finalize_max_attempts: int = Field(default=3, ge=1)
    # how often running processes look for a newer `dqpulse apply` (one index read)
    model_poll_interval_s: float = Field(default=2.0, gt=0, le=60)
    max_message_bytes: int = Field(default=1_048_576, ge=1)
    idle_partition_timeout_s: float = Field(default=10.0, gt=0)

    api_host: str = "127.0.0.1"
    api_port: int = 8000
    worker_metrics_port: int = 9108
    worker_metrics_host: str = "127.0.0.1"
    public_url: str = "http://127.0.0.1:8000"
    api_tokens: SecretStr | None = None
    # required: every /api/v1 request needs a bearer token (the default); open: no token is
    # asked for and every request acts as an anonymous admin (the demo; a laptop)
    auth: Literal["required", "open"] = "required"
    api_max_body_bytes: int = Field(default=1_048_576, ge=1_024)
    field_metric_budget: int = Field(default=200, ge=0)
    # autoencoder over each dataset's window vector (needs torch: the [ml] extra):
    # off | score (score + per-metric attribution stored, no alerts) | alert
    autoencoder: Literal["off", "score", "alert"] = "score"
    autoencoder_device: str | None = None  # None: cuda when available, else cpu

    notify_backoff_base_s: float = Field(default=5.0, gt=0)
    notify_backoff_max_s: float = Field(default=600.0, gt=0)
    notify_max_attempts: int = Field(default=12, ge=1)
    notify_claim_lease_s: float = Field(default=60.0, gt=0)
    notify_max_parallel: int = Field(default=8, ge=1)

    # history retention (services/retention.py; run by the score worker every
    # retention_interval_s and by `dqpulse retention`); 0 keeps forever
    retention_points_days: float = Field(default=35.0, ge=0, le=36_500)
    retention_rollups_days: float = Field(default=730.0, ge=0, le=36_500)
    retention_incidents_days: float = Field(default=365.0, ge=0, le=36_500)
    retention_audit_days: float = Field(default=730.0, ge=0, le=36_500)
    retention_interval_s: float = Field(default=3600.0, gt=0)
    partitions_ahead_days: int = Field(default=7, ge=1, le=366)

    log_level: str = "INFO"
    # json: one JSON object per line; text: human-readable; auto: text on a terminal, else json
    log_format: Literal["auto", "json", "text"] = "auto"

    # stopping: SIGTERM/SIGINT asks for a graceful stop (last checkpoint, leave the group);
    # the process exits at once after this many seconds, or on a second signal
    stop_deadline_s: float = Field(default=10.0, gt=0)
    # worker probes (/healthz, /readyz on the worker's metrics port): alive while the main
    # loop turned within health_stall_s; ready while the last checkpoint (or notifier
    # pass) is younger than health_checkpoint_intervals x checkpoint_interval_s
    health_stall_s: float = Field(default=60.0, gt=0)
    health_checkpoint_intervals: float = Field(default=15.0, gt=0)
    # Prometheus the doctor checks when set (e.g. http://127.0.0.1:19090)
    prometheus_url: str | None = None
