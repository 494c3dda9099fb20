"""Claims: due messages leased to one worker, with a row lock.

Claiming is one statement: due rows are locked (``FOR UPDATE SKIP LOCKED``,
so two workers never claim the same attempt), leased, counted and come back.
Messages without an event (challenges, pings, test deliveries) come first,
so they never wait behind a backlog of events. A claim takes due messages of
any number of events: a burst of small events costs one claim, not one per
event.

A lease lasts two worst-case attempts; the engine renews the leases of what
it still holds while it sends, so a worker that dies leaves its messages to
the others within that time, however many it held.
"""
from __future__ import annotations

import datetime
import uuid
from typing import Any, Optional

import sqlalchemy as sa

import ckan.model as model
import ckan.plugins.toolkit as tk

from ckanext.webhooks.model import utcnow

# seconds added to a lease for composing bodies and recording outcomes
LEASE_MARGIN = 5

# due messages, in the order they are due: those without an event first
# (challenges, pings, test deliveries: they never wait behind a backlog),
# a bounded look ahead each (rows locked or held by other workers are
# skipped when the claim locks)
_DUE = """
    SELECT id, hook_id, next_attempt, created, {kind} AS kind
    FROM webhooks_delivery
    WHERE status = 'pending' AND next_attempt <= :now
      AND event_id IS {event} NULL
      AND (lease_until IS NULL OR lease_until < :now)
      AND NOT (hook_id = ANY(:excluded))
    ORDER BY next_attempt, created, id LIMIT :scan
"""
# One statement: the due messages, at most ``per_hook`` of one hook (a claim
# holds no more of a hook's backlog than it can send soon: other workers
# share the rest), none whose sequence has an older message held by another
# claim (several workers keep a hook's messages about one dataset in
# order); locked (SKIP LOCKED: two workers never claim the same attempt),
# leased, counted. The ranked rows are looked up by id (an index scan
# whatever the statistics say: joined to them instead, a table analyzed
# while nearly empty made the planner loop over the ranking once per row,
# 0.35 to 0.7 s for a claim of 400 out of 1,000 fresh messages).
_CLAIM = sa.text("""
    WITH due AS ({first} UNION ALL {then}),
    ranked AS (
        SELECT id, kind, next_attempt, created,
               row_number() OVER (PARTITION BY hook_id
                                  ORDER BY kind, next_attempt, created, id)
                   AS place
        FROM due),
    picked AS (
        SELECT d.id FROM webhooks_delivery d
        WHERE d.id = ANY(ARRAY(SELECT id FROM ranked
                               WHERE place <= :per_hook))
          AND d.status = 'pending' AND d.next_attempt <= :now
          AND (d.lease_until IS NULL OR d.lease_until < :now)
          AND (d.sequence IS NULL OR NOT EXISTS (
              SELECT 1 FROM webhooks_delivery o
              WHERE o.hook_id = d.hook_id AND o.sequence = d.sequence
                AND o.status = 'pending' AND o.lease_until >= :now
                AND o.created <= d.created AND o.id <> d.id))
        ORDER BY d.event_id IS NOT NULL, d.next_attempt, d.created, d.id
        LIMIT :size
        FOR UPDATE OF d SKIP LOCKED)
    UPDATE webhooks_delivery d
    SET attempts = d.attempts + 1, last_attempt = :now, lease_until = :lease,
        lease_id = :lease_id
    FROM picked
    WHERE d.id = picked.id
    RETURNING d.id, d.hook_id, d.event_id, d.type, d.data, d.body,
              d.attempts, d.created, d.test, d.redeliveries
""".format(first="(" + _DUE.format(kind=0, event="") + ")",
           then="(" + _DUE.format(kind=1, event="NOT") + ")"))
# rows looked at ahead per message claimed
LOOK_AHEAD = 4
# only rows this claim still holds (not taken over by another worker, nor
# taken back by a person); a row locked now is being recorded, or changed
# by a person: skipped, not waited for, so renewing never deadlocks
_RENEW = sa.text("""
    UPDATE webhooks_delivery d SET lease_until = :lease
    FROM (SELECT id FROM webhooks_delivery
          WHERE id = ANY(:ids) AND lease_id = :lease_id
          ORDER BY id FOR UPDATE SKIP LOCKED) AS mine
    WHERE d.id = mine.id
    RETURNING d.id
""")
# the hooks of these messages, locked before the messages (the order every
# writer keeps: no deadlock with a hook being deleted)
_LOCK_HOOKS = sa.text("""
    SELECT h.id FROM webhooks_hook h
    WHERE h.id IN (SELECT hook_id FROM webhooks_delivery
                   WHERE id = ANY(:ids))
    ORDER BY h.id FOR KEY SHARE
""")
# claimed but not attempted: back as they were, due at ``next_attempt``
_RELEASE = sa.text("""
    UPDATE webhooks_delivery
    SET lease_until = NULL, lease_id = NULL,
        attempts = GREATEST(attempts - 1, 0),
        next_attempt = GREATEST(next_attempt,
                                COALESCE(CAST(:next_attempt AS timestamp),
                                         next_attempt))
    WHERE id = ANY(:ids) AND lease_id = :lease_id
""")


