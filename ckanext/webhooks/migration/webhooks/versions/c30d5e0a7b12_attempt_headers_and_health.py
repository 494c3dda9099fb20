"""Each attempt keeps its headers; a hook's health comes from its attempts.

- ``webhooks_attempt.request_headers`` (the headers as sent, never the
  secret) and ``response_head`` (the answer's status line and headers,
  bounded to about 8 KB, kept for active hooks only, like the body).
- ``webhooks_attempt.hook_id`` and ``succeeded``, so a hook's success rate,
  latency and last success and failure are index range scans of its own
  attempts: one partial index for the attempts that succeeded, one for
  those that did not (each attempt is written to exactly one of them).
- ``webhooks_hook.disabled_by``: who paused the hook, so a sysadmin's pause
  is not shown as the owner's.

Revision ID: c30d5e0a7b12
Revises: c27d5e0a7b10
Create Date: 2026-12-02
"""
from alembic import op
import sqlalchemy as sa

revision = "c30d5e0a7b12"
down_revision = "c27d5e0a7b10"
branch_labels = None
depends_on = None


def upgrade():
    op.add_column("webhooks_attempt", sa.Column(
        "hook_id", sa.UnicodeText, nullable=True))
    op.add_column("webhooks_attempt", sa.Column(
        "succeeded", sa.Boolean, nullable=True))
    # json, not jsonb: the headers keep the order they were sent in
    op.add_column("webhooks_attempt", sa.Column(
        "request_headers", sa.JSON, nullable=True))
    op.add_column("webhooks_attempt", sa.Column(
        "response_head", sa.JSON, nullable=True))
    op.execute("""
        UPDATE webhooks_attempt a
        SET hook_id = d.hook_id,
            succeeded = a.error IS NULL
                        AND COALESCE(a.response_status BETWEEN 200 AND 299,
                                     false)
        FROM webhooks_delivery d WHERE d.id = a.message_id
    """)
    op.alter_column("webhooks_attempt", "hook_id", nullable=False)
    op.alter_column("webhooks_attempt", "succeeded", nullable=False,
                    server_default=sa.false())
    op.create_index("ix_webhooks_attempt_hook_succeeded", "webhooks_attempt",
                    ["hook_id", "at"], postgresql_where=sa.text("succeeded"))
    op.create_index("ix_webhooks_attempt_hook_failed", "webhooks_attempt",
                    ["hook_id", "at"],
                    postgresql_where=sa.text("NOT succeeded"))
    op.add_column("webhooks_hook", sa.Column(
        "disabled_by", sa.UnicodeText, nullable=True))


def downgrade():
    op.drop_column("webhooks_hook", "disabled_by")
    op.drop_index("ix_webhooks_attempt_hook_failed",
                  table_name="webhooks_attempt")
    op.drop_index("ix_webhooks_attempt_hook_succeeded",
                  table_name="webhooks_attempt")
    for column in ("response_head", "request_headers", "succeeded",
                   "hook_id"):
        op.drop_column("webhooks_attempt", column)
