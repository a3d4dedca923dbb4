"""Anomalies -> alerts -> incidents -> notification outbox -> channels.

``incidents`` owns the lifecycle (grouping, dedup, reopen, auto-resolve, flapping,
silences, audit trail); ``outbox`` turns an incident change into notification rows in the
same transaction; ``dispatch`` delivers them with retries, backoff, rate limits and an
idempotency key; ``notifiers`` holds one module per channel.
"""
