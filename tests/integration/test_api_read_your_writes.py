"""A write through the API is committed before its response goes out, so a client (the
console acknowledging an incident, then reading it) always reads its own write."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime
from typing import Any

from dqpulse.config import Settings
from dqpulse.store import incidents as incident_store
from dqpulse.store.db import make_engine, upgrade_to_head
from service.app import create_app


def test_acknowledge_is_committed_before_the_response_starts(tmp_path):
    url = f"sqlite:///{tmp_path / 'api.db'}"
    upgrade_to_head(url)
    engine = make_engine(url)
    now = datetime.now(UTC)
    with engine.begin() as conn:
        incident_id = incident_store.create(
            conn, dataset="orders", kind="volume", metric="volume.records", field="",
            severity="critical", status="open", dedup_key="orders:volume", opened_at=now,
            last_alert_at=now, summary="orders: volume.records dropped to 0", score=1.0)
    app = create_app(Settings(database_url=url, auth="open"), engine=make_engine(url))
    seen_at_response_start: list[str] = []
    body = json.dumps({"actor": "test"}).encode()

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            # another connection, as the client's next request would use
            with engine.connect() as conn:
                row = incident_store.get_or_raise(conn, incident_id=incident_id)
            seen_at_response_start.append(row["status"])

    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1",
             "method": "POST", "scheme": "http", "path":
             f"/api/v1/incidents/{incident_id}/acknowledge", "raw_path": b"",
             "root_path": "", "query_string": b"", "server": ("test", 80),
             "client": ("test", 1), "headers": [(b"content-type", b"application/json"),
                                                (b"content-length", str(len(body)).encode())]}
    asyncio.run(app(scope, receive, send))
    assert seen_at_response_start == ["acknowledged"]
