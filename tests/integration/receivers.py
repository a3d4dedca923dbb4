"""Real HTTP receivers on 127.0.0.1, one per channel format, for the alerting tests.

Each receiver is a ``ThreadingHTTPServer`` on an ephemeral port that records every request,
checks the payload against the shape the real service documents, and answers like it
(400 with the problems when the shape is wrong). ``down()`` stops the server, so clients
get *connection refused*; ``up()`` starts it again on the same port; ``fail_with(503)``
keeps it up but failing.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

from dqpulse.alerts.notifiers.webhook import verify_signature


@dataclass
class Received:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    json: Any
    status: int
    problems: list[str]
    at: float

    @property
    def key(self) -> str | None:
        return self.headers.get("idempotency-key")


Validator = Callable[["Received"], list[str]]


def _is_str(value: Any, limit: int | None = None) -> bool:
    return isinstance(value, str) and bool(value) and (limit is None or len(value) <= limit)


def validate_slack(req: Received) -> list[str]:
    """Incoming webhook + Block Kit (api.slack.com/messaging/webhooks, /reference/block-kit)."""
    body, problems = req.json, []
    if not isinstance(body, dict):
        return ["body is not a JSON object"]
    if not _is_str(body.get("text")):
        problems.append("text (notification fallback) missing")
    blocks = body.get("blocks")
    if not isinstance(blocks, list) or not 0 < len(blocks) <= 50:
        return problems + ["blocks must be a list of 1..50 blocks"]
    for block in blocks:
        kind = block.get("type")
        if kind not in {"header", "section", "actions", "context", "divider"}:
            problems.append(f"unexpected block type {kind!r}")
        if kind == "header":
            text = block.get("text", {})
            if text.get("type") != "plain_text" or not _is_str(text.get("text"), 150):
                problems.append("header needs plain_text of at most 150 characters")
        if kind == "section":
            if "text" not in block and "fields" not in block:
                problems.append("section needs text or fields")
            fields = block.get("fields", [])
            if len(fields) > 10 or any(not _is_str(f.get("text"), 2000) for f in fields):
                problems.append("section fields: at most 10, each text <= 2000 characters")
            if "text" in block and not _is_str(block["text"].get("text"), 3000):
                problems.append("section text must be 1..3000 characters")
        if kind == "actions":
            for element in block.get("elements", []):
                if element.get("type") == "button" and not _is_str(element.get("url")):
                    problems.append("button without url")
    return problems


def validate_teams(req: Received) -> list[str]:
    """Workflows webhook with an Adaptive Card attachment."""
    body = req.json
    if not isinstance(body, dict) or body.get("type") != "message":
        return ["body must be an object with type 'message'"]
    attachments = body.get("attachments")
    if not isinstance(attachments, list) or len(attachments) != 1:
        return ["attachments must hold one card"]
    attachment = attachments[0]
    problems = []
    if attachment.get("contentType") != "application/vnd.microsoft.card.adaptive":
        problems.append("contentType must be application/vnd.microsoft.card.adaptive")
    card = attachment.get("content") or {}
    if card.get("type") != "AdaptiveCard" or not _is_str(card.get("version")):
        problems.append("content must be an AdaptiveCard with a version")
    if not isinstance(card.get("body"), list) or not card["body"]:
        problems.append("card body must be a non-empty list")
    for element in card.get("body", []):
        if element.get("type") not in {"TextBlock", "FactSet", "ColumnSet", "Container"}:
            problems.append(f"unexpected card element {element.get('type')!r}")
        if element.get("type") == "FactSet":
            for fact in element.get("facts", []):
                if not isinstance(fact.get("title"), str) or not isinstance(fact.get("value"),
                                                                            str):
                    problems.append("facts need string title and value")
    for action in card.get("actions", []):
        if action.get("type") == "Action.OpenUrl" and not _is_str(action.get("url")):
            problems.append("Action.OpenUrl without url")
    return problems


def pagerduty_validator(routing_key: str) -> Validator:
    """Events API v2 (developer.pagerduty.com/api-reference/368ae3d938c9e-send-an-event)."""

    def validate(req: Received) -> list[str]:
        body, problems = req.json, []
        if req.path != "/v2/enqueue":
            problems.append(f"path must be /v2/enqueue, got {req.path}")
        if not isinstance(body, dict):
            return problems + ["body is not a JSON object"]
        if body.get("routing_key") != routing_key:
            problems.append("wrong or missing routing_key")
        action = body.get("event_action")
        if action not in {"trigger", "acknowledge", "resolve"}:
            problems.append(f"event_action {action!r} is not trigger/acknowledge/resolve")
        if not _is_str(body.get("dedup_key"), 255):
            problems.append("dedup_key must be 1..255 characters")
        if action == "trigger":
            payload = body.get("payload") or {}
            if not _is_str(payload.get("summary"), 1024):
                problems.append("payload.summary must be 1..1024 characters")
            if not _is_str(payload.get("source")):
                problems.append("payload.source is required")
            if payload.get("severity") not in {"critical", "error", "warning", "info"}:
                problems.append("payload.severity must be critical/error/warning/info")
        return problems

    return validate


def opsgenie_validator(api_key: str) -> Validator:
    """Alert API: create, acknowledge and close by alias (docs.opsgenie.com/docs/alert-api)."""

    def validate(req: Received) -> list[str]:
        problems = []
        if req.headers.get("authorization") != f"GenieKey {api_key}":
            problems.append("missing or wrong 'Authorization: GenieKey ...'")
        parts = urlsplit(req.path)
        body = req.json if isinstance(req.json, dict) else {}
        if parts.path == "/v2/alerts":
            if not _is_str(body.get("message"), 130):
                problems.append("message must be 1..130 characters")
            if "alias" in body and not _is_str(body["alias"], 512):
                problems.append("alias must be at most 512 characters")
            if body.get("priority") not in {"P1", "P2", "P3", "P4", "P5"}:
                problems.append("priority must be P1..P5")
            if "description" in body and len(body["description"]) > 15000:
                problems.append("description longer than 15000 characters")
        elif parts.path.startswith("/v2/alerts/") and parts.path.rsplit("/", 1)[-1] in {
                "acknowledge", "close"}:
            if parse_qs(parts.query).get("identifierType") != ["alias"]:
                problems.append("identifierType=alias expected")
        else:
            problems.append(f"unexpected path {req.path}")
        return problems

    return validate


def webhook_validator(secret: str, tolerance_s: float = 300) -> Validator:
    """The generic webhook: signature over timestamp and body, replay window, idempotency."""

    def validate(req: Received) -> list[str]:
        problems = []
        timestamp = req.headers.get("x-dqpulse-timestamp", "")
        signature = req.headers.get("x-dqpulse-signature", "")
        if not verify_signature(secret, timestamp, req.body, signature, tolerance_s):
            problems.append("signature does not verify")
        if not req.key:
            problems.append("Idempotency-Key header missing")
        if not isinstance(req.json, dict) or req.json.get("idempotency_key") != req.key:
            problems.append("body idempotency_key differs from the header")
        if req.headers.get("x-dqpulse-event") != (req.json or {}).get("event"):
            problems.append("X-Dqpulse-Event differs from the body")
        return problems

    return validate


_SUCCESS = {
    "slack": (200, "text/plain", lambda req: b"ok"),
    "teams": (202, "text/plain", lambda req: b""),
    "pagerduty": (202, "application/json", lambda req: json.dumps({
        "status": "success", "message": "Event processed",
        "dedup_key": (req.json or {}).get("dedup_key")}).encode()),
    "opsgenie": (202, "application/json", lambda req: json.dumps({
        "result": "Request will be processed", "took": 0.01,
        "requestId": str(uuid.uuid4())}).encode()),
    "webhook": (200, "application/json", lambda req: b'{"ok":true}'),
}


@dataclass
class Receiver:
    """A recording HTTP receiver for one channel format."""

    kind: str
    validate: Validator
    requests: list[Received] = field(default_factory=list)
    port: int = 0
    failing_status: int | None = None
    delay_s: float = 0.0  # a slow receiver: each request waits this long before its answer
    started: int = 0  # requests that arrived (counted before the delay)
    _server: ThreadingHTTPServer | None = None
    _thread: threading.Thread | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:  # noqa: N802 - http.server's naming
                with receiver._lock:
                    receiver.started += 1
                if receiver.delay_s:
                    time.sleep(receiver.delay_s)
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length)
                try:
                    parsed = json.loads(body) if body else None
                except ValueError:
                    parsed = None
                req = Received(self.command, self.path,
                               {k.lower(): v for k, v in self.headers.items()}, body, parsed,
                               0, [], time.time())
                if receiver.failing_status is not None:
                    status, ctype, payload = receiver.failing_status, "text/plain", b"down"
                else:
                    req.problems = (["body is not JSON"] if parsed is None
                                    else receiver.validate(req))
                    if req.problems:
                        status, ctype = 400, "application/json"
                        payload = json.dumps({"problems": req.problems}).encode()
                    else:
                        status, ctype, make = _SUCCESS[receiver.kind]
                        payload = make(req)
                req.status = status
                with receiver._lock:
                    receiver.requests.append(req)
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

        return Handler

    def up(self) -> Receiver:
        if self._server is not None:
            return self
        ThreadingHTTPServer.allow_reuse_address = True
        server = ThreadingHTTPServer(("127.0.0.1", self.port), self._handler())
        server.daemon_threads = True
        self.port = server.server_address[1]
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, daemon=True,
                                        name=f"receiver-{self.kind}")
        self._thread.start()
        return self

    def down(self) -> None:
        """Stop listening: clients now get connection refused."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
            if self._thread is not None:
                self._thread.join(timeout=5)

    def fail_with(self, status: int | None) -> None:
        self.failing_status = status

    # ---- what arrived ---------------------------------------------------------------------
    def accepted(self) -> list[Received]:
        with self._lock:
            return [r for r in self.requests if 200 <= r.status < 300]

    def rejected(self) -> list[Received]:
        with self._lock:
            return [r for r in self.requests if r.status == 400]

    def accepted_keys(self) -> Counter[str]:
        return Counter(r.key or "" for r in self.accepted())

    def wait_for(self, count: int, timeout_s: float = 10.0) -> list[Received]:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if len(self.accepted()) >= count:
                break
            time.sleep(0.02)
        return self.accepted()


def slack_receiver() -> Receiver:
    return Receiver("slack", validate_slack).up()


def teams_receiver() -> Receiver:
    return Receiver("teams", validate_teams).up()


def pagerduty_receiver(routing_key: str) -> Receiver:
    return Receiver("pagerduty", pagerduty_validator(routing_key)).up()


def opsgenie_receiver(api_key: str) -> Receiver:
    return Receiver("opsgenie", opsgenie_validator(api_key)).up()


def webhook_receiver(secret: str) -> Receiver:
    return Receiver("webhook", webhook_validator(secret)).up()
