"""The notifier protocol, the registry of channel types, and the shared message text.

A notifier turns one outbox *message* (the channel-neutral dict that
:func:`dqpulse.alerts.outbox.build_message` writes) into one HTTP request for its service
(:meth:`Notifier.build`, pure, so payloads are unit-tested without a network), and sends
it with ``httpx`` under a timeout (:meth:`Notifier.send`). Secrets (``url`` tokens,
``secret``) live only on the notifier object: never in the outbox, never in a log line,
never in an error message (:meth:`Notifier.redact`).

Third-party channels register with :func:`register` or through the ``dqpulse.notifiers``
entry-point group; registering a type twice raises.
"""

from __future__ import annotations

import abc
import json
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from importlib import metadata
from typing import Any, ClassVar, TypeVar

import httpx

from dqpulse.alerts.ratelimit import TokenBucket
from dqpulse.errors import ConfigError
from dqpulse.spec import NotificationSpec

log = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "dqpulse.notifiers"
USER_AGENT = "dqpulse-notifier/0.1"

#: Events a message can announce, in lifecycle order (``impact``: a downstream dataset
#: joined the incident of its upstream root, see ``dqpulse.alerts.impacts``).
EVENTS = ("opened", "reopened", "escalated", "impact", "acknowledged", "resolved")

# Statuses that mean "the request itself is wrong": retrying cannot help.
_PERMANENT = frozenset({400, 401, 403, 404, 405, 410, 413, 414, 415, 422})


@dataclass(frozen=True)
class OutgoingRequest:
    """One HTTP request to a channel; ``body`` is the exact bytes that are sent."""

    method: str
    url: str
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass(frozen=True)
class SendResult:
    """Outcome of one delivery attempt."""

    ok: bool
    status: int | None = None
    error: str | None = None
    retry_after_s: float | None = None
    permanent: bool = False


def dumps(payload: Any) -> bytes:
    """Compact, deterministic JSON bytes (what is signed is what is sent)."""
    return json.dumps(payload, separators=(",", ":"), sort_keys=True, ensure_ascii=False,
                      default=str).encode("utf-8")


class Notifier(abc.ABC):
    """Base of every channel type: build a request (pure), send it (``httpx``)."""

    type: ClassVar[str] = ""

    def __init__(self, spec: NotificationSpec, *, timeout_s: float = 10.0,
                 client: httpx.Client | None = None,
                 clock: Callable[[], float] | None = None) -> None:
        self.spec = spec
        self.timeout_s = timeout_s
        self._client = client
        self._own_client = client is None
        self.bucket = (TokenBucket(spec.rate_limit_per_minute) if clock is None
                       else TokenBucket(spec.rate_limit_per_minute, clock=clock))
        self.validate_spec()

    @property
    def name(self) -> str:
        return self.spec.name

    def __repr__(self) -> str:  # never the url or the secret
        return f"<{type(self).__name__} channel={self.spec.name!r}>"

    def validate_spec(self) -> None:
        """Raise ``ConfigError`` when the channel's settings cannot work (e.g. no key)."""
        if not self.spec.url.startswith(("http://", "https://")):
            raise ConfigError(f"notifications[{self.spec.name}].url: must be an http(s) URL")

    @abc.abstractmethod
    def build(self, message: Mapping[str, Any], *, now: datetime) -> OutgoingRequest:
        """The request announcing ``message`` (pure: no I/O, depends only on its inputs)."""

    def headers(self, message: Mapping[str, Any]) -> dict[str, str]:
        return {"Content-Type": "application/json", "User-Agent": USER_AGENT,
                "Idempotency-Key": str(message["idempotency_key"])}

    # ---- sending ------------------------------------------------------------------------
    @property
    def client(self) -> httpx.Client:
        if self._client is None:
            self._client = httpx.Client(timeout=httpx.Timeout(self.timeout_s),
                                        follow_redirects=False)
        return self._client

    def send(self, message: Mapping[str, Any], *, now: datetime | None = None) -> SendResult:
        """Deliver ``message`` once; never raises for network or HTTP failures."""
        when = now or datetime.now(UTC)
        try:
            request = self.build(message, now=when)
        except (KeyError, TypeError, ValueError) as exc:
            return SendResult(ok=False, permanent=True,
                              error=self.redact(f"cannot build payload: {exc!r}"))
        try:
            response = self.client.request(request.method, request.url,
                                           headers=request.headers, content=request.body)
        except httpx.TimeoutException as exc:
            return SendResult(ok=False, error=f"timeout: {type(exc).__name__}")
        except httpx.HTTPError as exc:
            return SendResult(ok=False, error=self.redact(f"{type(exc).__name__}: {exc}"))
        return self.interpret(response)

    def interpret(self, response: httpx.Response) -> SendResult:
        status = response.status_code
        if 200 <= status < 300:
            return SendResult(ok=True, status=status)
        body = response.text[:300] if response.content else ""
        return SendResult(ok=False, status=status,
                          error=self.redact(f"HTTP {status}: {body}".strip()),
                          retry_after_s=retry_after(response.headers.get("Retry-After")),
                          permanent=status in _PERMANENT)

    def redact(self, text: str) -> str:
        """``text`` with the channel's url and secret masked."""
        for secret in (self.spec.url, self.spec.secret):
            if secret:
                text = text.replace(secret, "***")
        return text

    def close(self) -> None:
        if self._own_client and self._client is not None:
            self._client.close()
            self._client = None


