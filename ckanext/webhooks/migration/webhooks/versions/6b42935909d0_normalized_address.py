"""The cap on hooks per callback address counts normalized addresses.

``webhooks_hook.normalized_address`` holds ``addresses.normalized(address)``
(scheme and host case-folded, default port dropped, IP literals canonical,
query and fragment ignored), so ``HTTP://Example.com:80/x/?1`` and
``http://example.com/x`` count as one address. ``address`` stays as the user
gave it. The index on ``address`` served only the cap, so it moves to the new
column.

Revision ID: 6b42935909d0
Revises: 5a2c9d7e1f34
Create Date: 2026-12-01
"""
from alembic import op
import sqlalchemy as sa

from ckanext.webhooks.addresses import normalized

revision = "6b42935909d0"
down_revision = "5a2c9d7e1f34"
branch_labels = None
depends_on = None


def upgrade():
    op.add_column("webhooks_hook", sa.Column(
        "normalized_address", sa.UnicodeText, nullable=True))
    connection = op.get_bind()
    rows = connection.execute(sa.text(
        "SELECT id, address FROM webhooks_hook")).fetchall()
    for hook_id, address in rows:
        connection.execute(sa.text(
            "UPDATE webhooks_hook SET normalized_address = :normalized "
            "WHERE id = :id"),
            {"normalized": normalized(address), "id": hook_id})
    op.alter_column("webhooks_hook", "normalized_address", nullable=False)
    op.drop_index("ix_webhooks_hook_address", table_name="webhooks_hook")
    op.create_index("ix_webhooks_hook_normalized_address", "webhooks_hook",
                    ["normalized_address"])


def downgrade():
    op.drop_index("ix_webhooks_hook_normalized_address",
                  table_name="webhooks_hook")
    op.drop_column("webhooks_hook", "normalized_address")
    op.create_index("ix_webhooks_hook_address", "webhooks_hook", ["address"])
