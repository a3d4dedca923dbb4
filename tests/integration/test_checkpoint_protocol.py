"""The checkpoint protocol cases of tests/unit/ingest/test_checkpoint.py on the real
Postgres: row versions, the fencing transaction and its rollback behave the same there."""

from __future__ import annotations

import pytest
from sqlalchemy import create_engine

from tests.unit.ingest.test_checkpoint import (  # noqa: F401  (collected here too)
    test_a_busy_partition_is_not_ticked_on_a_stale_end_offset,
    test_a_caught_up_idle_partition_closes_its_windows_into_partials,
    test_a_failed_write_is_written_again_by_the_next_checkpoint,
    test_a_fenced_write_writes_nothing_and_reload_takes_the_stored_state,
    test_a_partition_revoked_while_writing_is_not_updated_or_committed,
    test_a_written_checkpoint_holds_state_and_offset_and_commits_that_offset,
    test_restore_continues_from_the_stored_state_and_offset,
    test_several_datasets_on_a_topic_resume_from_the_least_advanced,
    topic,
)

pytestmark = pytest.mark.integration


@pytest.fixture
def engine(pg_url: str):
    """A real engine on the session's database (not the SAVEPOINT stand-in: fencing needs
    transactions of its own); the cases use dataset names of their own."""
    engine = create_engine(pg_url)
    yield engine
    engine.dispose()
