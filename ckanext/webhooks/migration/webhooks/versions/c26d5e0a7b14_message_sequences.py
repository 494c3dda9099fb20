"""Messages know their sequence: one hook's messages about one dataset.

``webhooks_delivery.sequence`` is the dataset (or organization, group) a
message of an event is about. Messages of one hook and one sequence go out
one after another in every worker, and a claim skips a message while an
older one of its sequence is held by another claim: several workers can
share one hook's backlog without sending its messages about one dataset
out of order.

Revision ID: c26d5e0a7b14
Revises: c30d5e0a7b12
Create Date: 2026-12-07
"""
from alembic import op
import sqlalchemy as sa

revision = "c26d5e0a7b14"
down_revision = "c30d5e0a7b12"
branch_labels = None
depends_on = None


def upgrade():
    op.add_column("webhooks_delivery",
                  sa.Column("sequence", sa.UnicodeText, nullable=True))
    op.execute("""
        UPDATE webhooks_delivery d
        SET sequence = COALESCE(e.package_id, e.entity_id)
        FROM webhooks_event e
        WHERE d.event_id = e.id AND d.status = 'pending'
    """)
    op.create_index(
        "ix_webhooks_delivery_pending_sequence", "webhooks_delivery",
        ["hook_id", "sequence", "created"],
        postgresql_where=sa.text("status = 'pending'"))


def downgrade():
    op.drop_index("ix_webhooks_delivery_pending_sequence",
                  table_name="webhooks_delivery")
    op.drop_column("webhooks_delivery", "sequence")
