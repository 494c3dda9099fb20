"""People and workers at the same time: claims, requests, retiring secrets.

- ``webhooks_delivery.lease_id``: the claim that holds a message. Recording
  an outcome, renewing and giving back touch a message only while its
  claim still holds it, so a worker whose lease lapsed (and whose message
  another worker claimed since) cannot overwrite the newer attempt.
- ``webhooks_delivery.redeliveries``: how often a person asked for the
  message again (redeliver, recover). A request that came while an attempt
  was in flight wins over that attempt's outcome: the message stays due.
- ``webhooks_secret``: the secrets a hook retired, each signing beside the
  current one until it expires (a secret is a row with its time, so every
  rotation keeps its own 24 hours). Replaces ``previous_secret`` and
  ``previous_secret_expires``.

Revision ID: c27d5e0a7b10
Revises: 9c4e7a1b2d63
Create Date: 2026-12-07
"""
from alembic import op
import sqlalchemy as sa

revision = "c27d5e0a7b10"
down_revision = "9c4e7a1b2d63"
branch_labels = None
depends_on = None


def upgrade():
    op.add_column("webhooks_delivery",
                  sa.Column("lease_id", sa.UnicodeText, nullable=True))
    op.add_column("webhooks_delivery",
                  sa.Column("redeliveries", sa.Integer, nullable=False,
                            server_default="0"))
    op.create_table(
        "webhooks_secret",
        sa.Column("id", sa.BigInteger, primary_key=True, autoincrement=True),
        sa.Column("hook_id", sa.UnicodeText,
                  sa.ForeignKey("webhooks_hook.id", ondelete="CASCADE"),
                  nullable=False),
        sa.Column("secret", sa.UnicodeText, nullable=False),
        sa.Column("retired", sa.DateTime, nullable=False),
        sa.Column("expires", sa.DateTime, nullable=False),
    )
    op.create_index("webhooks_secret_hook_id", "webhooks_secret",
                    ["hook_id", "expires"])
    op.execute("""
        INSERT INTO webhooks_secret (hook_id, secret, retired, expires)
        SELECT id, previous_secret,
               previous_secret_expires - interval '24 hours',
               previous_secret_expires
        FROM webhooks_hook
        WHERE previous_secret IS NOT NULL
          AND previous_secret_expires IS NOT NULL
    """)
    op.drop_column("webhooks_hook", "previous_secret")
    op.drop_column("webhooks_hook", "previous_secret_expires")


def downgrade():
    op.add_column("webhooks_hook",
                  sa.Column("previous_secret", sa.UnicodeText, nullable=True))
    op.add_column("webhooks_hook",
                  sa.Column("previous_secret_expires", sa.DateTime,
                            nullable=True))
    op.execute("""
        UPDATE webhooks_hook h
        SET previous_secret = s.secret, previous_secret_expires = s.expires
        FROM (SELECT DISTINCT ON (hook_id) hook_id, secret, expires
              FROM webhooks_secret ORDER BY hook_id, expires DESC) s
        WHERE h.id = s.hook_id
    """)
    op.drop_table("webhooks_secret")
    op.drop_column("webhooks_delivery", "redeliveries")
    op.drop_column("webhooks_delivery", "lease_id")
