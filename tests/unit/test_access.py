"""Roles and teams of an API caller (pure logic; the HTTP behaviour is in the access matrix)."""

from __future__ import annotations

import pytest

from dqpulse.access import ANONYMOUS_ADMIN, Principal
from dqpulse.errors import ForbiddenError

OWNERS = {"ledger": "payments", "clicks": "growth", "orphan": None}


def test_roles_are_ordered_viewer_editor_admin():
    viewer = Principal(name="v", role="viewer", teams=frozenset({"payments"}))
    editor = Principal(name="e", role="editor", teams=frozenset({"payments"}))
    assert viewer.allows("viewer") and not viewer.allows("editor")
    assert editor.allows("editor") and not editor.allows("admin")
    assert ANONYMOUS_ADMIN.allows("admin")
    with pytest.raises(ForbiddenError, match="resolving needs the editor role; this token "
                                             "is a viewer"):
        viewer.require("editor", "resolving")


def test_a_token_sees_its_teams_and_an_admin_everything_even_ownerless():
    both = Principal(name="b", role="viewer", teams=frozenset({"payments", "growth"}))
    one = Principal(name="o", role="editor", teams=frozenset({"payments"}))
    none = Principal(name="n", role="viewer")
    assert one.visible(OWNERS) == {"ledger"}
    assert both.visible(OWNERS) == {"ledger", "clicks"}
    assert none.visible(OWNERS) == set()
    assert ANONYMOUS_ADMIN.visible(OWNERS) == set(OWNERS)
