"""Create the webhooks tables: hooks, events and deliveries.

Revision ID: 7d1c2a9e4b10
Revises:
Create Date: 2026-11-29
"""
from alembic import op
import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import JSONB, ARRAY

revision = "7d1c2a9e4b10"
down_revision = None
branch_labels = None
depends_on = None


def upgrade():
    op.create_table(
        "webhooks_hook",
        sa.Column("id", sa.UnicodeText, primary_key=True),
        sa.Column("topic", sa.UnicodeText, nullable=False),
        sa.Column("address", sa.UnicodeText, nullable=False),
        sa.Column("owner_id", sa.UnicodeText, nullable=True),
        sa.Column("secret", sa.UnicodeText, nullable=False),
        sa.Column("previous_secret", sa.UnicodeText, nullable=True),
        sa.Column("previous_secret_expires", sa.DateTime, nullable=True),
        sa.Column("status", sa.UnicodeText, nullable=False),
        sa.Column("status_reason", sa.UnicodeText, nullable=True),
        sa.Column("filter_dataset", sa.UnicodeText, nullable=True),
        sa.Column("filter_organization", sa.UnicodeText, nullable=True),
        sa.Column("filter_group", sa.UnicodeText, nullable=True),
        sa.Column("filter_resource", sa.UnicodeText, nullable=True),
        sa.Column("created", sa.DateTime, nullable=False),
        sa.Column("client_errors", sa.Integer, nullable=False,
                  server_default="0"),
        sa.Column("last_success", sa.DateTime, nullable=True),
        sa.Column("failing_since", sa.DateTime, nullable=True),
    )
    # matching: each branch of the candidate query has its own index, so
    # finding the hooks of one event does not grow with unrelated hooks
    op.create_index(
        "ix_webhooks_hook_unfiltered", "webhooks_hook", ["topic"],
        postgresql_where=sa.text(
            "filter_dataset IS NULL AND filter_organization IS NULL AND "
            "filter_group IS NULL AND filter_resource IS NULL"))
    for name in ("dataset", "organization", "group", "resource"):
        op.create_index(
            "ix_webhooks_hook_filter_" + name, "webhooks_hook",
            ["filter_" + name],
            postgresql_where=sa.text("filter_{} IS NOT NULL".format(name)))
    op.create_index("ix_webhooks_hook_owner", "webhooks_hook", ["owner_id"])
    op.create_index("ix_webhooks_hook_address", "webhooks_hook", ["address"])

    op.create_table(
        "webhooks_event",
        sa.Column("id", sa.UnicodeText, primary_key=True),
        sa.Column("topic", sa.UnicodeText, nullable=False),
        sa.Column("entity_id", sa.UnicodeText, nullable=False),
        sa.Column("package_id", sa.UnicodeText, nullable=False),
        sa.Column("organization_id", sa.UnicodeText, nullable=True),
        sa.Column("group_ids", ARRAY(sa.UnicodeText), nullable=False,
                  server_default="{}"),
        sa.Column("restricted", sa.Boolean, nullable=False,
                  server_default=sa.false()),
        sa.Column("snapshot", JSONB, nullable=False, server_default="{}"),
        sa.Column("created", sa.DateTime, nullable=False),
        sa.Column("fanned_out", sa.DateTime, nullable=True),
    )
    # the sweep looks for events whose fan-out job never ran
    op.create_index("ix_webhooks_event_unfanned", "webhooks_event",
                    ["created"],
                    postgresql_where=sa.text("fanned_out IS NULL"))
    op.create_index("ix_webhooks_event_created", "webhooks_event",
                    ["created"])

    op.create_table(
        "webhooks_delivery",
        sa.Column("id", sa.UnicodeText, primary_key=True),
        sa.Column("hook_id", sa.UnicodeText,
                  sa.ForeignKey("webhooks_hook.id", ondelete="CASCADE"),
                  nullable=False),
        sa.Column("event_id", sa.UnicodeText, nullable=True),
        sa.Column("type", sa.UnicodeText, nullable=False),
        sa.Column("data", JSONB, nullable=True),
        sa.Column("body", sa.UnicodeText, nullable=True),
        sa.Column("status", sa.UnicodeText, nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False,
                  server_default="0"),
        sa.Column("response_status", sa.Integer, nullable=True),
        sa.Column("error", sa.UnicodeText, nullable=True),
        sa.Column("duration_ms", sa.Integer, nullable=True),
        sa.Column("created", sa.DateTime, nullable=False),
        sa.Column("last_attempt", sa.DateTime, nullable=True),
        sa.Column("next_attempt", sa.DateTime, nullable=True),
        sa.Column("lease_until", sa.DateTime, nullable=True),
        sa.UniqueConstraint("event_id", "hook_id",
                            name="uq_webhooks_delivery_event_hook"),
    )
    op.create_index("ix_webhooks_delivery_hook_created", "webhooks_delivery",
                    ["hook_id", "created"])
    op.create_index("ix_webhooks_delivery_pending", "webhooks_delivery",
                    ["next_attempt"],
                    postgresql_where=sa.text("status = 'pending'"))
    op.create_index("ix_webhooks_delivery_created", "webhooks_delivery",
                    ["created"])


def downgrade():
    op.drop_table("webhooks_delivery")
    op.drop_table("webhooks_event")
    op.drop_table("webhooks_hook")
