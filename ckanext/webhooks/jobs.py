"""Background jobs: fan an event out to its hooks, deliver, retry, sweep.

PostgreSQL is the source of truth; Redis only carries "look at this now"
nudges. A lost job (Redis outage, killed worker) is found again by the sweep,
and every attempt is claimed with a row lock and a lease, so several workers
never send the same attempt twice.
"""
from __future__ import annotations

import collections
import datetime
import logging
import random
from concurrent.futures import ThreadPoolExecutor, wait as futures_wait
from typing import Any, Optional

import redis
import sqlalchemy as sa

import ckan.model as model
import ckan.plugins.toolkit as tk
from ckan.lib import jobs as ckan_jobs

from ckanext.webhooks import access, addresses, delivery, verification
from ckanext.webhooks.model import (
    Delivery, Event, Hook, utcnow,
    DELIVERY_PENDING, DELIVERY_SUCCEEDED, DELIVERY_FAILED,
    STATUS_ACTIVE, STATUS_DISABLED, STATUS_PENDING,
)

log = logging.getLogger(__name__)

TYPE_PING = "webhook/ping"
TYPE_VERIFY = "webhook/verify"

# a job claims this many rounds of `concurrency` messages at a time
ROUNDS_PER_CLAIM = 16
# seconds added to a lease for building bodies and recording outcomes
LEASE_MARGIN = 5
# at most this many ids travel in one delivery job
IDS_PER_JOB = 200
# at most this many other workers are asked to help with one large event
MAX_HELPERS = 4


# --- enqueueing -----------------------------------------------------------

def _queue():
    return ckan_jobs.get_queue(tk.config.get("ckanext.webhooks.queue"))


def _job_options() -> dict[str, Any]:
    return {"result_ttl": 0, "failure_ttl": 7 * 24 * 3600,
            "job_timeout": max(600, tk.config.get("ckan.jobs.timeout"))}


def push_fan_out(event_id: str) -> None:
    """Ask a worker to fan ``event_id`` out; raises RedisError."""
    _queue().enqueue(fan_out_event, event_id, **_job_options())


def enqueue_fan_out(event_id: str) -> bool:
    """Ask a worker to fan ``event_id`` out; the sweep retries on failure."""
    try:
        push_fan_out(event_id)
        return True
    except redis.exceptions.RedisError as e:
        log.warning("webhooks: could not enqueue event %s (%s); the worker's "
                    "sweep will pick it up", event_id, e)
        return False


def enqueue_delivery(message_ids: list[str],
                     delay: Optional[float] = None) -> bool:
    """Ask a worker to attempt these messages, now or after ``delay``."""
    try:
        queue = _queue()
        for start in range(0, len(message_ids), IDS_PER_JOB):
            chunk = message_ids[start:start + IDS_PER_JOB]
            if delay:
                queue.enqueue_in(datetime.timedelta(seconds=delay),
                                 deliver_messages, chunk, **_job_options())
            else:
                queue.enqueue(deliver_messages, chunk, **_job_options())
        return True
    except redis.exceptions.RedisError as e:
        log.warning("webhooks: could not enqueue messages (%s); the worker's "
                    "sweep will pick them up", e)
        return False


# --- job entry points -------------------------------------------------------

# Candidates come from one indexed lookup per way a hook can match (no
# filter, or a filter naming this event's dataset, organization, group or
# resource); the full rule then applies to the candidates only, without
# going back to the table, so the cost follows the matching hooks, not all.
_CANDIDATE_COLUMNS = """id, owner_id, topics, status, created, filter_dataset,
               filter_organization, filter_group, filter_resource"""
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
        (id, hook_id, event_id, type, status, attempts, created, next_attempt)
    SELECT 'msg_' || md5(random()::text || clock_timestamp()::text || h.id),
           h.id, :event_id, :topic, 'pending', 0, :now, :now
    FROM candidate h
    WHERE h.status = 'active'
      AND h.created <= :event_created
      AND h.topics && ARRAY[:topic, :wildcard]
      AND (h.filter_dataset IS NULL OR h.filter_dataset = :package_id)
      AND (h.filter_organization IS NULL
           OR h.filter_organization = :organization_id)
      AND (h.filter_group IS NULL
           OR (:group_filtered AND h.filter_group = ANY(:group_ids)))
      AND (h.filter_resource IS NULL OR h.filter_resource = :resource_id)
      AND (NOT :restricted OR h.owner_id IS NOT NULL)
    ON CONFLICT (event_id, hook_id) DO NOTHING
