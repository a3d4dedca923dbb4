"""Which notification channels an incident goes to (``notifications[].match`` in dqpulse.yaml).

A channel matches when every key of its ``match`` matches; a key left out matches
anything. ``owner`` and ``dataset`` take one value or a list, and ``dataset`` values may be
shell-style patterns (``orders*``); ``severity`` and ``kind`` take lists.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from fnmatch import fnmatchcase
from typing import Any

from dqpulse.spec import MatchSpec, NotificationSpec


def _as_list(value: str | list[str] | None) -> list[str] | None:
    if value is None:
        return None
    return [value] if isinstance(value, str) else list(value)


def matches(match: MatchSpec, *, dataset: str, owner: str | None, severity: str,
            kind: str) -> bool:
    """Whether an incident with these attributes satisfies ``match``.

    >>> from dqpulse.spec import MatchSpec
    >>> m = MatchSpec(owner="payments", severity=["critical"])
    >>> matches(m, dataset="orders", owner="payments", severity="critical", kind="volume")
    True
    >>> matches(m, dataset="orders", owner="payments", severity="info", kind="volume")
    False
    """
    owners = _as_list(match.owner)
    if owners is not None and owner not in owners:
        return False
    datasets = _as_list(match.dataset)
    if datasets is not None and not any(fnmatchcase(dataset, p) for p in datasets):
        return False
    if match.severity is not None and severity not in match.severity:
        return False
    return match.kind is None or kind in match.kind


def route(channels: Iterable[NotificationSpec], *, dataset: str, owner: str | None,
          severity: str, kind: str) -> list[NotificationSpec]:
    """The channels whose match an incident satisfies, in configuration order."""
    return [c for c in channels
            if matches(c.match, dataset=dataset, owner=owner, severity=severity, kind=kind)]


def channels_for_incident(notifications: Sequence[NotificationSpec],
                          row: Mapping[str, Any]) -> list[str]:
    """Names of the channels whose ``match`` the incident satisfies (for any of its kinds)."""
    kinds = (row.get("details") or {}).get("kinds") or [row["kind"]]
    names: list[str] = []
    for kind in kinds:
        for channel in route(notifications, dataset=row["dataset"], owner=row.get("owner"),
                             severity=row["severity"], kind=kind):
            if channel.name not in names:
                names.append(channel.name)
    return names


def silence_for(silences: Sequence[Mapping[str, Any]], kinds: Iterable[str]) -> int | None:
    """Id of a silence covering every one of ``kinds`` (None if some kind is not covered)."""
    chosen: int | None = None
    for kind in kinds:
        match = next((s for s in silences if s["kind"] in (None, kind)), None)
        if match is None:
            return None
        chosen = chosen or int(match["id"])
    return chosen
