"""SIGTERM handling of a real child process: the stop event, the deadline, a second signal."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

from workers.signals import EXIT_FORCED

ROOT = Path(__file__).resolve().parents[2]

# a process that ignores the stop event (a stuck shutdown), or honours it
CHILD = """
import sys, time
from workers.signals import stop_event_on_signals
stop = stop_event_on_signals(deadline_s=float(sys.argv[1]))
print("ready", flush=True)
stop.wait()
print("stopping", flush=True)
if sys.argv[2] == "stuck":
    time.sleep(60)
"""


def _start(deadline_s: float, mode: str) -> subprocess.Popen[str]:
    child = subprocess.Popen([sys.executable, "-c", CHILD, str(deadline_s), mode], cwd=ROOT,
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    assert child.stdout is not None and child.stdout.readline().strip() == "ready"
    return child


def test_first_signal_sets_the_stop_event_and_a_clean_stop_exits_zero():
    child = _start(30, "clean")
    child.send_signal(signal.SIGTERM)
    assert child.wait(10) == 0


def test_the_deadline_ends_a_stuck_stop():
    child = _start(1.0, "stuck")
    started = time.monotonic()
    child.send_signal(signal.SIGTERM)
    assert child.wait(10) == EXIT_FORCED
    assert 0.9 < time.monotonic() - started < 5


def test_a_second_signal_exits_at_once():
    child = _start(30, "stuck")
    child.send_signal(signal.SIGTERM)
    assert child.stdout is not None and child.stdout.readline().strip() == "stopping"
    started = time.monotonic()
    child.send_signal(signal.SIGTERM)
    assert child.wait(10) == EXIT_FORCED
    assert time.monotonic() - started < 2
