"""The mergeable-state protocol every metric family implements, and their registry.

A family state summarizes the records of one dataset window (for one partition, or
merged over partitions): ``zero(spec)`` is the empty state and the identity of
``merge``; ``update(batch)`` adds a ``ColumnBatch`` of records that belong to the window;
``merge(other)`` adds another partial state **in place** and returns ``self`` (use
``clone()`` to keep an operand); ``to_bytes()`` / ``from_bytes(spec, data)`` round-trip
the state exactly; ``points()`` gives the window's metric points that need no history.
Registering the same family name twice raises.
"""

from __future__ import annotations

import abc
from typing import ClassVar, TypeVar

from dqpulse.records import ColumnBatch, MetricPoint
from dqpulse.spec import DatasetSpec

S = TypeVar("S", bound="FamilyState")


class FamilyState(abc.ABC):
    """Base of one metric family's mergeable window state."""

    family: ClassVar[str]

    def __init__(self, spec: DatasetSpec) -> None:
        self.spec = spec

    @classmethod
    def zero(cls: type[S], spec: DatasetSpec) -> S:
        return cls(spec)

    @abc.abstractmethod
    def update(self, batch: ColumnBatch) -> None:
        """Add the records of ``batch`` (all of this window)."""

    @abc.abstractmethod
    def merge(self: S, other: S) -> S:
        """Add ``other`` into this state, in place; returns ``self``."""

    @abc.abstractmethod
    def to_bytes(self) -> bytes: ...

    @classmethod
    @abc.abstractmethod
    def from_bytes(cls: type[S], spec: DatasetSpec, data: bytes) -> S: ...

    @abc.abstractmethod
    def points(self) -> list[MetricPoint]:
        """Metric points of this window that need no earlier window."""

    def clone(self: S) -> S:
        return type(self).from_bytes(self.spec, self.to_bytes())


FAMILIES: dict[str, type[FamilyState]] = {}


def register_family(cls: type[S]) -> type[S]:
    """Class decorator: register a family state under its ``family`` name (once)."""
    name = cls.family
    if name in FAMILIES:
        raise ValueError(f"metric family {name!r} is already registered")
    FAMILIES[name] = cls
    return cls


def ratio(part: float, whole: float) -> float | None:
    return part / whole if whole else None
