"""Process logging: one JSON object per line (or text on a terminal), never a secret.

``DQPULSE_LOG_FORMAT``: ``json`` writes one object per line with ``time`` (ISO 8601 UTC),
``level``, ``logger``, ``message`` and the context a call passes with ``extra=`` (dataset,
partition, offsets, incident_id, channel, ...); an exception is one record with its
traceback in ``exception``. ``text`` writes ``time level logger: message key=value``.
``auto`` (the default) is text when stderr is a terminal, JSON otherwise.

Every record goes through :class:`Redactor` first: the values of the settings' and the
model's secrets (registered with :func:`register_secrets`) and secret-looking parts of
URLs and DSNs (a password in ``user:password@``, ``password=...``, ``token=``-like query
parameters, bearer tokens) are replaced by ``***`` in the message, the context values and
the traceback.
"""

from __future__ import annotations

import faulthandler
import json
import logging
import re
import sys
import threading
import time
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from types import TracebackType
from typing import Any, TextIO

from pydantic import SecretStr
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from dqpulse.config import Settings
from dqpulse.errors import ConfigError
from dqpulse.spec import Spec, expand_secrets

MASK = "***"
# LogRecord's own attributes: everything else on a record came in through ``extra=``
_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {
    "message", "asctime", "taskName", "color_message"}  # uvicorn's ANSI-coloured copy
_PATTERNS: list[re.Pattern[str]] = [
    # scheme://user:password@host
    re.compile(r"(?P<keep>[a-zA-Z][a-zA-Z0-9+.-]*://[^:/@\s]*:)[^@\s/]+(?=@)"),
    # password=..., token=..., ?api_key=... (DSNs, query strings, key=value text)
    re.compile(r"(?P<keep>(?i:\b(?:password|passwd|pwd|secret|token|access_token|api_key|"
                r"apikey|routing_key|sig|signature|sasl\.password)\b)\s*[=:]\s*)"
                r"[^\s&'\",;)]+"),
    re.compile(r"(?P<keep>(?i:\bbearer)\s+)[A-Za-z0-9._~+/=-]+"),
    # a Slack incoming-webhook URL is its own secret
    re.compile(r"(?P<keep>hooks\.slack\.com/services/)[^\s'\"]+"),
]


def _keep_and_mask(match: re.Match[str]) -> str:
    return match.group("keep") + MASK


class Redactor(logging.Filter):
    """Masks known secret values and secret-looking text in every record it sees."""

    def __init__(self) -> None:
        super().__init__()
        self._lock = threading.Lock()
        self._secrets: tuple[str, ...] = ()

    def add(self, values: Iterable[str | None]) -> None:
        """Secret values to mask (shorter than 4 characters: ignored, too common)."""
        with self._lock:
            known = set(self._secrets) | {v for v in values if v and len(v) >= 4}
            self._secrets = tuple(sorted(known, key=len, reverse=True))

    def redact(self, text: str) -> str:
        for secret in self._secrets:
            if secret in text:
                text = text.replace(secret, MASK)
        for pattern in _PATTERNS:
            text = pattern.sub(_keep_and_mask, text)
        return text

    def _value(self, value: Any) -> Any:
        if isinstance(value, str):
            return self.redact(value)
        if isinstance(value, SecretStr):
            return MASK
        if isinstance(value, dict):
            return {k: self._value(v) for k, v in value.items()}
        if isinstance(value, list | tuple | set):
            return [self._value(v) for v in value]
        if isinstance(value, int | float | bool) or value is None:
            return value
        return self.redact(str(value))

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg = self.redact(record.getMessage())
        record.args = None
        for key, value in list(vars(record).items()):
            if key not in _STANDARD:
                setattr(record, key, self._value(value))
        if record.exc_info and record.exc_info[0] is not None:
            record.exc_text = self.redact(_FORMATTER.formatException(record.exc_info))
        elif record.exc_text:
            record.exc_text = self.redact(record.exc_text)
        if record.stack_info:
            record.stack_info = self.redact(record.stack_info)
        return True


_FORMATTER = logging.Formatter()
_REDACTOR = Redactor()

#: loggers of the Kafka client libraries, which log a line per reconnect while a broker is
#: down (librdkafka through ``dqpulse.sources.librdkafka``; kafka-python under ``kafka``)
CLIENT_LOGGERS = ("kafka", "dqpulse.sources.librdkafka")
_NUMBERS = re.compile(r"\d+")


