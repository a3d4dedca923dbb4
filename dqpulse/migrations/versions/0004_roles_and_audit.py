"""api_tokens get a role, teams, expiry and revocation; audit_log records every API write

Existing tokens could do anything: a token with an ``owner`` becomes an editor of that
team, a token without one an admin (the only role that keeps what it could do).

Revision ID: 0004
Revises: 0003
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("api_tokens", schema=None) as batch_op:
        batch_op.add_column(sa.Column("role", sa.String(length=20), server_default="viewer",
                                      nullable=False))
        batch_op.add_column(sa.Column("teams", sa.JSON(), server_default="[]", nullable=False))
        batch_op.add_column(sa.Column("expires_at", sa.DateTime(timezone=True)))
        batch_op.add_column(sa.Column("revoked_at", sa.DateTime(timezone=True)))
        batch_op.add_column(sa.Column("created_by", sa.String(length=200), server_default="cli",
                                      nullable=False))
    tokens = sa.table("api_tokens", sa.column("id", sa.BigInteger), sa.column("owner", sa.String),
                      sa.column("role", sa.String), sa.column("teams", sa.JSON))
    conn = op.get_bind()
    for token_id, owner in conn.execute(sa.select(tokens.c.id, tokens.c.owner)).all():
        conn.execute(sa.update(tokens).where(tokens.c.id == token_id).values(
            role="editor" if owner else "admin", teams=[owner] if owner else []))
    op.create_table(
        "audit_log",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), autoincrement=True,
                  nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
        sa.Column("actor", sa.String(length=200), nullable=False),
        sa.Column("token_id", sa.BigInteger()),
        sa.Column("role", sa.String(length=20), nullable=False),
        sa.Column("action", sa.String(length=60), nullable=False),
        sa.Column("target", sa.String(length=300), nullable=False),
        sa.Column("team", sa.String(length=200)),
        sa.Column("detail", sa.JSON()),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_audit_log")),
    )
    op.create_index("ix_audit_log_team", "audit_log", ["team", "id"])


def downgrade() -> None:
    op.drop_index("ix_audit_log_team", table_name="audit_log")
    op.drop_table("audit_log")
    with op.batch_alter_table("api_tokens", schema=None) as batch_op:
        for column in ("created_by", "revoked_at", "expires_at", "teams", "role"):
            batch_op.drop_column(column)
