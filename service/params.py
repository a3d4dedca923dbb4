"""Bounded, validated request parameters shared by the routers (the documented contract).

Every path id fits a signed 64-bit column, every name has the shape the model allows,
every time is finite and within datetime's range: a request outside these bounds is a 422
naming the parameter, never a server error.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import Path, Query
from pydantic import AwareDatetime, BeforeValidator, Field

MAX_ID = 2**63 - 1
MAX_EPOCH_S = 253_402_300_799.0  # 9999-12-31T23:59:59Z, the last second datetime holds
MIN_EPOCH_S = -62_135_596_800.0  # 0001-01-01T00:00:00Z
# free text reaching the database: no NUL (Postgres text cannot hold it)
NO_NUL = r"^[^\x00]*$"

DatasetName = Annotated[str, Path(pattern=r"^[a-z0-9_.-]+$", max_length=200,
                                  description="dataset name")]
IdPath = Annotated[int, Path(ge=1, le=MAX_ID)]
EpochSeconds = Annotated[float, Field(ge=0, le=MAX_EPOCH_S)]


def _not_a_number(value: object) -> object:
    """A number is epoch seconds (bounded above), never read as a datetime a second time."""
    if isinstance(value, int | float) or (isinstance(value, str) and _is_number(value)):
        raise ValueError("a number here is epoch seconds")
    return value


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


# a date-time with a timezone, as the schema says: never a number (pydantic would read one
# as epoch seconds, which the schema does not allow)
IsoTime = Annotated[AwareDatetime, BeforeValidator(_not_a_number)]
TimeValue = EpochSeconds | IsoTime
TimeQuery = Annotated[TimeValue | None, Query(
    description="Epoch seconds or ISO-8601 with a timezone (e.g. 2026-11-28T00:00:00Z)")]


def epoch(value: TimeValue | None) -> float | None:
    """Epoch seconds, kept within what ``datetime`` can hold (an ISO time near year 1 or
    9999 with an offset can fall just outside)."""
    if value is None:
        return None
    seconds = value.timestamp() if isinstance(value, datetime) else float(value)
    return min(max(seconds, MIN_EPOCH_S), MAX_EPOCH_S)
