"""An event becomes one pending message for each hook that matches it.

Candidates come from one indexed lookup per way a hook can match (no filter,
or a filter naming this event's dataset, organization, group or resource);
the full rule then applies to the candidates only, without going back to the
table, so the cost follows the matching hooks, not all hooks.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, cast

import sqlalchemy as sa

import ckan.model as model

from ckanext.webhooks.model import Event, utcnow

if TYPE_CHECKING:
    from sqlalchemy.engine import CursorResult

_CANDIDATE_COLUMNS = """id, owner_id, topics, status, created, circuit_until,
               filter_dataset, filter_organization, filter_group,
               filter_resource"""
# A hook whose circuit is open (its receiver keeps failing) gets its new
# messages due when the circuit closes, not now.
_MATCHING_INSERT = sa.text("""
    WITH candidate AS (
        SELECT {cols} FROM webhooks_hook
        WHERE topics && ARRAY[:topic, :wildcard]
          AND filter_dataset IS NULL AND filter_organization IS NULL
          AND filter_group IS NULL AND filter_resource IS NULL
        UNION SELECT {cols} FROM webhooks_hook
        WHERE filter_dataset = :package_id
        UNION SELECT {cols} FROM webhooks_hook
        WHERE filter_organization = :organization_id
        UNION SELECT {cols} FROM webhooks_hook
        WHERE filter_group = ANY(:group_ids)
        UNION SELECT {cols} FROM webhooks_hook
        WHERE filter_resource = :resource_id
    )
    INSERT INTO webhooks_delivery
        (id, hook_id, event_id, type, status, attempts, created, next_attempt,
         test, sequence)
    SELECT 'msg_' || md5(random()::text || clock_timestamp()::text || h.id),
           h.id, :event_id, :topic, 'pending', 0, :now,
           GREATEST(CAST(:now AS timestamp), h.circuit_until), false,
           :sequence
    FROM candidate h
    WHERE h.status = 'active'
      AND h.created <= :event_created
      AND h.topics && ARRAY[:topic, :wildcard]
      AND (h.filter_dataset IS NULL OR h.filter_dataset = :package_id)
      AND (h.filter_organization IS NULL
           OR h.filter_organization = :organization_id)
      AND (h.filter_group IS NULL
           OR (:group_filter_applies AND h.filter_group = ANY(:group_ids)))
      AND (h.filter_resource IS NULL OR h.filter_resource = :resource_id)
      AND (NOT :restricted OR h.owner_id IS NOT NULL)
    ON CONFLICT (event_id, hook_id) DO NOTHING
""".format(cols=_CANDIDATE_COLUMNS))


def _parameters(event: Event) -> dict[str, Any]:
    kind = event.topic.split("/")[0]
    return {
        "event_id": event.id, "topic": event.topic,
        "wildcard": kind + "/*",
        "package_id": event.package_id,
        "organization_id": event.organization_id,
        # a group filter matches the group's datasets and the group itself
        "group_filter_applies": kind in ("dataset", "group"),
        "group_ids": list(event.group_ids or []),
        "resource_id": event.entity_id if kind == "resource" else None,
        "restricted": bool(event.restricted),
        "sequence": event.package_id or event.entity_id,
        "event_created": event.created,
        "now": utcnow(),
    }


def create_messages(event: Event) -> int:
    """One pending message for each hook matching ``event`` (idempotent)."""
    # an INSERT's result is a CursorResult: it has the row count
    result = cast("CursorResult", model.Session.execute(
        _MATCHING_INSERT, _parameters(event)))
    return result.rowcount


# events not fanned out yet, oldest first; a worker that takes them holds
# their rows until it commits, so two workers never fan out the same event
_WAITING = sa.text("""
    SELECT id FROM webhooks_event WHERE fanned_out IS NULL
    ORDER BY created LIMIT :size FOR UPDATE SKIP LOCKED
""")
_FANNED_OUT = sa.text("""
    UPDATE webhooks_event SET fanned_out = :now WHERE id = ANY(:ids)
""")


def fan_out_waiting(size: int = 200) -> int:
    """Create the messages of up to ``size`` events waiting for it, in one
    transaction; how many events were fanned out."""
    session = model.Session
    ids = [row[0] for row in session.execute(_WAITING, {"size": size})]
    if not ids:
        session.commit()
        return 0
    events = session.query(Event).filter(Event.id.in_(ids)).all()
    events.sort(key=lambda e: (e.created, e.id))
    for event in events:
        create_messages(event)
    session.execute(_FANNED_OUT, {"now": utcnow(), "ids": ids})
    session.commit()
    return len(ids)


def fan_out_event(event_id: str) -> bool:
    """Fan one event out now unless another worker has or is doing it."""
    session = model.Session
    row = session.execute(sa.text(
        "SELECT id FROM webhooks_event WHERE id = :id AND fanned_out IS NULL"
        " FOR UPDATE SKIP LOCKED"), {"id": event_id}).first()
    if row is None:
        session.commit()
        return False
    event = session.get(Event, event_id)
    assert event is not None  # locked above
    create_messages(event)
    session.execute(_FANNED_OUT, {"now": utcnow(), "ids": [event_id]})
    session.commit()
    return True