""".format(cols=_CANDIDATE_COLUMNS))


def create_messages(event: Event) -> int:
    """One pending message for each hook matching ``event`` (idempotent).

    An organization filter matches the event's organization (an
    organization event's is itself); a group filter its groups, for
    dataset and group topics only; a dataset filter its dataset (none for
    organization and group events); a resource filter resource events."""
    kind = event.topic.split("/")[0]
    result = model.Session.execute(_MATCHING_INSERT, {
        "event_id": event.id, "topic": event.topic,
        "wildcard": event.topic.split("/")[0] + "/*",
        "package_id": event.package_id,
        "organization_id": event.organization_id,
        "group_filtered": kind in ("dataset", "group"),
        "group_ids": list(event.group_ids or []),
        "resource_id": event.entity_id if kind == "resource" else None,
        "restricted": bool(event.restricted),
        "event_created": event.created,
        "now": utcnow(),
    })
    return result.rowcount


def fan_out_event(event_id: str) -> None:
    """Job: create the messages of one event and deliver them.

    An event with more messages than two claims also asks other workers to
    help (``deliver_event`` jobs): their claims take the messages this job
    has not claimed yet, so one large event is sent by every idle worker.
    """
    event = model.Session.get(Event, event_id)
    if event is None:
        return
    if event.fanned_out is None:
        count = create_messages(event)
        event.fanned_out = utcnow()
        model.Session.commit()
        helpers = min(MAX_HELPERS, count // (2 * _claim_size()))
        if helpers:
            try:
                queue = _queue()
                for _ in range(helpers):
                    queue.enqueue(deliver_event, event_id, **_job_options())
            except redis.exceptions.RedisError as e:
                log.warning("webhooks: no helpers for event %s (%s)",
                            event_id, e)
    _deliver_due(_CLAIM_EVENT, {"event_id": event_id})


def deliver_event(event_id: str) -> None:
    """Job: help deliver the due messages of one event."""
    _deliver_due(_CLAIM_EVENT, {"event_id": event_id})


def deliver_messages(message_ids: list[str]) -> None:
    """Job: attempt these messages (first tries, retries, pings)."""
    _deliver_due(_CLAIM_IDS, {"ids": list(message_ids)})


# --- delivering ---------------------------------------------------------------

def _iso(moment: datetime.datetime) -> str:
    return moment.replace(microsecond=0).isoformat() + "Z"


def _concurrency() -> int:
    return max(1, tk.config.get("ckanext.webhooks.concurrency"))


def _claim_size() -> int:
    return ROUNDS_PER_CLAIM * _concurrency()


# Claiming is one statement: due rows are locked (FOR UPDATE SKIP LOCKED, so
# two workers never claim the same attempt), leased, counted and come back.
# A lease lasts two worst-case attempts; the job renews the leases of what it
# still holds while it sends, so a worker that dies leaves its messages to
# the sweep within that time, however large its claims.
_CLAIM = """
    WITH due AS (
        SELECT id FROM webhooks_delivery
        WHERE {condition}
          AND status = 'pending' AND next_attempt <= :soon
          AND (lease_until IS NULL OR lease_until < :now)
        ORDER BY created LIMIT :size
        FOR UPDATE SKIP LOCKED
    )
    UPDATE webhooks_delivery d
    SET attempts = d.attempts + 1, last_attempt = :now, lease_until = :lease
    FROM due
    WHERE d.id = due.id
    RETURNING d.id, d.hook_id, d.event_id, d.type, d.data, d.body,
              d.attempts, d.created