def lease_seconds() -> float:
    return 2 * (tk.config.get("ckanext.webhooks.timeout") + 1) + LEASE_MARGIN


def new_lease_id() -> str:
    return uuid.uuid4().hex


def claim(size: int, excluded_hooks: Optional[list[str]] = None,
          per_hook: Optional[int] = None) -> tuple[list[Any], str]:
    """Lease up to ``size`` due messages, at most ``per_hook`` of one hook
    (default: ``size``); the rows and the claim's id."""
    now = utcnow()
    lease = now + datetime.timedelta(seconds=lease_seconds())
    lease_id = new_lease_id()
    rows = model.Session.execute(_CLAIM, {
        "now": now, "size": size, "lease": lease, "lease_id": lease_id,
        "scan": LOOK_AHEAD * size, "per_hook": per_hook or size,
        "excluded": list(excluded_hooks or [])}).fetchall()
    model.Session.commit()
    return rows, lease_id


def renew(claims: dict[str, list[str]]) -> set[str]:
    """Extend the leases of messages still held, by claim id; the messages
    renewed (a message missing is no longer this worker's)."""
    lease = utcnow() + datetime.timedelta(seconds=lease_seconds())
    renewed: set[str] = set()
    for lease_id, ids in claims.items():
        if ids:
            renewed.update(row[0] for row in model.Session.execute(
                _RENEW, {"ids": ids, "lease_id": lease_id, "lease": lease}))
    model.Session.commit()
    return renewed


def release(ids: list[str], lease_id: str,
            next_attempt: Optional[datetime.datetime] = None) -> None:
    """Give back messages claimed but not attempted."""
    if ids:
        model.Session.execute(_LOCK_HOOKS, {"ids": ids})
        model.Session.execute(_RELEASE, {"ids": ids, "lease_id": lease_id,
                                         "next_attempt": next_attempt})
    model.Session.commit()


class ClaimedMessage:
    """A claimed message: its row, its hook, and what its attempt brought.

    ``state`` says what becomes of it: ``send`` (an attempt goes out),
    ``drop`` (the owner may not see its event, or the hook is gone: the
    message is deleted, as if it never existed), ``failed`` (decided
    without an attempt), and after the attempt ``succeeded``, ``failed``
    or ``pending`` (a retry is due at ``next_attempt``).
    """

    __slots__ = ("id", "hook_id", "event_id", "type", "data", "body",
                 "attempts", "created", "test", "redeliveries", "lease_id",
                 "new_body", "hook",
                 "secrets", "address", "host", "sequence", "outcome",
                 "state", "error", "next_attempt", "started", "order",
                 "promoted", "task", "clock", "aside", "expired", "suspect",
                 "at_host")

    def __init__(self, row: Any, lease_id: str):
        (self.id, self.hook_id, self.event_id, self.type, self.data,
         self.body, self.attempts, self.created, self.test,
         self.redeliveries) = row
        # the claim that holds it
        self.lease_id = lease_id
        self.new_body = False
        self.hook: Any = None
        self.secrets: list[str] = []
        self.address = ""
        self.host: tuple = ()
        # messages of one hook about one dataset (or organization, group)
        # go out one after another, in the order of their events
        self.sequence: tuple = ()
        self.order: tuple = ()
        self.promoted = False  # its turn in its sequence has come
        self.outcome: Any = None
        self.state = "send"
        self.error: Optional[str] = None
        self.next_attempt: Optional[datetime.datetime] = None
        self.started: Optional[datetime.datetime] = None
        # while its attempt is in flight (the engine's): its task, when it
        # started (loop time), whether it was set aside as slow, whether
        # its deadline ended it
        self.task: Any = None
        self.clock = 0.0
        self.aside = False
        self.expired = False
        # its hook hung or failed last time; its attempt counts against its
        # host's bound (``scheduling``)
        self.suspect = False
        self.at_host = False
