"""A Confluent Schema Registry client for the Avro wire format (``GET /schemas/ids/{id}``).

Schemas are immutable per id, so each id is fetched once and cached for the life of the
process. Lookups retry transient failures (connection errors, 5xx) a few times with
backoff before the record is counted as ``unknown_schema``.
"""

from __future__ import annotations

import json
import threading
import time
from typing import Any

import httpx


class SchemaRegistryClient:
    def __init__(self, url: str, *, timeout_s: float = 5.0, retries: int = 3,
                 auth: tuple[str, str] | None = None) -> None:
        self.url = url.rstrip("/")
        self.retries = retries
        self._client = httpx.Client(timeout=timeout_s, auth=auth)
        self._cache: dict[int, dict[str, Any]] = {}
        self._lock = threading.Lock()

    def __call__(self, schema_id: int) -> dict[str, Any]:
        cached = self._cache.get(schema_id)
        if cached is not None:
            return cached
        with self._lock:
            cached = self._cache.get(schema_id)
            if cached is None:
                cached = self._cache[schema_id] = self._fetch(schema_id)
        return cached

    def _fetch(self, schema_id: int) -> dict[str, Any]:
        delay = 0.2
        for attempt in range(self.retries + 1):
            try:
                response = self._client.get(f"{self.url}/schemas/ids/{schema_id}")
            except httpx.TransportError:
                if attempt == self.retries:
                    raise
            else:
                if response.status_code == 404:
                    raise LookupError(f"schema id {schema_id} is not in the registry")
                if response.status_code < 500:
                    response.raise_for_status()
                    schema = json.loads(response.json()["schema"])
                    if not isinstance(schema, dict):
                        raise ValueError(f"schema id {schema_id} is not a record schema")
                    return schema
                if attempt == self.retries:
                    response.raise_for_status()
            time.sleep(delay)
            delay *= 2
        raise RuntimeError("unreachable")

    def close(self) -> None:
        self._client.close()
