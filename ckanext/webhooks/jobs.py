"""Background jobs: fan an event out to its hooks, deliver, retry, sweep.

PostgreSQL is the source of truth; Redis only carries "look at this now"
nudges. A lost job (Redis outage, killed worker) is found again by the sweep,
and every attempt is claimed with a row lock and a lease, so several workers
never send the same attempt twice.
"""
from __future__ import annotations

import datetime
import logging
import random
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Optional

import redis
import sqlalchemy as sa

import ckan.model as model
import ckan.plugins.toolkit as tk
from ckan.lib import jobs as ckan_jobs

from ckanext.webhooks import access, delivery, verification
from ckanext.webhooks.model import (
    Delivery, Event, Hook, utcnow,
    DELIVERY_PENDING, DELIVERY_SUCCEEDED, DELIVERY_FAILED,
    STATUS_ACTIVE, STATUS_DISABLED, STATUS_PENDING,
)

log = logging.getLogger(__name__)

TYPE_PING = "webhook/ping"
TYPE_VERIFY = "webhook/verify"

# a job claims this many rounds of `concurrency` messages at a time; the
# claim's lease covers all rounds at the worst-case attempt time
ROUNDS_PER_CLAIM = 8
# seconds added to a claim's lease for building bodies and recording outcomes
LEASE_MARGIN = 5
# at most this many ids travel in one delivery job
IDS_PER_JOB = 200


# --- enqueueing -----------------------------------------------------------

def _queue():
    return ckan_jobs.get_queue(tk.config.get("ckanext.webhooks.queue"))


def _job_options() -> dict[str, Any]:
    return {"result_ttl": 0, "failure_ttl": 7 * 24 * 3600,
            "job_timeout": max(600, tk.config.get("ckan.jobs.timeout"))}


def enqueue_fan_out(event_id: str) -> bool:
    """Ask a worker to fan ``event_id`` out; the sweep retries on failure."""
    try:
        _queue().enqueue(fan_out_event, event_id, **_job_options())
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
_CANDIDATE_COLUMNS = """id, owner_id, topic, status, created, filter_dataset,
               filter_organization, filter_group, filter_resource"""
_MATCHING_INSERT = sa.text("""
    WITH candidate AS (
        SELECT {cols} FROM webhooks_hook
        WHERE topic IN (:topic, :wildcard)
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
      AND h.topic IN (:topic, :wildcard)
      AND (h.filter_dataset IS NULL OR h.filter_dataset = :package_id)
      AND (h.filter_organization IS NULL
           OR h.filter_organization = :organization_id)
      AND (h.filter_group IS NULL
           OR (:is_dataset AND h.filter_group = ANY(:group_ids)))
      AND (h.filter_resource IS NULL OR h.filter_resource = :resource_id)
      AND (NOT :restricted OR h.owner_id IS NOT NULL)
    ON CONFLICT (event_id, hook_id) DO NOTHING
""".format(cols=_CANDIDATE_COLUMNS))


def create_messages(event: Event) -> int:
    """One pending message for each hook matching ``event`` (idempotent)."""
    is_dataset = event.topic.startswith("dataset/")
    result = model.Session.execute(_MATCHING_INSERT, {
        "event_id": event.id, "topic": event.topic,
        "wildcard": event.topic.split("/")[0] + "/*",
        "package_id": event.package_id,
        "organization_id": event.organization_id,
        "is_dataset": is_dataset,
        "group_ids": list(event.group_ids or []),
        "resource_id": None if is_dataset else event.entity_id,
        "restricted": bool(event.restricted),
        "event_created": event.created,
        "now": utcnow(),
    })
    return result.rowcount


def fan_out_event(event_id: str) -> None:
    """Job: create the messages of one event and deliver them."""
    event = model.Session.get(Event, event_id)
    if event is None:
        return
    if event.fanned_out is None:
        create_messages(event)
        event.fanned_out = utcnow()
        model.Session.commit()
    _deliver_due(sa.and_(Delivery.event_id == event_id))


