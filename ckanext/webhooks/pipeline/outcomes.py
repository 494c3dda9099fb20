"""What an attempt's answer means, written for a whole batch at once.

- 2xx: succeeded (a challenge only when the answer echoes it).
- ``410 Gone``: the hook is deleted at once.
- Redirects: failed, not followed and not retried.
- Other 4xx: failed; ``max_client_errors`` in a row delete the hook.
- 5xx, 408, 429, timeouts, connection errors: retried on ``retry_schedule``
  (pings and test deliveries: two quick retries; the challenge: three
  attempts in all), honouring ``Retry-After``.
- The circuit breaker: after ``circuit_failures`` such failures in a row, a
  hook's other messages wait for its next retry slot instead of taking
  sending capacity now; the next success closes the circuit.
- Every attempt goes into the attempt log (``webhooks_attempt``).
"""
from __future__ import annotations

import datetime
import logging
from typing import Optional

import sqlalchemy as sa

import ckan.model as model
import ckan.plugins.toolkit as tk

from ckanext.webhooks import verification
from ckanext.webhooks.model import (
    Hook, utcnow, MESSAGE_PENDING, MESSAGE_SUCCEEDED, MESSAGE_FAILED,
    STATUS_ACTIVE, STATUS_DISABLED, STATUS_PENDING,
    REASON_DISABLED_BY_OWNER, TYPE_PING, TYPE_VERIFY)
from ckanext.webhooks.pipeline import attempt_log, retries
from ckanext.webhooks.pipeline.claiming import ClaimedMessage
from ckanext.webhooks.pipeline.sending import Outcome

log = logging.getLogger(__name__)

# pings and test deliveries: a couple of quick retries, not the event schedule
QUICK_RETRIES = (5.0, 30.0)
# the challenge: three attempts in all
CHALLENGE_RETRIES = (10.0, 60.0)
# the response body kept in the attempt log, in characters
LOGGED_BODY = 2048
# attempts kept in the log of one message (redeliveries add more)
LOGGED_ATTEMPTS = 50
# while a hook keeps succeeding, its row is written at most this often
LAST_SUCCESS_EVERY = datetime.timedelta(seconds=60)


def _schedule(message: ClaimedMessage) -> list[float]:
    if message.type == TYPE_VERIFY:
        return list(CHALLENGE_RETRIES)
    if message.type == TYPE_PING or message.test:
        return list(QUICK_RETRIES)
    return [float(s) for s in
            tk.config.get("ckanext.webhooks.retry_schedule")]


def _retry_delay(message: ClaimedMessage, outcome: Outcome
                 ) -> Optional[float]:
    return retries.delay(
        _schedule(message), message.attempts, outcome.retry_after,
        float(tk.config.get("ckanext.webhooks.max_retry_after")))


def _challenge_answered(message: ClaimedMessage, outcome: Outcome) -> bool:
    challenge = (message.data or {}).get("challenge")
    if not challenge:
        return False
    return verification.answered(
        challenge, message.hook_id, message.address, outcome.response_body)


class _HookChange:
    """What this batch's outcomes do to one hook."""

    __slots__ = ("reset", "errors", "failing", "failures", "circuit_until",
                 "status", "verified", "gone")

    def __init__(self) -> None:
        self.reset = False     # a success: the counts start again
        self.errors = 0        # 4xx answers since (or, without reset, more)
        self.failing = False   # the latest outcome failed
        self.failures = 0      # failures that count for the circuit breaker
        self.circuit_until: Optional[datetime.datetime] = None
        self.status: Optional[str] = None
        self.verified = False
        self.gone = False

    def __bool__(self) -> bool:
        return self.reset or self.failing or bool(self.errors) \
            or bool(self.failures) or self.status is not None or self.gone