class RepeatLimiter(logging.Filter):
    """Writes a line of the client libraries once per ``period_s``: a broker that is down
    makes librdkafka log every reconnect (843 identical ERROR lines in 45 s, measured) and
    kafka-python five lines per try. Lines are alike when their logger, level and text
    with its numbers masked are; the first one written after a period says how many like
    it were not. Other loggers pass untouched (dqpulse's own say once what goes on)."""

    def __init__(self, prefixes: tuple[str, ...] = CLIENT_LOGGERS, period_s: float = 60.0,
                 max_lines: int = 1024, clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__()
        self.prefixes = prefixes
        self.period_s = period_s
        self.max_lines = max_lines
        self.clock = clock
        self._seen: dict[tuple[str, int, str], list[float]] = {}  # key -> [written at, hidden]
        self._lock = threading.Lock()

    def filter(self, record: logging.LogRecord) -> bool:
        if not record.name.startswith(self.prefixes):
            return True
        text = record.getMessage()
        key = (record.name, record.levelno, _NUMBERS.sub("#", text))
        now = self.clock()
        with self._lock:
            seen = self._seen.get(key)
            if seen is not None and now - seen[0] < self.period_s:
                seen[1] += 1
                return False
            hidden = int(seen[1]) if seen is not None else 0
            self._seen.pop(key, None)
            if len(self._seen) >= self.max_lines:  # the line written longest ago goes
                del self._seen[next(iter(self._seen))]
            self._seen[key] = [now, 0]
        if hidden:
            record.msg = (f"{text} ({hidden} more like this in the last "
                          f"{self.period_s:g}s not shown)")
            record.args = ()
        return True


def _context(record: logging.LogRecord) -> dict[str, Any]:
    return {k: v for k, v in vars(record).items() if k not in _STANDARD}


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, context, exception."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(
                timespec="milliseconds").replace("+00:00", "Z"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        entry.update({k: v for k, v in _context(record).items() if k not in entry})
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            entry["exception"] = record.exc_text
            if record.exc_info and record.exc_info[0] is not None:
                entry["exception_type"] = record.exc_info[0].__name__
        if record.stack_info:
            entry["stack"] = record.stack_info
        if record.threadName and record.threadName != "MainThread":
            entry["thread"] = record.threadName
        return json.dumps(entry, default=str, ensure_ascii=False)


class TextFormatter(logging.Formatter):
    """``time level logger: message key=value ...`` for people at a terminal."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def formatMessage(self, record: logging.LogRecord) -> str:  # noqa: N802 - stdlib's name
        line = super().formatMessage(record)
        context = _context(record)
        if context:
            line += " " + " ".join(f"{k}={json.dumps(v, default=str)}"
                                   for k, v in context.items())
        return line


def settings_secrets(settings: Settings) -> list[str]:
    """The secret values in the settings: every ``SecretStr``, each static API token and
    the database password."""
    values: list[str] = []
    for name in type(settings).model_fields:
        value = getattr(settings, name)
        if isinstance(value, SecretStr):
            secret = value.get_secret_value()
            values.append(secret)
            values.extend(part.strip() for part in secret.split(","))
    try:
        password = make_url(settings.database_url).password
    except ArgumentError:
        password = None
    if password:
        values.append(str(password))
    return values


def spec_secrets(spec: Spec) -> list[str]:
    """The model's secrets: each channel's secret and its URL (webhook URLs, Slack and
    Teams ones in particular, carry their credential in the path), with their ``${VAR}``
    references expanded from this process's environment where set (the values a notifier
    sends with)."""
    values: list[str] = []
    for channel in spec.notifications:
        try:
            channel = expand_secrets(Spec(notifications=[channel])).notifications[0]
        except ConfigError:
            pass  # a variable not set here: this process cannot log its value either
        values.append(channel.url)
        if channel.secret:
            values.append(channel.secret)
    return values


def register_secrets(values: Iterable[str | None]) -> None:
    """Mask these values in every log record from now on."""
    _REDACTOR.add(values)


def redact(text: str) -> str:
    """``text`` as a log record would show it."""
    return _REDACTOR.redact(text)


def configure_logging(settings: Settings, *, verbose: bool = False,
                      stream: TextIO | None = None) -> logging.Handler:
    """Root logging for a process: one handler on ``stream`` (stderr) with the format of
    ``DQPULSE_LOG_FORMAT`` and the redaction filter; Python warnings and uncaught
    exceptions are logged too, so a JSON log stays JSON. Returns the handler."""
    stream = stream if stream is not None else sys.stderr
    kind = settings.log_format
    if kind == "auto":
        kind = "text" if stream.isatty() else "json"
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter() if kind == "json" else TextFormatter())
    handler.addFilter(RepeatLimiter())
    handler.addFilter(_REDACTOR)
    register_secrets(settings_secrets(settings))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    level = logging.DEBUG if verbose else logging.getLevelName(settings.log_level.upper())
    root.setLevel(level if isinstance(level, int) else logging.INFO)
    logging.captureWarnings(True)
    sys.excepthook = _log_uncaught
    threading.excepthook = _log_thread_exception
    try:  # a crash in native code (SIGSEGV, SIGABRT) writes every thread's Python stack
        faulthandler.enable(file=stream, all_threads=True)
    except (AttributeError, ValueError, OSError):
        pass  # a stream without a file descriptor (a test's): no crash dump
    return handler


def _log_uncaught(kind: type[BaseException], value: BaseException,
                  traceback: TracebackType | None) -> None:
    logging.getLogger("dqpulse").critical("uncaught %s", kind.__name__,
                                          exc_info=(kind, value, traceback))


def _log_thread_exception(args: threading.ExceptHookArgs) -> None:
    if args.exc_type is SystemExit:
        return
    logging.getLogger("dqpulse").error(
        "uncaught %s in thread %s", args.exc_type.__name__,
        args.thread.name if args.thread else "?",
        exc_info=(args.exc_type, args.exc_value or args.exc_type(), args.exc_traceback))
