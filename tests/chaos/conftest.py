"""A private Kafka broker and Postgres for the chaos tests, which kill and restart them.

The shared stack (``deploy/local/stack up``, the one every other test uses) is never
touched: the private instance runs from its own folder (``DQPULSE_LOCAL_RUN_DIR``) on free
ports, started by the same script, and is removed at the end of the module that used it."""

from __future__ import annotations

import os
import socket
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
STACK = ROOT / "deploy" / "local" / "stack"


def _free_ports(count: int) -> list[int]:
    sockets = []
    try:
        for _ in range(count):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            sockets.append(s)
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


@dataclass
class PrivateStack:
    """Kafka + Postgres of deploy/local/stack in ``run_dir``, on their own ports."""

    run_dir: Path
    pg_port: int
    kafka_port: int
    controller_port: int

    @property
    def admin_url(self) -> str:
        return f"postgresql+psycopg://dqpulse@127.0.0.1:{self.pg_port}/dqpulse"

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.kafka_port}"

    def script(self, *args: str, timeout_s: float = 240) -> str:
        env = {k: v for k, v in os.environ.items() if not k.startswith("DQPULSE_LOCAL_")}
        env.update({"DQPULSE_LOCAL_RUN_DIR": str(self.run_dir),
                    "DQPULSE_LOCAL_SERVICES": "postgres kafka",
                    "DQPULSE_LOCAL_PG_PORT": str(self.pg_port),
                    "DQPULSE_LOCAL_KAFKA_PORT": str(self.kafka_port),
                    "DQPULSE_LOCAL_KAFKA_CONTROLLER_PORT": str(self.controller_port)})
        result = subprocess.run([str(STACK), *args], env=env, capture_output=True, text=True,
                                timeout=timeout_s)
        if result.returncode != 0:
            raise RuntimeError(f"stack {' '.join(args)} failed:\n{result.stderr[-3000:]}")
        return result.stderr

    def up(self) -> str:
        return self.script("up")

    def kill(self, service: str) -> None:
        """SIGKILL, as a crash or the OOM killer would."""
        self.script("kill", service)

    def stop(self, service: str) -> None:
        """An orderly stop (PostgreSQL: fast shutdown, SIGINT)."""
        self.script("stop", service)


@pytest.fixture(scope="module")
def private_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrivateStack]:
    pg, kafka, controller = _free_ports(3)
    stack = PrivateStack(tmp_path_factory.mktemp("private-stack"), pg, kafka, controller)
    stack.up()
    try:
        yield stack
    finally:
        stack.script("reset")