# one lock order everywhere: a hook's row before its messages' rows (as
# ``webhook_delete``, ``webhook_update`` and the sweep take them), so a
# person changing or deleting a hook while its outcomes are recorded waits
# a moment instead of deadlocking; NO KEY UPDATE, so new messages (whose
# foreign key takes KEY SHARE) are not held up
_LOCK_HOOKS = sa.text("""
    SELECT id, address, status, status_reason FROM webhooks_hook
    WHERE id = ANY(:ids) ORDER BY id FOR NO KEY UPDATE
""")
# only messages this worker's claim still holds: a worker whose lease
# lapsed does not overwrite a newer claim, and a call-off (the hook was
# disabled, moved) wins. A person who asked for the message again while
# its attempt was in flight gets another attempt, due now.
_STORE_OUTCOMES = sa.text("""
    UPDATE webhooks_delivery d
    SET status = CASE WHEN d.redeliveries <> v.redeliveries THEN 'pending'
                      ELSE v.status END,
        next_attempt = CASE WHEN d.redeliveries <> v.redeliveries
                            THEN CAST(:now AS timestamp)
                            ELSE COALESCE(v.next_attempt, d.next_attempt)
                       END,
        lease_until = NULL, lease_id = NULL,
        response_status = v.response_status, error = v.error,
        duration_ms = v.duration_ms
    FROM unnest(CAST(:ids AS text[]), CAST(:lease_ids AS text[]),
                CAST(:redeliveries AS int[]), CAST(:statuses AS text[]),
                CAST(:codes AS int[]), CAST(:errors AS text[]),
                CAST(:durations AS int[]), CAST(:nexts AS timestamp[]))
         AS v(id, lease_id, redeliveries, status, response_status, error,
              duration_ms, next_attempt)
    WHERE d.id = v.id AND d.lease_id = v.lease_id
    RETURNING d.id
""")
# every attempt made is logged, held or not: it happened
_LOG_ATTEMPTS = sa.text("""
    INSERT INTO webhooks_attempt
        (message_id, at, duration_ms, response_status, error, response_body,
         hook_id, succeeded, request_headers, response_head)
    SELECT v.id, v.at, v.duration_ms, v.response_status, v.error, v.body,
           d.hook_id, v.succeeded, CAST(v.request_headers AS json),
           CAST(v.response_head AS json)
    FROM unnest(CAST(:ids AS text[]), CAST(:ats AS timestamp[]),
                CAST(:durations AS int[]), CAST(:codes AS int[]),
                CAST(:errors AS text[]), CAST(:bodies AS text[]),
                CAST(:succeeded AS boolean[]),
                CAST(:request_headers AS text[]),
                CAST(:response_heads AS text[]))
         AS v(id, at, duration_ms, response_status, error, body, succeeded,
              request_headers, response_head)
    JOIN webhooks_delivery d ON d.id = v.id
""")
_TRIM_LOG = sa.text("""
    DELETE FROM webhooks_attempt a
    WHERE a.message_id = ANY(:ids) AND a.id NOT IN (
        SELECT b.id FROM webhooks_attempt b
        WHERE b.message_id = a.message_id ORDER BY b.id DESC LIMIT :keep)
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
        consecutive_failures = CASE WHEN v.reset THEN v.failures
                                    ELSE h.consecutive_failures + v.failures
                               END,
        circuit_until = CASE
            WHEN v.failures > 0 AND (CASE WHEN v.reset THEN v.failures
                     ELSE h.consecutive_failures + v.failures END)
                 >= :circuit_failures
                THEN v.circuit_until
            WHEN v.reset THEN NULL
            ELSE h.circuit_until END,
        verified = CASE WHEN v.verified THEN CAST(:now AS timestamp)
                        ELSE h.verified END,
        status = COALESCE(v.status, h.status),
        status_reason = CASE WHEN v.status IS NULL THEN h.status_reason END
    FROM unnest(CAST(:ids AS text[]), CAST(:resets AS boolean[]),
                CAST(:counts AS int[]), CAST(:failings AS boolean[]),
                CAST(:failures AS int[]), CAST(:untils AS timestamp[]),
                CAST(:statuses AS text[]), CAST(:verifieds AS boolean[]))
         AS v(id, reset, errors, failing, failures, circuit_until, status,
              verified)
    WHERE h.id = v.id
    RETURNING h.id, h.client_errors, h.circuit_until
""")
# a hook whose circuit opened: its other due messages wait for the slot
_HOLD_MESSAGES = sa.text("""
    UPDATE webhooks_delivery d SET next_attempt = v.until
    FROM unnest(CAST(:ids AS text[]), CAST(:untils AS timestamp[]))
         AS v(hook_id, until)
    WHERE d.hook_id = v.hook_id AND d.status = 'pending'
      AND d.event_id IS NOT NULL AND d.next_attempt < v.until
      AND (d.lease_until IS NULL OR d.lease_until < :now)
""")
_DROP = sa.text("""
    DELETE FROM webhooks_delivery d
    USING unnest(CAST(:ids AS text[]), CAST(:lease_ids AS text[]))
          AS v(id, lease_id)
    WHERE d.id = v.id AND d.lease_id = v.lease_id
""")


