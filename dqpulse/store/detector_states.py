"""Repository of detector states per (dataset, series): survives restarts, moves with work."""

from __future__ import annotations

import itertools
from collections.abc import Mapping

from sqlalchemy import Connection, bindparam, delete, func, insert, select, text, update

from dqpulse.store.tables import detector_states

# The states travel as one bytea (cut by offsets, 1-based, and sizes) rather than a bytea[]:
# an array parameter is written out element by element in Python, each state hex-escaped
# and quoted (6-7 % of a fleet worker's finalize thread), one bytea is passed as it is.
_UPDATE_STATES = text("""
UPDATE detector_states AS d
SET state = substring(CAST(:states AS bytea) FROM u.start FOR u.size), updated_at = now()
FROM unnest(CAST(:series AS text[]), CAST(:starts AS integer[]), CAST(:sizes AS integer[]))
     AS u(series, start, size)
WHERE d.dataset = :dataset AND d.series = u.series
""")


def get_all(conn: Connection, *, dataset: str) -> dict[str, bytes]:
    """The saved state of every series of ``dataset`` (a detector's ``to_bytes``)."""
    rows = conn.execute(select(detector_states.c.series, detector_states.c.state)
                        .where(detector_states.c.dataset == dataset))
    return {row.series: bytes(row.state) for row in rows}


def save_all(conn: Connection, *, dataset: str, states: Mapping[str, bytes],
             known: set[str]) -> None:
    """Upsert states; ``known`` is the set of series that already have a row.

    Postgres: one ``UPDATE ... FROM unnest(...)`` for the updates (the states as one
    bytea); else an executemany; then one executemany for the inserts.
    """
    updates = {s: b for s, b in states.items() if s in known}
    inserts = [{"dataset": dataset, "series": s, "state": b}
               for s, b in states.items() if s not in known]
    if updates and conn.dialect.name == "postgresql":
        sizes = [len(b) for b in updates.values()]
        conn.execute(_UPDATE_STATES, {"dataset": dataset, "series": list(updates),
                                      "states": b"".join(updates.values()),
                                      "starts": list(itertools.accumulate(sizes[:-1],
                                                                          initial=1)),
                                      "sizes": sizes})
    elif updates:
        conn.execute(update(detector_states).where(
            detector_states.c.dataset == dataset,
            detector_states.c.series == bindparam("b_series"))
            .values(state=bindparam("b_state"), updated_at=func.now()),
            [{"b_series": s, "b_state": b} for s, b in updates.items()])
    if inserts:
        conn.execute(insert(detector_states), inserts)


def delete_all(conn: Connection, *, dataset: str) -> None:
    conn.execute(delete(detector_states).where(detector_states.c.dataset == dataset))
