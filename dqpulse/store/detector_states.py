"""Repository of detector states per (dataset, series): survives restarts, moves with work."""

from __future__ import annotations

from collections.abc import Mapping

from sqlalchemy import Connection, delete, func, insert, select, update

from dqpulse.store.tables import detector_states


def get_all(conn: Connection, *, dataset: str) -> dict[str, tuple[str, bytes]]:
    rows = conn.execute(select(detector_states.c.series, detector_states.c.detector,
                               detector_states.c.state)
                        .where(detector_states.c.dataset == dataset))
    return {row.series: (row.detector, bytes(row.state)) for row in rows}


def save_all(conn: Connection, *, dataset: str, states: Mapping[str, tuple[str, bytes]],
             known: set[str]) -> None:
    """Upsert states; ``known`` is the set of series that already have a row."""
    for series, (detector, blob) in states.items():
        if series in known:
            conn.execute(update(detector_states).where(
                detector_states.c.dataset == dataset, detector_states.c.series == series)
                .values(detector=detector, state=blob, updated_at=func.now()))
        else:
            conn.execute(insert(detector_states).values(
                dataset=dataset, series=series, detector=detector, state=blob))


def delete_all(conn: Connection, *, dataset: str) -> None:
    conn.execute(delete(detector_states).where(detector_states.c.dataset == dataset))