def _logged_body(outcome: Outcome, hook_active: bool) -> Optional[str]:
    if not hook_active or not outcome.response_body:
        return None
    text = outcome.response_body.decode("utf-8", errors="replace")
    return text[:LOGGED_BODY].replace("\x00", "\ufffd")


def _judge(message: ClaimedMessage, now: datetime.datetime) -> None:
    """The message's state after its attempt."""
    outcome = message.outcome
    if outcome.succeeded:
        if message.type == TYPE_VERIFY and not _challenge_answered(
                message, outcome):
            message.state = MESSAGE_FAILED
            message.error = "the answer did not echo the challenge"
        else:
            message.state = MESSAGE_SUCCEEDED
        return
    message.state = MESSAGE_FAILED
    message.error = outcome.error
    if outcome.redirect:
        message.error = "redirects are not followed"
    elif outcome.gone or outcome.client_error:
        pass
    else:
        delay = _retry_delay(message, outcome)
        if delay is not None:
            message.state = MESSAGE_PENDING
            message.next_attempt = now + datetime.timedelta(seconds=delay)


def _fold(message: ClaimedMessage, change: _HookChange,
          same_state: bool) -> None:
    """Add what the message's attempt does to its hook; ``same_state``:
    the hook is in the state the message was composed under (or else the
    attempt changes no status)."""
    outcome = message.outcome
    hook = message.hook
    if outcome.succeeded:
        if message.state != MESSAGE_SUCCEEDED:  # a challenge not echoed
            return
        change.reset, change.errors, change.failing = True, 0, False
        change.failures = 0
        if not same_state:
            return
        if message.type == TYPE_VERIFY and hook.status == STATUS_PENDING:
            change.status, change.verified = STATUS_ACTIVE, True
        if message.type == TYPE_PING and hook.status == STATUS_DISABLED \
                and hook.status_reason != REASON_DISABLED_BY_OWNER:
            change.status = STATUS_ACTIVE
        return
    change.failing = True
    if outcome.gone:
        change.gone = change.gone or same_state
    elif outcome.redirect:
        pass
    elif outcome.client_error:
        change.errors += 1
    elif message.event_id:
        change.failures += 1
        if message.next_attempt is not None:
            change.circuit_until = max(
                change.circuit_until or message.next_attempt,
                message.next_attempt)


def record(messages: list[ClaimedMessage]) -> dict[str, datetime.datetime]:
    """Store outcomes and apply the hook rules; the hooks whose circuit is
    open now, with the time it closes.

    A message changes only while this worker's claim still holds it; an
    attempt changes its hook only while the hook has the address the
    attempt went to, and its status only while the hook is in the state
    the message was composed under (see ``_fold``)."""
    now = utcnow()
    dropped: list[ClaimedMessage] = []
    stored: list[ClaimedMessage] = []
    attempted: list[ClaimedMessage] = []
    for message in messages:
        if message.state == "drop":
            dropped.append(message)
            continue
        stored.append(message)
        if message.outcome is None:  # decided without an attempt
            message.state = MESSAGE_FAILED
            continue
        attempted.append(message)
        _judge(message, now)

    session = model.Session
    current = {row.id: row for row in session.execute(_LOCK_HOOKS, {
        "ids": sorted({m.hook_id for m in messages})})}
    if dropped:
        session.execute(_DROP, {"ids": [m.id for m in dropped],
                                "lease_ids": [m.lease_id for m in dropped]})
    held: set[str] = set()
    if stored:
        held.update(row[0] for row in session.execute(_STORE_OUTCOMES, {
            "now": now,
            "ids": [m.id for m in stored],
            "lease_ids": [m.lease_id for m in stored],
            "redeliveries": [m.redeliveries for m in stored],
            "statuses": [m.state for m in stored],
            "codes": [m.outcome and m.outcome.status for m in stored],
            "errors": [m.error for m in stored],
            "durations": [m.outcome and m.outcome.duration_ms
                          for m in stored],
            "nexts": [m.next_attempt for m in stored]}))
    if attempted:
        session.execute(_LOG_ATTEMPTS, {
            "ids": [m.id for m in attempted],
            "ats": [m.started or now for m in attempted],
            "durations": [m.outcome.duration_ms for m in attempted],
            "codes": [m.outcome.status for m in attempted],
            "errors": [m.error if m.state != MESSAGE_SUCCEEDED else None
                       for m in attempted],
            "bodies": [_logged_body(m.outcome,
                                    m.hook.status == STATUS_ACTIVE)
                       for m in attempted],
            "succeeded": [m.state == MESSAGE_SUCCEEDED for m in attempted],
            "request_headers": [attempt_log.request_headers(m.outcome)
                                for m in attempted],
            "response_heads": [attempt_log.response_head(
                m.outcome, m.hook.status == STATUS_ACTIVE)
                for m in attempted]})
        long_logs = [m.id for m in attempted if m.attempts > LOGGED_ATTEMPTS]
        if long_logs:
            session.execute(_TRIM_LOG, {"ids": long_logs,
                                        "keep": LOGGED_ATTEMPTS})
    changes = _changes(attempted, held, current)
    opened = _store_hooks(changes, stored, now)
    session.commit()
    return opened


