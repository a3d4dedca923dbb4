"""Who is asking and what they may do: roles and teams of an API caller.

A team is a dataset ``owner`` value. A caller with teams sees and acts on the datasets
those teams own (and their incidents, silences and lineage); an admin sees everything.
The role says which actions are allowed: viewer reads, editor also writes (acknowledge,
resolve, feedback, silences, lineage), admin also manages tokens.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from dqpulse.errors import ForbiddenError

Role = Literal["viewer", "editor", "admin"]
ROLES: tuple[Role, ...] = ("viewer", "editor", "admin")


@dataclass(frozen=True, slots=True)
class Principal:
    """An authenticated caller: ``name`` is the identity written to the audit log.

    >>> p = Principal(name="ci", role="editor", teams=frozenset({"payments"}))
    >>> p.sees_team("payments"), p.sees_team("growth"), p.sees_team(None)
    (True, False, False)
    >>> p.allows("viewer"), p.allows("admin")
    (True, False)
    """

    name: str
    role: Role
    teams: frozenset[str] = frozenset()
    token_id: int | None = None

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"

    def allows(self, role: Role) -> bool:
        return ROLES.index(self.role) >= ROLES.index(role)

    def require(self, role: Role, action: str) -> None:
        if not self.allows(role):
            raise ForbiddenError(f"{action} needs the {role} role; this token is a {self.role}")

    def sees_team(self, owner: str | None) -> bool:
        """An admin sees every team; others see their teams (an ownerless object: admins)."""
        return self.is_admin or (owner is not None and owner in self.teams)

    def visible(self, owners: dict[str, str | None]) -> set[str]:
        """The names among ``{name: owner}`` this caller may see."""
        return {name for name, owner in owners.items() if self.sees_team(owner)}


ANONYMOUS_ADMIN = Principal(name="anonymous", role="admin")