def deliver_messages(message_ids: list[str]) -> None:
    """Job: attempt these messages (first tries, retries, pings)."""
    _deliver_due(Delivery.id.in_(list(message_ids)))


# --- delivering ---------------------------------------------------------------

def _iso(moment: datetime.datetime) -> str:
    return moment.replace(microsecond=0).isoformat() + "Z"


def _concurrency() -> int:
    return max(1, tk.config.get("ckanext.webhooks.concurrency"))


def _claim_size() -> int:
    return ROUNDS_PER_CLAIM * _concurrency()


def _claim(condition: Any) -> list[Delivery]:
    """Lease due messages matching ``condition`` and count their attempt.

    Rows are locked (``FOR UPDATE SKIP LOCKED``) while the lease is set, so
    two workers never claim the same attempt. Until the lease ends no other
    worker takes them; a worker that dies mid-attempt leaves them to the
    sweep once it has ended. The lease covers sending what was claimed,
    ``concurrency`` at a time, each attempt cut off at the timeout.
    """
    now = utcnow()
    ids = model.Session.execute(
        sa.select(Delivery.id).where(
            condition,
            Delivery.status == DELIVERY_PENDING,
            Delivery.next_attempt <= now + datetime.timedelta(seconds=1),
            sa.or_(Delivery.lease_until.is_(None),
                   Delivery.lease_until < now),
        ).order_by(Delivery.created).limit(_claim_size())
        .with_for_update(skip_locked=True)
    ).scalars().all()
    if not ids:
        model.Session.commit()
        return []
    rounds = -(-len(ids) // _concurrency())
    attempt = tk.config.get("ckanext.webhooks.timeout") + 1
    lease = now + datetime.timedelta(seconds=rounds * attempt + LEASE_MARGIN)
    model.Session.execute(
        sa.update(Delivery).where(Delivery.id.in_(ids))
        .values(attempts=Delivery.attempts + 1, lease_until=lease,
                last_attempt=now)
        .execution_options(synchronize_session=False))
    model.Session.commit()
    return model.Session.query(Delivery).filter(
        Delivery.id.in_(ids)).populate_existing().all()


class _Plan:
    __slots__ = ("message", "hook", "body", "secrets", "outcome")

    def __init__(self, message, hook, body, secrets):
        self.message, self.hook, self.body = message, hook, body
        self.secrets = secrets
        self.outcome: Optional[delivery.Outcome] = None


class _JobCache:
    """What one job looks up once: events, viewers, ``data`` per owner."""

    def __init__(self):
        self.events: dict[str, Optional[Event]] = {}
        self.viewers: dict[Optional[str], access.Viewer] = {}
        self.data: dict[tuple, Optional[dict]] = {}


def _plans(messages: list[Delivery], cache: _JobCache) -> list[_Plan]:
    """Decide what each claimed message carries; drop what may not be seen."""
    hooks = {h.id: h for h in model.Session.query(Hook).filter(
        Hook.id.in_({m.hook_id for m in messages}))}
    events, viewers, data_cache = cache.events, cache.viewers, cache.data
    now = utcnow()
    plans = []
    for message in messages:
        hook = hooks.get(message.hook_id)
        if hook is None:
            continue
        if hook.status != STATUS_ACTIVE and message.type not in (
                TYPE_PING, TYPE_VERIFY):
            _finish(message, DELIVERY_FAILED, error="hook is " + hook.status)
            continue
        if message.event_id:
            if message.event_id not in events:
                events[message.event_id] = model.Session.get(
                    Event, message.event_id)
            event = events[message.event_id]
            if event is None:
                model.Session.delete(message)
                continue
            if message.body is None or event.restricted:
                # access is judged at every attempt, on the owner's rights now
                if hook.owner_id not in viewers:
                    viewers[hook.owner_id] = access.Viewer(hook.owner_id)
                key = (event.id, hook.owner_id)
                if key not in data_cache:
                    data_cache[key] = access.event_data(
                        event, viewers[hook.owner_id])
                data = data_cache[key]
                if data is None:
                    model.Session.delete(message)
                    continue
                if message.body is None:
                    message.body = delivery.message_body(
                        message.id, message.type, _iso(event.created),
                        hook.id, data)
        elif message.body is None:
            message.body = delivery.message_body(
                message.id, message.type, _iso(message.created), hook.id,
                message.data or {})
        plans.append(_Plan(message, hook, message.body,
                           hook.secrets_for_signing(now)))
    model.Session.commit()
    return plans


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


def _send_all(plans: list[_Plan]) -> None:
    def send(plan: _Plan) -> None:
        plan.outcome = delivery.post_message(
            plan.hook.address, plan.message.id, plan.body, plan.secrets)

    size = _concurrency()
    if size == 1 or len(plans) == 1:
        for plan in plans:
            send(plan)
        return
    list(_sender_pool(size).map(send, plans))


def _finish(message: Delivery, status: str, **values: Any) -> None:
    message.status = status
    message.lease_until = None
    for key, value in values.items():
        setattr(message, key, value)


def _challenge_answered(message: Delivery, outcome: delivery.Outcome) -> bool:
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


def _record(plans: list[_Plan]) -> dict[float, list[str]]:
    """Store outcomes, apply the stale-hook rules; return retries by delay."""
    now = utcnow()
    jitter = 1 + random.uniform(0, 0.1)
    max_client_errors = tk.config.get("ckanext.webhooks.max_client_errors")
    retries: dict[float, list[str]] = {}
    doomed: set[str] = set()
    for plan in plans:
        message, hook, outcome = plan.message, plan.hook, plan.outcome
        assert outcome is not None
        common = {"response_status": outcome.status, "error": outcome.error,
                  "duration_ms": outcome.duration_ms}
        if outcome.succeeded:
            if message.type == TYPE_VERIFY and not _challenge_answered(
                    message, outcome):
                _finish(message, DELIVERY_FAILED, **dict(
                    common, error="the answer did not echo the challenge"))
                continue
            _finish(message, DELIVERY_SUCCEEDED, **common)
            hook.client_errors = 0
            hook.last_success = now
            hook.failing_since = None
            if message.type == TYPE_VERIFY and hook.status == STATUS_PENDING:
                hook.status, hook.status_reason = STATUS_ACTIVE, None
            if message.type == TYPE_PING and hook.status == STATUS_DISABLED:
                hook.status, hook.status_reason = STATUS_ACTIVE, None
            continue

        hook.failing_since = hook.failing_since or now
        if outcome.gone:
            _finish(message, DELIVERY_FAILED, **common)
            doomed.add(hook.id)
        elif outcome.redirect:
            _finish(message, DELIVERY_FAILED, **dict(
                common, error="redirects are not followed"))
        elif outcome.client_error:
            _finish(message, DELIVERY_FAILED, **common)
            hook.client_errors = (hook.client_errors or 0) + 1
            if hook.client_errors >= max_client_errors:
                doomed.add(hook.id)
        else:
            delay = _retry_delay(message.attempts, outcome, jitter)
            if delay is None:
                _finish(message, DELIVERY_FAILED, **common)
            else:
                _finish(message, DELIVERY_PENDING, next_attempt=now +
                        datetime.timedelta(seconds=delay), **common)
                retries.setdefault(round(delay, 1), []).append(message.id)
    model.Session.commit()
    if doomed:
        log.info("webhooks: deleting stale hooks %s", sorted(doomed))
        model.Session.query(Hook).filter(Hook.id.in_(doomed)).delete(
            synchronize_session=False)
        model.Session.commit()
    return retries


def _deliver_due(condition: Any) -> None:
    cache = _JobCache()
    try:
        while True:
            messages = _claim(condition)
            if not messages:
                return
            plans = _plans(messages, cache)
            _send_all(plans)
            for delay, ids in _record(plans).items():
                enqueue_delivery(ids, delay)
            if len(messages) < _claim_size():
                return
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