def _changes(attempted: list[ClaimedMessage], held: set[str],
             current: dict) -> dict[str, _HookChange]:
    """What the attempts of messages still held do to their hooks, in the
    order they finished; an attempt made for an address the hook no longer
    has changes nothing."""
    changes: dict[str, _HookChange] = {}
    for message in attempted:
        now_is = current.get(message.hook_id)
        if message.id not in held or now_is is None \
                or now_is.address != message.address:
            continue
        composed = message.hook
        same_state = (now_is.status, now_is.status_reason) == (
            composed.status, composed.status_reason)
        change = changes.get(message.hook_id)
        if change is None:
            change = changes[message.hook_id] = _HookChange()
        _fold(message, change, same_state)
    return changes
def _store_hooks(changes: dict[str, _HookChange], stored: list[ClaimedMessage],
                 now: datetime.datetime) -> dict[str, datetime.datetime]:
    session = model.Session
    hooks = {m.hook.id: m.hook for m in stored if m.hook is not None}
    # a hook that simply keeps succeeding needs no write every time
    changes = {
        hook_id: c for hook_id, c in changes.items()
        if c and not (c.reset and not c.failing and not c.errors
                      and c.status is None and not c.failures
                      and not hooks[hook_id].client_errors
                      and not hooks[hook_id].consecutive_failures
                      and hooks[hook_id].circuit_until is None
                      and hooks[hook_id].failing_since is None
                      and hooks[hook_id].last_success is not None
                      and hooks[hook_id].last_success
                      > now - LAST_SUCCESS_EVERY)}
    doomed = {hook_id for hook_id, c in changes.items() if c.gone}
    opened: dict[str, datetime.datetime] = {}
    if changes:
        max_client_errors = tk.config.get(
            "ckanext.webhooks.max_client_errors")
        ids = sorted(changes)  # one lock order for every worker
        for hook_id, errors, circuit_until in session.execute(_STORE_HOOKS, {
                "now": now, "ids": ids,
                "circuit_failures": tk.config.get(
                    "ckanext.webhooks.circuit_failures"),
                "resets": [changes[i].reset for i in ids],
                "counts": [changes[i].errors for i in ids],
                "failings": [changes[i].failing for i in ids],
                "failures": [changes[i].failures for i in ids],
                "untils": [changes[i].circuit_until for i in ids],
                "statuses": [changes[i].status for i in ids],
                "verifieds": [changes[i].verified for i in ids]}):
            if errors >= max_client_errors and changes[hook_id].errors:
                doomed.add(hook_id)
            if changes[hook_id].failures and circuit_until is not None \
                    and circuit_until > now:
                opened[hook_id] = circuit_until
    if opened:
        session.execute(_HOLD_MESSAGES, {
            "now": now, "ids": list(opened),
            "untils": [opened[i] for i in opened]})
    if doomed:
        log.info("webhooks: deleting stale hooks %s", sorted(doomed))
        session.query(Hook).filter(Hook.id.in_(doomed)).delete(
            synchronize_session=False)
    return opened