"""
# only rows still under this job's lease (not taken over by another worker)
_RENEW = sa.text("""
    UPDATE webhooks_delivery SET lease_until = :lease
    WHERE id = ANY(:ids) AND lease_until = :held
""")
_CLAIM_EVENT = sa.text(_CLAIM.format(condition="event_id = :event_id"))
_CLAIM_IDS = sa.text(_CLAIM.format(condition="id = ANY(:ids)"))

_HOOK_COLUMNS = sa.select(
    Hook.id, Hook.address, Hook.status, Hook.owner_id, Hook.secret,
    Hook.previous_secret, Hook.previous_secret_expires, Hook.client_errors,
    Hook.last_success, Hook.failing_since)


class _Message:
    """A claimed message, its hook, and what its attempt brought."""

    __slots__ = ("id", "hook_id", "event_id", "type", "data", "body",
                 "attempts", "created", "new_body", "hook", "secrets",
                 "pinned", "outcome", "status", "error", "next_attempt")

    def __init__(self, row):
        (self.id, self.hook_id, self.event_id, self.type, self.data,
         self.body, self.attempts, self.created) = row
        self.new_body = False
        self.hook = None
        self.secrets: list[str] = []
        self.pinned = None
        self.outcome: Optional[delivery.Outcome] = None
        self.status = DELIVERY_PENDING
        self.error: Optional[str] = None
        self.next_attempt: Optional[datetime.datetime] = None


class _JobCache:
    """What one job looks up once: events, viewers, ``data`` per owner."""

    def __init__(self):
        self.events: dict[str, Optional[Event]] = {}
        self.viewers: dict[Optional[str], access.Viewer] = {}
        self.data: dict[tuple, Optional[str]] = {}
        self.changes: dict[tuple, Optional[str]] = {}
        self.timestamps: dict[str, str] = {}

    def timestamp(self, event: Event) -> str:
        if event.id not in self.timestamps:
            self.timestamps[event.id] = _iso(event.created)
        return self.timestamps[event.id]

    def event(self, event_id: str) -> Optional[Event]:
        if event_id not in self.events:
            self.events[event_id] = model.Session.get(Event, event_id)
        return self.events[event_id]

    def data_json(self, event: Event, owner_id: Optional[str]
                  ) -> Optional[str]:
        """The event's ``data`` as the owner may see it, as JSON; None when
        the owner may not see it (access is judged at every attempt)."""
        key = (event.id, owner_id)
        if key not in self.data:
            if owner_id not in self.viewers:
                self.viewers[owner_id] = access.Viewer(owner_id)
            data = access.event_data(event, self.viewers[owner_id])
            self.data[key] = None if data is None else delivery.to_json(data)
            self.changes[key] = None if data is None else _changes_json(
                event, self.viewers[owner_id], data)
        return self.data[key]

    def changes_json(self, event: Event, owner_id: Optional[str]
                     ) -> Optional[str]:
        """The ``changes`` that go with ``data_json`` (call that first)."""
        return self.changes.get((event.id, owner_id))


def _changes_json(event: Event, viewer: access.Viewer,
                  data: dict[str, Any]) -> Optional[str]:
    """An update's ``changes`` as this viewer may see them, as JSON; None
    when the body carries none."""
    changes = access.event_changes(event, viewer, data)
    return None if changes is None else delivery.to_json(changes)


def _lease_seconds() -> float:
    return 2 * (tk.config.get("ckanext.webhooks.timeout") + 1) + LEASE_MARGIN


class _Claim:
    """Messages claimed together, and the lease they are held under."""

    def __init__(self, messages: list["_Message"], lease: datetime.datetime):
        self.messages = messages
        self.lease = lease
        self.sending: list[_Message] = []
        self.futures: list = []


def _claim(statement: Any, params: dict[str, Any]) -> _Claim:
    now = utcnow()
    lease = now + datetime.timedelta(seconds=_lease_seconds())
    rows = model.Session.execute(statement, dict(
        params, now=now, soon=now + datetime.timedelta(seconds=1),
        size=_claim_size(), lease=lease)).fetchall()
    model.Session.commit()
    messages = [_Message(row) for row in rows]
    messages.sort(key=lambda m: (m.created, m.id))
    return _Claim(messages, lease)


def _renew(claims: list[_Claim]) -> None:
    """Extend the leases of claims still being sent or waiting to be."""
    lease = utcnow() + datetime.timedelta(seconds=_lease_seconds())
    for claim in claims:
        if claim.messages:
            model.Session.execute(_RENEW, {
                "ids": [m.id for m in claim.messages], "held": claim.lease,
                "lease": lease})
            claim.lease = lease
    model.Session.commit()


def _plan(messages: list[_Message], cache: _JobCache) -> list[_Message]:
    """Decide what each claimed message carries and where it goes; the
    messages to send. The others are decided here: dropped (the owner may
    not see the event, or it is gone) or failed (the hook is not active)."""
    hooks = {row.id: row for row in model.Session.execute(
        _HOOK_COLUMNS.where(Hook.id.in_(list({m.hook_id for m in messages}))))}
    now = utcnow()
    pins: dict[str, Any] = {}
    resolved: dict[tuple, Any] = {}
    sending = []
    for message in messages:
        hook = message.hook = hooks.get(message.hook_id)
        if hook is None:  # deleted meanwhile: its messages went with it
            message.status = None
            continue
        if hook.status != STATUS_ACTIVE and message.type not in (
                TYPE_PING, TYPE_VERIFY):
            message.status = DELIVERY_FAILED
            message.error = "hook is " + hook.status
            continue
        if message.event_id:
            event = cache.event(message.event_id)
            data_json = None
            if event is not None and (message.body is None
                                      or event.restricted):
                data_json = cache.data_json(event, hook.owner_id)
            if event is None or (data_json is None and (
                    message.body is None or event.restricted)):
                message.status = None  # not for this owner (any more)
                continue
            if message.body is None:
                message.body = delivery.compose_body(
                    message.id, message.type, cache.timestamp(event),
                    hook.id, data_json,
                    cache.changes_json(event, hook.owner_id))
                message.new_body = True
        elif message.body is None:
            message.body = delivery.compose_body(
                message.id, message.type, _iso(message.created), hook.id,
                delivery.to_json(message.data or {}))
            message.new_body = True
        message.secrets = [hook.secret]
        if hook.previous_secret and hook.previous_secret_expires \
                and hook.previous_secret_expires > now:
            message.secrets.append(hook.previous_secret)
        # resolved and vetted once per address and claim: each attempt
        # still connects only to the IP vetted here
        if hook.address not in pins:
            try:
                pins[hook.address] = addresses.pin(hook.address, resolved)
            except addresses.AddressRefused as e:
                pins[hook.address] = e
        pinned = pins[hook.address]
        if isinstance(pinned, addresses.AddressRefused):
            message.outcome = delivery.Outcome(None, "refused: " + str(pinned),
                                               0)
        else:
            message.pinned = pinned
        sending.append(message)
    model.Session.commit()
    return sending


_pool: Optional[ThreadPoolExecutor] = None
_pool_size = 0


def _sender_pool(size: int) -> ThreadPoolExecutor:
    """Long-lived sender threads: each keeps its connections to receivers."""
    global _pool, _pool_size
    if _pool is None or _pool_size != size:
        if _pool is not None:
            _pool.shutdown(wait=True)
        _pool = ThreadPoolExecutor(max_workers=size,
                                   thread_name_prefix="webhooks-send")
        _pool_size = size
    return _pool


def _send(message: _Message) -> None:
    if message.outcome is not None:
        return
    try:
        message.outcome = delivery.post_message(
            message.hook.address, message.id, message.body, message.secrets,
            pinned=message.pinned)
    except Exception as e:  # a bug must not lose the other outcomes
        log.exception("webhooks: sending %s failed", message.id)
        message.outcome = delivery.Outcome(
            None, "internal error: " + type(e).__name__, 0)


def _start_sending(messages: list[_Message]) -> list:
    """Send ``messages`` on the sender threads; the futures to wait for
    (none when they were sent right here). Each thread takes the next
    message as soon as it is free."""
    if len(messages) <= 1:
        for message in messages:
            _send(message)
        return []
    size = min(_concurrency(), len(messages))
    todo = collections.deque(messages)

    def work() -> None:
        while True:
            try:
                message = todo.popleft()
            except IndexError:
                return
            _send(message)

    pool = _sender_pool(_concurrency())
    return [pool.submit(work) for _ in range(size)]


def _challenge_answered(message: _Message,
                        outcome: delivery.Outcome) -> bool:
    challenge = (message.data or {}).get("challenge")
    return bool(challenge) and verification.answered(
        challenge, message.hook_id, outcome.response_body)


def _retry_delay(attempts: int, outcome: delivery.Outcome,
                 jitter: float) -> Optional[float]:
    schedule = [float(s) for s in
                tk.config.get("ckanext.webhooks.retry_schedule")]
    if attempts > len(schedule):
        return None
    if outcome.retry_after is not None:
        return min(outcome.retry_after,
                   float(tk.config.get("ckanext.webhooks.max_retry_after")))
    return schedule[attempts - 1] * jitter


class _HookChange:
    """What this claim's outcomes do to one hook."""

    __slots__ = ("reset", "errors", "failing", "status", "gone")

    def __init__(self):
        self.reset = False     # a success: consecutive 4xx start again
        self.errors = 0        # 4xx answers since (or, without reset, more)
        self.failing = False   # the latest outcome failed
        self.status: Optional[str] = None
        self.gone = False

    def __bool__(self) -> bool:
        return self.reset or self.failing or bool(self.errors) \
            or self.status is not None or self.gone


