"""JSON and text log records, and the redaction of secrets (dqpulse.logs)."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import pytest
from pydantic import SecretStr

from dqpulse.config import Settings
from dqpulse.logs import RepeatLimiter, configure_logging, register_secrets, spec_secrets
from dqpulse.spec import parse_spec

SASL = "sasl-pass-0c9d"
DB_PASS = "db-pass-2b7e"
TOKENS = "tok-one-aa11,tok-two-bb22"


@pytest.fixture
def captured() -> Iterator[tuple[io.StringIO, Settings]]:
    root = logging.getLogger()
    saved = (list(root.handlers), root.level)
    stream = io.StringIO()
    settings = Settings(log_format="json", kafka_sasl_password=SecretStr(SASL),
                        api_tokens=SecretStr(TOKENS),
                        database_url=f"postgresql+psycopg://dq:{DB_PASS}@db.internal:5432/dq")
    configure_logging(settings, stream=stream)
    yield stream, settings
    root.handlers, root.level = saved
    logging.captureWarnings(False)


def _records(stream: io.StringIO) -> list[dict]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def test_every_record_is_one_json_object_with_stable_keys_and_context(captured):
    stream, _ = captured
    log = logging.getLogger("dqpulse.test")
    log.info("window %s finalized", 42, extra={"dataset": "orders", "partition": 3,
                                               "offsets": {"orders[3]": 1200}})
    log.warning("multi\nline")
    records = _records(stream)
    assert len(records) == 2
    first = records[0]
    assert first["message"] == "window 42 finalized"
    assert first["level"] == "INFO" and first["logger"] == "dqpulse.test"
    assert first["time"].endswith("Z") and "T" in first["time"]
    assert first["dataset"] == "orders" and first["partition"] == 3
    assert first["offsets"] == {"orders[3]": 1200}
    assert records[1]["message"] == "multi\nline"


def test_an_exception_is_one_record_with_its_traceback(captured):
    stream, _ = captured
    try:
        raise ValueError(f"could not connect to postgresql://dq:{DB_PASS}@db/dq")
    except ValueError:
        logging.getLogger("dqpulse.test").exception("checkpoint failed",
                                                    extra={"incident_id": 7})
    (record,) = _records(stream)
    assert record["exception_type"] == "ValueError"
    assert "Traceback" in record["exception"] and "raise ValueError" in record["exception"]
    assert record["incident_id"] == 7
    assert DB_PASS not in stream.getvalue()


def test_no_secret_of_the_settings_or_the_model_reaches_the_log(captured):
    stream, settings = captured
    spec = parse_spec("""
datasets: [{name: a, topic: a}]
notifications:
  - {name: hook, type: webhook, url: "https://hooks.example.com/T1/B2/xyzzy-path-secret",
     secret: model-secret-77aa}
