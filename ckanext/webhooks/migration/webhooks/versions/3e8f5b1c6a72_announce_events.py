"""Announce each new event: its groups are looked up and the workers notified.

Also leaves free space in the pages of ``webhooks_delivery`` (fillfactor 70),
so claiming a message updates it in place without index writes.

A trigger on ``webhooks_event`` fills ``group_ids`` (the dataset's groups
when the event happened) and notifies the ``webhooks_event`` channel with the
event id. PostgreSQL delivers the notification when the transaction commits,
and drops it if it rolls back; the workers' dispatcher listens. Doing this in
the database keeps CKAN's requests to one plain ``INSERT`` whose plan
PostgreSQL caches.

Revision ID: 3e8f5b1c6a72
Revises: 7d1c2a9e4b10
Create Date: 2026-11-30
"""
from alembic import op

revision = "3e8f5b1c6a72"
down_revision = "7d1c2a9e4b10"
branch_labels = None
depends_on = None


def upgrade():
    # room in each page for the claim's update of a message (attempts,
    # lease) to stay on the page without touching the indexes (HOT)
    op.execute("ALTER TABLE webhooks_delivery SET (fillfactor = 70)")
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
    op.execute("DROP TRIGGER IF EXISTS webhooks_event_added ON webhooks_event")
    # EXECUTE PROCEDURE: also understood by PostgreSQL 10
    op.execute("""
        CREATE TRIGGER webhooks_event_added
        BEFORE INSERT ON webhooks_event
        FOR EACH ROW EXECUTE PROCEDURE webhooks_event_added()
    """)


def downgrade():
    op.execute("ALTER TABLE webhooks_delivery RESET (fillfactor)")
    op.execute("DROP TRIGGER IF EXISTS webhooks_event_added ON webhooks_event")
    op.execute("DROP FUNCTION IF EXISTS webhooks_event_added()")