# Outcomes of a whole claim are written with two statements of constant text
# (compiled once, one round trip each), whatever the claim's size.
_STORE_OUTCOMES = sa.text("""
    UPDATE webhooks_delivery d
    SET status = v.status, lease_until = NULL,
        response_status = v.response_status, error = v.error,
        duration_ms = v.duration_ms,
        next_attempt = COALESCE(v.next_attempt, d.next_attempt),
        body = COALESCE(v.body, d.body)
    FROM unnest(CAST(:ids AS text[]), CAST(:statuses AS text[]),
                CAST(:codes AS int[]), CAST(:errors AS text[]),
                CAST(:durations AS int[]), CAST(:nexts AS timestamp[]),
                CAST(:bodies AS text[]))
         AS v(id, status, response_status, error, duration_ms, next_attempt,
              body)
    WHERE d.id = v.id
""")
_STORE_HOOKS = sa.text("""
    UPDATE webhooks_hook h
    SET client_errors = CASE WHEN v.reset THEN v.errors
                             ELSE h.client_errors + v.errors END,
        last_success = CASE WHEN v.reset THEN CAST(:now AS timestamp)
                            ELSE h.last_success END,
        failing_since = CASE WHEN NOT v.failing THEN NULL
                             WHEN v.reset THEN CAST(:now AS timestamp)
                             ELSE COALESCE(h.failing_since,
                                           CAST(:now AS timestamp)) END,
        status = COALESCE(v.status, h.status),
        status_reason = CASE WHEN v.status IS NULL THEN h.status_reason END
    FROM unnest(CAST(:ids AS text[]), CAST(:resets AS boolean[]),
                CAST(:counts AS int[]), CAST(:failings AS boolean[]),
                CAST(:statuses AS text[]))
         AS v(id, reset, errors, failing, status)
    WHERE h.id = v.id
    RETURNING h.id, h.client_errors
""")
_DROP = sa.text("DELETE FROM webhooks_delivery WHERE id = ANY(:ids)")
# while a hook keeps succeeding, its row is written at most this often
LAST_SUCCESS_EVERY = datetime.timedelta(seconds=60)


