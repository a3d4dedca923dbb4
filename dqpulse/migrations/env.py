"""Alembic environment: targets dqpulse.store metadata; URL from the config or DQPULSE_*."""

from __future__ import annotations

from alembic import context

from dqpulse.config import Settings
from dqpulse.store.db import make_engine
from dqpulse.store.partitions import is_partition_name
from dqpulse.store.tables import metadata

config = context.config
url = config.get_main_option("sqlalchemy.url") or Settings().database_url


def include_name(name: str | None, type_: str, _parents: object) -> bool:
    """Autogenerate compares the tables of the metadata: the partitions of metric_points
    (made by migration 0005 and the retention job) are not among them."""
    return not (type_ == "table" and name is not None and is_partition_name(name))


def run_migrations_offline() -> None:
    context.configure(url=url, target_metadata=metadata, literal_binds=True,
                      include_name=include_name, render_as_batch=url.startswith("sqlite"))
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    engine = make_engine(url)
    with engine.connect() as connection:
        context.configure(connection=connection, target_metadata=metadata,
                          include_name=include_name,
                          render_as_batch=connection.dialect.name == "sqlite")
        with context.begin_transaction():
            context.run_migrations()
    engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