def retry_after(value: str | None) -> float | None:
    """Seconds from a ``Retry-After`` header (delta seconds or an HTTP date)."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - datetime.now(UTC)).total_seconds())


# ---- shared message text --------------------------------------------------------------

def _number(value: Any) -> str:
    if value is None:
        return "?"
    if isinstance(value, bool) or not isinstance(value, int | float):
        return str(value)
    if float(value).is_integer() and abs(value) < 1e15:
        return f"{int(value):,}"
    return f"{value:,.4g}"


def expected_text(message: Mapping[str, Any]) -> str:
    low, high = message.get("expected_low"), message.get("expected_high")
    if low is None and high is None:
        return "n/a"
    if low is None:
        return f"<= {_number(high)}"
    if high is None:
        return f">= {_number(low)}"
    return f"{_number(low)} .. {_number(high)}"


def observed_text(message: Mapping[str, Any]) -> str:
    return _number(message.get("observed"))


def what_text(message: Mapping[str, Any]) -> str:
    field_part = f" (field {message['field']})" if message.get("field") else ""
    return f"{message.get('metric') or message.get('kind')}{field_part}"


def title(message: Mapping[str, Any]) -> str:
    """One line: ``[CRITICAL] opened: orders volume incident #12``."""
    return (f"[{str(message['severity']).upper()}] {message['event']}: "
            f"{message['dataset']} {message['kind']} incident #{message['incident_id']}")


def facts(message: Mapping[str, Any]) -> list[tuple[str, str]]:
    """The facts every channel shows: what broke, since when, expected vs observed, owner."""
    out = [
        ("What broke", what_text(message)),
        ("Since", str(message.get("since") or message.get("opened_at"))),
        ("Expected", expected_text(message)),
        ("Observed", observed_text(message)),
        ("Owner", str(message.get("owner") or "unassigned")),
        ("Severity", str(message["severity"])),
        ("Status", str(message["status"])),
    ]
    segment = message.get("segment") or {}
    if segment.get("text"):
        out.append(("Segment", str(segment["text"])))
    root = message.get("root") or {}
    if root.get("dataset") and (root.get("dataset") != message.get("dataset")
                                or message.get("impacts")):
        out.append(("Root cause", f"{root['dataset']} (incident #{root.get('incident_id')})"))
    impacts = message.get("impacts") or []
    if impacts:
        out.append(("Impact", ", ".join(
            f"{i['dataset']} ({i.get('owner') or 'unassigned'})" for i in impacts[:10])
            + (f" and {len(impacts) - 10} more" if len(impacts) > 10 else "")))
    if message.get("actor") and message["event"] in ("acknowledged", "resolved"):
        out.append(("By", str(message["actor"])))
    if message.get("comment"):
        out.append(("Comment", str(message["comment"])))
    return out


def description(message: Mapping[str, Any]) -> str:
    lines = [str(message.get("summary") or "")]
    lines += [f"{k}: {v}" for k, v in facts(message)]
    lines.append(f"Incident: {message['incident_url']}")
    return "\n".join(line for line in lines if line)


# ---- registry -------------------------------------------------------------------------

_REGISTRY: dict[str, type[Notifier]] = {}
N = TypeVar("N", bound=type[Notifier])


def register(cls: N) -> N:
    """Class decorator: make ``cls`` the notifier for ``cls.type``; twice raises."""
    if not cls.type:
        raise ValueError(f"{cls.__name__} has no 'type'")
    if cls.type in _REGISTRY:
        raise ValueError(f"notifier type {cls.type!r} is already registered "
                         f"({_REGISTRY[cls.type].__name__})")
    _REGISTRY[cls.type] = cls
    return cls


def available() -> list[str]:
    return sorted(_REGISTRY)


def get(type_name: str) -> type[Notifier]:
    try:
        return _REGISTRY[type_name]
    except KeyError:
        raise ConfigError(f"unknown notifier type {type_name!r}; "
                          f"available: {', '.join(available())}") from None


def create(spec: NotificationSpec, **kwargs: Any) -> Notifier:
    return get(spec.type)(spec, **kwargs)


def load_entry_points() -> list[str]:
    """Register notifiers published under the ``dqpulse.notifiers`` entry-point group."""
    loaded = []
    for entry in metadata.entry_points(group=ENTRY_POINT_GROUP):
        cls = entry.load()
        if getattr(cls, "type", None) not in _REGISTRY:
            register(cls)
            loaded.append(cls.type)
    return loaded


def example_message(**overrides: Any) -> dict[str, Any]:
    """A complete outbox message, for doctests, contract tests and docs."""
    message: dict[str, Any] = {
        "version": 1, "event": "opened", "idempotency_key": "7:opened:1:oncall",
        "incident_id": 7, "dataset": "orders", "kind": "volume", "kinds": ["volume"],
        "metric": "volume.records", "field": "", "severity": "critical",
        "previous_severity": None, "status": "open",
        "summary": "orders: volume.records dropped to 12 (expected 950 .. 1,050)",
        "score": 0.999, "dedup_key": "dqpulse:orders:flow", "owner": "payments",
        "opened_at": "2026-01-01T00:01:00Z", "acknowledged_at": None, "resolved_at": None,
        "since": "2026-01-01T00:00:00Z", "window_start": 1767225600.0,
        "window_end": 1767225660.0, "expected_low": 950.0, "expected_high": 1050.0,
        "observed": 12.0, "direction": "down", "alert_count": 1,
        "incident_url": "http://127.0.0.1:8000/api/v1/incidents/7",
        "occurred_at": "2026-01-01T00:01:00Z", "actor": "dqpulse", "comment": None,
    }
    message.update(overrides)
    return message