def _record(messages: list[_Message]) -> dict[float, list[str]]:
    """Store outcomes, apply the stale-hook rules; return retries by delay."""
    now = utcnow()
    jitter = 1 + random.uniform(0, 0.1)
    max_client_errors = tk.config.get("ckanext.webhooks.max_client_errors")
    retries: dict[float, list[str]] = {}
    changes: dict[str, _HookChange] = {}
    dropped: list[str] = []
    stored: list[_Message] = []
    for message in messages:
        outcome = message.outcome
        if message.status is None:
            dropped.append(message.id)
            continue
        stored.append(message)
        if outcome is None:  # decided without an attempt
            continue
        hook = message.hook
        change = changes.get(hook.id)
        if change is None:
            change = changes[hook.id] = _HookChange()
        if outcome.succeeded:
            if message.type == TYPE_VERIFY and not _challenge_answered(
                    message, outcome):
                message.status = DELIVERY_FAILED
                message.error = "the answer did not echo the challenge"
                continue
            message.status = DELIVERY_SUCCEEDED
            change.reset, change.errors, change.failing = True, 0, False
            if message.type == TYPE_VERIFY and hook.status == STATUS_PENDING:
                change.status = STATUS_ACTIVE
            if message.type == TYPE_PING and hook.status == STATUS_DISABLED:
                change.status = STATUS_ACTIVE
            continue

        change.failing = True
        message.status = DELIVERY_FAILED
        message.error = outcome.error
        if outcome.gone:
            change.gone = True
        elif outcome.redirect:
            message.error = "redirects are not followed"
        elif outcome.client_error:
            change.errors += 1
        else:
            delay = _retry_delay(message.attempts, outcome, jitter)
            if delay is not None:
                message.status = DELIVERY_PENDING
                message.next_attempt = now + datetime.timedelta(
                    seconds=delay)
                retries.setdefault(round(delay, 1), []).append(message.id)

    if dropped:
        model.Session.execute(_DROP, {"ids": dropped})
    if stored:
        model.Session.execute(_STORE_OUTCOMES, {
            "ids": [m.id for m in stored],
            "statuses": [m.status for m in stored],
            "codes": [m.outcome and m.outcome.status for m in stored],
            "errors": [m.error for m in stored],
            "durations": [m.outcome and m.outcome.duration_ms
                          for m in stored],
            "nexts": [m.next_attempt for m in stored],
            "bodies": [m.body if m.new_body else None for m in stored]})
    hooks = {m.hook.id: m.hook for m in stored if m.hook is not None}
    # a hook that simply keeps succeeding needs no write every time
    changes = {
        hook_id: c for hook_id, c in changes.items()
        if c and not (c.reset and not c.failing and not c.errors
                and c.status is None and not hooks[hook_id].client_errors
                and hooks[hook_id].failing_since is None
                and hooks[hook_id].last_success is not None
                and hooks[hook_id].last_success > now - LAST_SUCCESS_EVERY)}
    doomed = {hook_id for hook_id, c in changes.items() if c.gone}
    if changes:
        ids = sorted(changes)  # one lock order for every worker
        for hook_id, errors in model.Session.execute(_STORE_HOOKS, {
                "now": now, "ids": ids,
                "resets": [changes[i].reset for i in ids],
                "counts": [changes[i].errors for i in ids],
                "failings": [changes[i].failing for i in ids],
                "statuses": [changes[i].status for i in ids]}):
            if errors >= max_client_errors and changes[hook_id].errors:
                doomed.add(hook_id)
    if doomed:
        log.info("webhooks: deleting stale hooks %s", sorted(doomed))
        model.Session.query(Hook).filter(Hook.id.in_(doomed)).delete(
            synchronize_session=False)
    model.Session.commit()
    return retries


