"""The lineage graph: declared edges (dqpulse.yaml) and edges learned from OpenLineage.

OpenLineage run events (https://openlineage.io/spec) name a job with its input and output
datasets; every (input, output) pair becomes an edge ``input -> output``. A dataset
is matched to a dqpulse dataset by its Kafka topic (namespace ``kafka://...`` or none);
other datasets keep their namespace (see :mod:`dqpulse.rca.openlineage`).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from dqpulse.errors import ValidationError

Direction = Literal["upstream", "downstream"]


@dataclass(frozen=True, slots=True)
class Edge:
    source: str
    target: str
    job: str = ""
    origin: str = "declared"


@dataclass(frozen=True, slots=True)
class Reached:
    dataset: str
    depth: int
    via: tuple[str, ...]  # the path from the start, excluding the start


class LineageGraph:
    def __init__(self, edges: Iterable[Edge]) -> None:
        self.edges = list(edges)
        self._down: dict[str, list[Edge]] = {}
        self._up: dict[str, list[Edge]] = {}
        for edge in self.edges:
            self._down.setdefault(edge.source, []).append(edge)
            self._up.setdefault(edge.target, []).append(edge)

    def walk(self, start: str, direction: Direction, depth: int = 5) -> list[Reached]:
        """Datasets reachable from ``start`` (breadth first, nearest first, no cycles)."""
        if depth < 1:
            raise ValidationError("depth must be at least 1")
        neighbours = self._up if direction == "upstream" else self._down
        seen = {start}
        out: list[Reached] = []
        queue: deque[tuple[str, int, tuple[str, ...]]] = deque([(start, 0, ())])
        while queue:
            node, level, path = queue.popleft()
            if level >= depth:
                continue
            for edge in neighbours.get(node, []):
                nxt = edge.source if direction == "upstream" else edge.target
                if nxt in seen:
                    continue
                seen.add(nxt)
                reached = Reached(nxt, level + 1, (*path, nxt))
                out.append(reached)
                queue.append((nxt, level + 1, reached.via))
        return out

    def subgraph(self, nodes: Iterable[str]) -> list[Edge]:
        wanted = set(nodes)
        return [e for e in self.edges if e.source in wanted and e.target in wanted]


def edges_from_openlineage(event: Mapping[str, Any],
                           topic_to_dataset: Mapping[str, str]) -> list[Edge]:
    """Edges of one OpenLineage run event; raises ValidationError naming the bad field
    (see :func:`dqpulse.rca.openlineage.read_run_event` for the nodes and the run)."""
    # imported here: dqpulse.rca.openlineage builds on this module's Edge (a real cycle)
    from dqpulse.rca.openlineage import read_run_event

    return list(read_run_event(event, topic_to_dataset, received_at=0.0).edges)
