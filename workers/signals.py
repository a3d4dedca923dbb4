"""SIGTERM/SIGINT -> a stop event: how every worker process is asked to finish.

The first signal sets the event (the process finishes its batch, writes a last checkpoint
and leaves its consumer group); if the process is still running ``deadline_s`` later, or
when a second signal arrives, it exits at once (``os._exit``): nothing is lost, the next
owner replays from the last checkpoint, and an outbox row in flight is sent again after
its lease with the same idempotency key.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
from types import FrameType

log = logging.getLogger(__name__)

#: exit status when the stop deadline passed or a second signal arrived
EXIT_FORCED = 124


def _exit_now(reason: str) -> None:
    log.warning("%s: exiting at once", reason)
    for handler in logging.getLogger().handlers:
        handler.flush()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(EXIT_FORCED)


def stop_event_on_signals(deadline_s: float | None = None) -> threading.Event:
    """An event that SIGTERM or SIGINT sets (installed in the main thread).

    ``deadline_s``: after the first signal, exit at once if still running this long
    later; a second signal always exits at once."""
    stop = threading.Event()

    def handle(signum: int, _frame: FrameType | None) -> None:
        if stop.is_set():
            _exit_now(f"signal {signum} again")
        log.info("signal %d: stopping", signum)
        stop.set()
        if deadline_s is not None:
            timer = threading.Timer(deadline_s, _exit_now,
                                    args=(f"still running {deadline_s:g}s after the signal",))
            timer.daemon = True
            timer.start()

    signal.signal(signal.SIGTERM, handle)
    signal.signal(signal.SIGINT, handle)
    return stop