""")
    register_secrets(spec_secrets(spec))
    log = logging.getLogger("dqpulse.test")
    log.info("settings: %s", settings.model_dump())  # SecretStr renders as ******
    log.info("kafka sasl %s tokens %s", SASL, TOKENS)
    log.info("url %s", settings.database_url, extra={"dsn": f"host=db password={DB_PASS}"})
    log.info("sent", extra={"channel": "hook", "payload": {"k": ["model-secret-77aa"]}})
    log.info("posting to https://hooks.example.com/T1/B2/xyzzy-path-secret")
    log.info("curl -H 'Authorization: Bearer abc.def.ghi' https://x/?api_key=k-123&b=2")
    log.info("https://hooks.slack.com/services/T000/B000/XXXXSECRET failed")
    text = stream.getvalue()
    for secret in (SASL, DB_PASS, "tok-one-aa11", "tok-two-bb22", "model-secret-77aa",
                   "xyzzy-path-secret", "abc.def.ghi", "k-123", "XXXXSECRET"):
        assert secret not in text, secret
    records = _records(stream)
    assert records[2]["message"] == "url postgresql+psycopg://dq:***@db.internal:5432/dq"
    assert records[2]["dsn"] == "host=db password=***"
    assert "b=2" in records[5]["message"]  # only the secret parameter is masked
    assert records[3]["channel"] == "hook"


def test_text_format_on_a_terminal_and_json_otherwise():
    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    root = logging.getLogger()
    saved = (list(root.handlers), root.level)
    try:
        tty, pipe = Tty(), io.StringIO()
        configure_logging(Settings(log_format="auto"), stream=tty)
        logging.getLogger("dqpulse.test").info("hello", extra={"dataset": "orders"})
        configure_logging(Settings(log_format="auto"), stream=pipe)
        logging.getLogger("dqpulse.test").info("hello")
    finally:
        root.handlers, root.level = saved
        logging.captureWarnings(False)
    assert tty.getvalue().rstrip().endswith('INFO dqpulse.test: hello dataset="orders"')
    assert json.loads(pipe.getvalue())["message"] == "hello"


def test_a_crash_in_native_code_writes_every_threads_python_stack_before_the_process_dies():
    """A segmentation fault raises nothing Python could log: the configured process dumps
    its threads' Python stacks on stderr (faulthandler), so the log says where it died."""
    import signal
    import subprocess
    import sys

    code = """
import ctypes, threading, time
from dqpulse.config import Settings
from dqpulse.logs import configure_logging
configure_logging(Settings(log_format="json"))
threading.Thread(target=time.sleep, args=(60,), name="idle", daemon=True).start()
def finalize_the_window():
    ctypes.string_at(0)  # reads address 0: SIGSEGV
finalize_the_window()
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == -signal.SIGSEGV
    assert "Fatal Python error: Segmentation fault" in done.stderr
    assert "in finalize_the_window" in done.stderr  # the crashing thread's stack
    assert "Thread 0x" in done.stderr and "Current thread 0x" in done.stderr  # the others'


def test_a_client_library_line_repeated_is_written_once_a_period_with_the_count(captured):
    """A broker down: librdkafka's reconnect line, hundreds a minute (measured: 843 in
    45 s), is written once per period, the next one saying how many were not; other
    lines, and dqpulse's own, pass untouched."""
    stream, _ = captured
    now = [0.0]
    limiter = next(f for f in logging.getLogger().handlers[0].filters
                   if isinstance(f, RepeatLimiter))
    limiter.clock = lambda: now[0]
    client = logging.getLogger("dqpulse.sources.librdkafka")
    ours = logging.getLogger("dqpulse.sources.kafka_confluent")
    for attempt in range(500):  # the numbers in a line do not make it another line
        now[0] = attempt * 0.1
        client.error("%s [%s] %s", "FAIL", "consumer-1",
                     f"Connect to 127.0.0.1:19999 failed (after {attempt}ms in state CONNECT)")
        if attempt % 100 == 0:
            client.warning("%s", "another line: written once too")
            ours.warning("partition counts of t: broker transport failure")
    now[0] = 61.0
    client.error("%s [%s] %s", "FAIL", "consumer-1",
                 "Connect to 127.0.0.1:19999 failed (after 7ms in state CONNECT)")
    lines = [(r["logger"], r["message"]) for r in _records(stream)]
    fails = [m for name, m in lines if "Connect to" in m]
    assert fails == [
        "FAIL [consumer-1] Connect to 127.0.0.1:19999 failed (after 0ms in state CONNECT)",
        "FAIL [consumer-1] Connect to 127.0.0.1:19999 failed (after 7ms in state CONNECT) "
        "(499 more like this in the last 60s not shown)"]
    assert sum("another line" in m for _, m in lines) == 1
    assert lines.count(("dqpulse.sources.kafka_confluent",
                        "partition counts of t: broker transport failure")) == 5


def test_the_repeat_limiter_forgets_the_line_written_longest_ago_past_its_bound():
    limiter = RepeatLimiter(period_s=60, max_lines=2, clock=lambda: 0.0)

    def passes(text: str) -> bool:
        return limiter.filter(logging.LogRecord("kafka.net", logging.ERROR, "", 0, text,
                                                (), None))

    assert passes("a") and passes("b") and not passes("a")
    assert passes("c")  # "a" (written first) is forgotten to make room
    assert passes("a") and not passes("c")
