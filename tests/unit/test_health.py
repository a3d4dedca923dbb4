"""Liveness and readiness decisions (dqpulse.health) on a fake clock."""

from __future__ import annotations

from dqpulse.health import Health


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_liveness_fails_when_the_loop_has_not_turned_within_the_stall_limit():
    clock = Clock()
    health = Health(stall_s=5.0, clock=clock)
    clock.now += 4.9
    assert health.liveness()[0]
    clock.now += 0.2
    alive, body = health.liveness()
    assert not alive and body["seconds_since_loop_turned"] == 5.1
    health.beat()
    assert health.liveness()[0]


def test_readiness_names_each_failing_reason():
    clock = Clock()
    health = Health(stall_s=5.0, progress_max_age_s=10.0, clock=clock)
    database_up = [True]
    health.add_check("database", lambda: None if database_up[0] else "refused")
    assert health.readiness() == (True, {"ready": True, "checks": {}})

    health.set_condition("partitions", "restoring 8 assigned partitions")
    database_up[0] = False
    ready, body = health.readiness()
    assert not ready
    assert body["checks"] == {"partitions": "restoring 8 assigned partitions",
                              "database": "refused"}
    health.set_condition("partitions", None)
    database_up[0] = True
    assert health.readiness()[0]


def test_readiness_needs_a_recent_checkpoint():
    clock = Clock()
    health = Health(stall_s=5.0, progress_max_age_s=10.0, clock=clock)
    clock.now += 11
    ready, body = health.readiness()
    assert not ready and "none yet" in body["checks"]["checkpoint"]
    health.progress()
    assert health.readiness()[0]
    clock.now += 10.5
    ready, body = health.readiness()
    assert not ready and "10.5s ago" in body["checks"]["checkpoint"]


def test_a_check_that_raises_is_a_reason_not_a_crash():
    health = Health(stall_s=5.0)

    def broken() -> str | None:
        raise ConnectionError("boom")

    health.add_check("database", broken)
    assert health.readiness()[1]["checks"] == {"database": "ConnectionError: boom"}
