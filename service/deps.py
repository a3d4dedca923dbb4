"""Dependencies shared by the routers (``Annotated`` aliases, as in the FastAPI template)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated, Any

from fastapi import Depends, Request
from sqlalchemy import Connection, Engine

from dqpulse.access import Principal
from dqpulse.config import Settings
from dqpulse.errors import NotFoundError
from dqpulse.store import datasets as dataset_store
from dqpulse.store import incidents as incident_store
from dqpulse.telemetry import Telemetry
from service.auth import PrincipalDep


# async: they only read app.state, so none of them needs a trip to the threadpool (each
# trip costs more than the dependency, and a request would make several)
async def get_engine(request: Request) -> Engine:
    engine: Engine = request.app.state.engine
    return engine


async def get_settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


async def get_telemetry(request: Request) -> Telemetry:
    telemetry: Telemetry = request.app.state.telemetry
    return telemetry


def get_conn(engine: Annotated[Engine, Depends(get_engine)]) -> Iterator[Connection]:
    """One transaction per request: committed when the handler returns without error."""
    with engine.begin() as conn:
        yield conn


EngineDep = Annotated[Engine, Depends(get_engine)]
SettingsDep = Annotated[Settings, Depends(get_settings)]
TelemetryDep = Annotated[Telemetry, Depends(get_telemetry)]
# scope="function": the transaction commits when the handler returns, before the response
# is sent, so a client that reads right after a write sees it (the default, "request",
# would commit only after the response has gone out)
ConnDep = Annotated[Connection, Depends(get_conn, scope="function")]


class Scope:
    """What the caller may see: its teams' datasets (an admin: all), and objects through them.

    Another team's object answers 404, exactly like a missing one, so names do not leak.
    """

    def __init__(self, principal: Principal, conn: Connection) -> None:
        self.principal = principal
        self.conn = conn
        self._owners: dict[str, str | None] | None = None

    @property
    def owners(self) -> dict[str, str | None]:
        if self._owners is None:
            self._owners = dataset_store.get_owners(self.conn)
        return self._owners

    def datasets(self) -> set[str] | None:
        """The visible dataset names; None for an admin (everything, known or not)."""
        return None if self.principal.is_admin else self.principal.visible(self.owners)

    def sees(self, dataset: str) -> bool:
        return self.principal.is_admin or (
            dataset in self.owners and self.principal.sees_team(self.owners[dataset]))

    def team_of(self, dataset: str | None) -> str | None:
        return None if dataset is None else self.owners.get(dataset)

    def dataset(self, name: str) -> None:
        """404 unless the dataset exists and the caller sees it."""
        if not self.sees(name) or name not in self.owners:
            raise NotFoundError(f"dataset {name!r} does not exist")

    def incident(self, incident_id: int) -> dict[str, Any]:
        """The incident, if the caller sees its dataset (to act on it); else 404."""
        row = incident_store.get(self.conn, incident_id=incident_id)
        if row is None or not self.sees(str(row["dataset"])):
            raise NotFoundError(f"incident {incident_id} does not exist")
        return row

    def incident_to_read(self, incident_id: int) -> dict[str, Any]:
        """The incident, if the caller sees its dataset or a dataset it impacts (an
        upstream break that hits the caller's data is the caller's to read); else 404."""
        row = incident_store.get(self.conn, incident_id=incident_id)
        if row is not None and not self.sees(str(row["dataset"])) and not any(
                self.sees(name) for name in incident_store.get_impacted(
                    self.conn, incident_id=incident_id)):
            row = None
        if row is None:
            raise NotFoundError(f"incident {incident_id} does not exist")
        return row


async def get_scope(principal: PrincipalDep, conn: ConnDep) -> Scope:
    # async (no I/O here: the owners are read on first use, in the handler's thread), as
    # are the trivial dependencies above: a plain ``def`` costs a trip to the threadpool
    return Scope(principal, conn)


ScopeDep = Annotated[Scope, Depends(get_scope)]