def _deliver_due(statement: Any, params: dict[str, Any]) -> None:
    """Claim, send and record due messages until none are left.

    A pipeline: while the sender threads send one claim, this thread records
    the claim before it and claims and plans the next, so the database
    round trips overlap with the HTTP ones. While it waits for the senders
    it renews the leases of both claims.
    """
    cache = _JobCache()
    renew_every = _lease_seconds() / 4

    def claim() -> _Claim:
        claimed = _claim(statement, params)
        if claimed.messages:
            claimed.sending = _plan(claimed.messages, cache)
        return claimed

    try:
        current = claim()
        current.futures = _start_sending(current.sending)
        while current.messages:
            upcoming = claim() if len(current.messages) >= _claim_size() \
                else _Claim([], utcnow())
            pending = set(current.futures)
            while pending:
                _, pending = futures_wait(pending, timeout=renew_every)
                if pending:
                    _renew([current, upcoming])
            upcoming.futures = _start_sending(upcoming.sending)
            try:
                for delay, ids in _record(current.messages).items():
                    enqueue_delivery(ids, delay)
            except BaseException:
                for future in upcoming.futures:  # no thread sends for us
                    future.cancel()
                raise
            current = upcoming
    finally:
        model.Session.remove()


# --- the sweep --------------------------------------------------------------

