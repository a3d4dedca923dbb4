"""SIGTERM/SIGINT -> a stop event: how every worker process is asked to finish."""

from __future__ import annotations

import logging
import signal
import threading
from types import FrameType

log = logging.getLogger(__name__)


def stop_event_on_signals() -> threading.Event:
    """An event that SIGTERM or SIGINT sets (installed in the main thread)."""
    stop = threading.Event()

    def handle(signum: int, _frame: FrameType | None) -> None:
        log.info("signal %d: stopping", signum)
        stop.set()

    signal.signal(signal.SIGTERM, handle)
    signal.signal(signal.SIGINT, handle)
    return stop
