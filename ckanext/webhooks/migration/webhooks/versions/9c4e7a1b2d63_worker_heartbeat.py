"""Each worker's engine says it is alive: ``webhooks_worker``.

One row per running ``ckan webhooks worker``, written by its engine every few
seconds (``pipeline.heartbeat``), so ``ckan webhooks status`` can tell which
workers are alive, which listen for events, and when the last sweep ran,
without Redis.

Revision ID: 9c4e7a1b2d63
Revises: 6b42935909d0
Create Date: 2026-12-01
"""
from alembic import op
import sqlalchemy as sa

revision = "9c4e7a1b2d63"
down_revision = "6b42935909d0"
branch_labels = None
depends_on = None


def upgrade():
    op.create_table(
        "webhooks_worker",
        sa.Column("id", sa.UnicodeText, primary_key=True),
        sa.Column("hostname", sa.UnicodeText, nullable=False),
        sa.Column("pid", sa.Integer, nullable=False),
        sa.Column("started", sa.DateTime, nullable=False),
        sa.Column("last_seen", sa.DateTime, nullable=False),
        sa.Column("listening", sa.Boolean, nullable=False,
                  server_default=sa.false()),
        sa.Column("in_flight", sa.Integer, nullable=False,
                  server_default="0"),
        sa.Column("last_sweep", sa.DateTime, nullable=True),
    )


def downgrade():
    op.drop_table("webhooks_worker")