_SWEEP_LOCK = 0x7765626B  # "webk": one sweeper at a time across machines


def sweep(grace: float) -> dict[str, int]:
    """Re-enqueue lost work and tidy up; safe to run anywhere, any time.

    ``grace`` seconds keep the sweep from re-enqueueing work whose job is
    merely still queued.
    """
    now = utcnow()
    cutoff = now - datetime.timedelta(seconds=grace)
    counts = {"events": 0, "messages": 0, "unverified": 0, "disabled": 0,
              "pruned": 0}
    session = model.Session
    try:
        locked = session.execute(sa.text(
            "SELECT pg_try_advisory_xact_lock(:key)"),
            {"key": _SWEEP_LOCK}).scalar()
        if not locked:
            return counts

        event_ids = session.query(Event.id).filter(
            Event.fanned_out.is_(None), Event.created <= cutoff
        ).order_by(Event.created).limit(5000).all()
        message_ids = session.query(Delivery.id).filter(
            Delivery.status == DELIVERY_PENDING,
            Delivery.next_attempt <= cutoff,
            sa.or_(Delivery.lease_until.is_(None), Delivery.lease_until < now),
        ).order_by(Delivery.next_attempt).limit(20000).all()

        pending_ttl = tk.config.get("ckanext.webhooks.pending_ttl")
        counts["unverified"] = session.query(Hook).filter(
            Hook.status == STATUS_PENDING,
            Hook.created < now - datetime.timedelta(seconds=pending_ttl),
        ).delete(synchronize_session=False)

        disable_after = tk.config.get("ckanext.webhooks.disable_after")
        counts["disabled"] = session.query(Hook).filter(
            Hook.status == STATUS_ACTIVE,
            Hook.failing_since < now - datetime.timedelta(
                seconds=disable_after),
        ).update({"status": STATUS_DISABLED, "status_reason":
                  "every delivery failed since {}".format(
                      now - datetime.timedelta(seconds=disable_after))},
            synchronize_session=False)

        counts["pruned"] = prune(commit=False)
        session.commit()
    finally:
        session.remove()

    for (event_id,) in event_ids:
        if enqueue_fan_out(event_id):
            counts["events"] += 1
    ids = [m for (m,) in message_ids]
    if ids and enqueue_delivery(ids):
        counts["messages"] = len(ids)
    if any(counts.values()):
        log.info("webhooks sweep: %s", counts)
    return counts


def prune(days: Optional[float] = None, commit: bool = True) -> int:
    """Delete finished messages, and their events, older than ``days``."""
    if days is None:
        days = tk.config.get("ckanext.webhooks.delivery_retention_days")
    cutoff = utcnow() - datetime.timedelta(days=days)
    session = model.Session
    deleted = session.query(Delivery).filter(
        Delivery.status != DELIVERY_PENDING, Delivery.created < cutoff,
    ).delete(synchronize_session=False)
    pending = sa.select(Delivery.event_id).where(
        Delivery.status == DELIVERY_PENDING, Delivery.event_id.isnot(None))
    session.query(Event).filter(
        Event.created < cutoff, Event.fanned_out.isnot(None),
        Event.id.notin_(pending),
    ).delete(synchronize_session=False)
    if commit:
        session.commit()
    return deleted

