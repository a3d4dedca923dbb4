#!/usr/bin/env python3
"""Readiness probes for deploy/local/stack, standard library only.

Usage:
  probe.py tcp HOST PORT      a TCP connection is accepted
  probe.py http URL           GET answers 200
  probe.py kafka HOST PORT    the broker answers ApiVersions and a Metadata request that
                              lists itself at HOST:PORT (prints the cluster id)
Exit status 0 when the probe passes, 1 otherwise (the reason goes to stderr).
"""

from __future__ import annotations

import socket
import struct
import sys
import urllib.error
import urllib.request

TIMEOUT_S = 3.0
API_METADATA = 3
API_VERSIONS = 18
# Metadata v4..v7 share one non-flexible request layout; Kafka 4.x dropped v0..v3 (KIP-896)
METADATA_VERSIONS = range(4, 8)


def probe_tcp(host: str, port: int) -> None:
    with socket.create_connection((host, port), timeout=TIMEOUT_S):
        pass


def probe_http(url: str) -> None:
    with urllib.request.urlopen(url, timeout=TIMEOUT_S) as response:  # noqa: S310
        if response.status != 200:
            raise OSError(f"{url} answered {response.status}")


class Reader:
    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def take(self, fmt: str) -> int:
        (value,) = struct.unpack_from(fmt, self.data, self.pos)
        self.pos += struct.calcsize(fmt)
        return int(value)

    def string(self) -> str | None:
        length = self.take(">h")
        if length < 0:
            return None
        value = self.data[self.pos : self.pos + length].decode()
        self.pos += length
        return value


def kafka_call(
    sock: socket.socket, api_key: int, version: int, correlation: int, body: bytes
) -> Reader:
    client_id = b"dqpulse-stack-probe"
    header = struct.pack(">hhih", api_key, version, correlation, len(client_id)) + client_id
    request = header + body
    sock.sendall(struct.pack(">i", len(request)) + request)
    size = struct.unpack(">i", recv_exact(sock, 4))[0]
    reader = Reader(recv_exact(sock, size))
    if reader.take(">i") != correlation:
        raise OSError("kafka answered with a wrong correlation id")
    return reader


def recv_exact(sock: socket.socket, size: int) -> bytes:
    chunks = bytearray()
    while len(chunks) < size:
        chunk = sock.recv(size - len(chunks))
        if not chunk:
            raise OSError("kafka closed the connection")
        chunks += chunk
    return bytes(chunks)


def probe_kafka(host: str, port: int) -> None:
    with socket.create_connection((host, port), timeout=TIMEOUT_S) as sock:
        sock.settimeout(TIMEOUT_S)
        versions = kafka_call(sock, API_VERSIONS, 0, 1, b"")
        error = versions.take(">h")
        if error:
            raise OSError(f"ApiVersions error code {error}")
        supported = {}
        for _ in range(versions.take(">i")):
            key, low, high = versions.take(">h"), versions.take(">h"), versions.take(">h")
            supported[key] = (low, high)
        low, high = supported.get(API_METADATA, (0, -1))
        usable = [v for v in METADATA_VERSIONS if low <= v <= high]
        if not usable:
            raise OSError(f"no usable Metadata version (broker offers {low}..{high})")
        # no topics (empty array), no auto-creation
        metadata = kafka_call(sock, API_METADATA, usable[-1], 2, struct.pack(">ib", 0, 0))
        metadata.take(">i")  # throttle_time_ms
        brokers = []
        for _ in range(metadata.take(">i")):
            node_id, broker_host, broker_port = (
                metadata.take(">i"),
                metadata.string(),
                metadata.take(">i"),
            )
            metadata.string()  # rack
            brokers.append((node_id, broker_host, broker_port))
        cluster_id = metadata.string()
        if not any(h == host and p == port for _, h, p in brokers):
            raise OSError(f"broker not registered yet (metadata lists {brokers})")
        print(f"cluster_id={cluster_id} brokers={len(brokers)}")


def main(argv: list[str]) -> int:
    try:
        if len(argv) == 3 and argv[0] == "tcp":
            probe_tcp(argv[1], int(argv[2]))
        elif len(argv) == 2 and argv[0] == "http":
            probe_http(argv[1])
        elif len(argv) == 3 and argv[0] == "kafka":
            probe_kafka(argv[1], int(argv[2]))
        else:
            print(__doc__, file=sys.stderr)
            return 2
    except (OSError, struct.error, UnicodeDecodeError, urllib.error.URLError) as exc:
        print(f"probe {' '.join(argv)}: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
