"""Hooks with many topics, a description, pausing, a circuit breaker and
challenge limits; an attempt log; organization and group events; ``changes``.

- ``webhooks_hook.topic`` becomes ``topics`` (an array, matched with ``&&``
  through a GIN index on the unfiltered hooks).
- ``webhooks_hook.verified``: when the hook answered its challenge (null while
  it never did), so a hook enabled again knows whether it is ``pending``.
- ``consecutive_failures`` and ``circuit_until``: a receiver that keeps
  failing waits for its retry slot instead of taking sending capacity.
- ``challenges_sent`` and ``last_challenge``: the challenge is sent at most
  three times, and at most once every ten minutes on request.
- ``last_recover``: ``webhook_recover`` is rate-limited per hook.
- ``webhooks_delivery.test``: a test delivery (``"test": true`` in its body).
- ``webhooks_attempt``: every attempt of a message (time, duration, status,
  error, the start of the response body).
- ``webhooks_event.package_id`` may be null (organization and group events),
  and ``changes`` holds the previous values of what an update altered.

Revision ID: 5a2c9d7e1f34
Revises: 3e8f5b1c6a72
Create Date: 2026-12-01
"""
from alembic import op
import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import JSONB, ARRAY

revision = "5a2c9d7e1f34"
down_revision = "3e8f5b1c6a72"
branch_labels = None
depends_on = None

_UNFILTERED = ("filter_dataset IS NULL AND filter_organization IS NULL AND "
               "filter_group IS NULL AND filter_resource IS NULL")


def upgrade():
    op.add_column("webhooks_hook", sa.Column(
        "topics", ARRAY(sa.UnicodeText), nullable=True))
    op.execute("UPDATE webhooks_hook SET topics = ARRAY[topic]")
    op.alter_column("webhooks_hook", "topics", nullable=False)
    op.drop_index("ix_webhooks_hook_unfiltered", table_name="webhooks_hook")
    op.drop_column("webhooks_hook", "topic")
    op.create_index(
        "ix_webhooks_hook_unfiltered_topics", "webhooks_hook", ["topics"],
        postgresql_using="gin", postgresql_where=sa.text(_UNFILTERED))
    op.add_column("webhooks_hook", sa.Column(
        "description", sa.UnicodeText, nullable=True))
    op.add_column("webhooks_hook", sa.Column(
        "verified", sa.DateTime, nullable=True))
    op.execute("UPDATE webhooks_hook SET verified = created "
               "WHERE status <> 'pending'")
    op.add_column("webhooks_hook", sa.Column(
        "consecutive_failures", sa.Integer, nullable=False,
        server_default="0"))
    op.add_column("webhooks_hook", sa.Column(
        "circuit_until", sa.DateTime, nullable=True))
    op.add_column("webhooks_hook", sa.Column(
        "challenges_sent", sa.Integer, nullable=False, server_default="0"))
    op.add_column("webhooks_hook", sa.Column(
        "last_challenge", sa.DateTime, nullable=True))
    op.add_column("webhooks_hook", sa.Column(
        "last_recover", sa.DateTime, nullable=True))

    op.add_column("webhooks_delivery", sa.Column(
        "test", sa.Boolean, nullable=False, server_default=sa.false()))

    op.create_table(
        "webhooks_attempt",
        sa.Column("id", sa.BigInteger, primary_key=True, autoincrement=True),
        sa.Column("message_id", sa.UnicodeText,
                  sa.ForeignKey("webhooks_delivery.id", ondelete="CASCADE"),
                  nullable=False),
        sa.Column("at", sa.DateTime, nullable=False),
        sa.Column("duration_ms", sa.Integer, nullable=True),
        sa.Column("response_status", sa.Integer, nullable=True),
        sa.Column("error", sa.UnicodeText, nullable=True),
        sa.Column("response_body", sa.UnicodeText, nullable=True),
    )
    op.create_index("ix_webhooks_attempt_message", "webhooks_attempt",
                    ["message_id", "id"])

    op.alter_column("webhooks_event", "package_id", nullable=True)
    op.add_column("webhooks_event", sa.Column("changes", JSONB,
                                              nullable=True))
    # organization and group events bring their own group_ids
    op.execute("""
        CREATE OR REPLACE FUNCTION webhooks_event_added() RETURNS trigger
        LANGUAGE plpgsql AS $$
        BEGIN
            IF NEW.package_id IS NOT NULL THEN
                NEW.group_ids := ARRAY(
                    SELECT m.group_id FROM member m
                    JOIN "group" g ON g.id = m.group_id
                    WHERE m.table_name = 'package' AND m.state = 'active'
                      AND NOT g.is_organization
                      AND m.table_id = NEW.package_id
                    ORDER BY m.group_id);
            END IF;
            PERFORM pg_notify('webhooks_event', NEW.id);
            RETURN NEW;
        END
        $$
    """)


def downgrade():
    op.execute("""
        CREATE OR REPLACE FUNCTION webhooks_event_added() RETURNS trigger
        LANGUAGE plpgsql AS $$
        BEGIN
            NEW.group_ids := ARRAY(
                SELECT m.group_id FROM member m
                JOIN "group" g ON g.id = m.group_id
                WHERE m.table_name = 'package' AND m.state = 'active'
                  AND NOT g.is_organization
                  AND m.table_id = NEW.package_id
                ORDER BY m.group_id);
            PERFORM pg_notify('webhooks_event', NEW.id);
            RETURN NEW;
        END
        $$
    """)
    op.execute("DELETE FROM webhooks_event WHERE package_id IS NULL")
    op.drop_column("webhooks_event", "changes")
    op.alter_column("webhooks_event", "package_id", nullable=False)
    op.drop_table("webhooks_attempt")
    op.drop_column("webhooks_delivery", "test")
    for column in ("last_recover", "last_challenge", "challenges_sent",
                   "circuit_until", "consecutive_failures", "verified",
                   "description"):
        op.drop_column("webhooks_hook", column)
    op.drop_index("ix_webhooks_hook_unfiltered_topics",
                  table_name="webhooks_hook")
    op.add_column("webhooks_hook", sa.Column("topic", sa.UnicodeText,
                                             nullable=True))
    op.execute("UPDATE webhooks_hook SET topic = topics[1]")
    op.alter_column("webhooks_hook", "topic", nullable=False)
    op.drop_column("webhooks_hook", "topics")
    op.create_index(
        "ix_webhooks_hook_unfiltered", "webhooks_hook", ["topic"],
        postgresql_where=sa.text(_UNFILTERED))
