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
import random
from typing import Optional

import sqlalchemy as sa

import ckan.model as model
import ckan.plugins.toolkit as tk

from ckanext.webhooks import verification
from ckanext.webhooks.model import (
    Hook, utcnow, MESSAGE_PENDING, MESSAGE_SUCCEEDED, MESSAGE_FAILED,
    STATUS_ACTIVE, STATUS_DISABLED, STATUS_PENDING,
    REASON_DISABLED_BY_OWNER)
from ckanext.webhooks.pipeline import attempt_log
from ckanext.webhooks.pipeline.claiming import ClaimedMessage
from ckanext.webhooks.pipeline.composing import TYPE_PING, TYPE_VERIFY
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


def _retry_delay(message: ClaimedMessage, outcome: Outcome,
                 jitter: float) -> Optional[float]:
    schedule = _schedule(message)
    if message.attempts > len(schedule):
        return None
    if outcome.retry_after is not None:
        return min(outcome.retry_after,
                   float(tk.config.get("ckanext.webhooks.max_retry_after")))
    return schedule[message.attempts - 1] * jitter


def _challenge_answered(message: ClaimedMessage, outcome: Outcome) -> bool:
    challenge = (message.data or {}).get("challenge")
    if not challenge:
        return False
    return verification.answered(
        challenge, message.hook_id, outcome.response_body)


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
_DROP = sa.text("DELETE FROM webhooks_delivery WHERE id = ANY(:ids)")


def _logged_body(outcome: Outcome, hook_active: bool) -> Optional[str]:
    if not hook_active or not outcome.response_body:
        return None
    text = outcome.response_body.decode("utf-8", errors="replace")
    return text[:LOGGED_BODY].replace("\x00", "\ufffd")


def _judge(message: ClaimedMessage, change: _HookChange,
           now: datetime.datetime, jitter: float) -> None:
    """Set the message's state after its attempt, and what it does to its
    hook."""
    outcome = message.outcome
    hook = message.hook
    if outcome.succeeded:
        if message.type == TYPE_VERIFY and not _challenge_answered(
                message, outcome):
            message.state = MESSAGE_FAILED
            message.error = "the answer did not echo the challenge"
            return
        message.state = MESSAGE_SUCCEEDED
        change.reset, change.errors, change.failing = True, 0, False
        change.failures = 0
        if message.type == TYPE_VERIFY and hook.status == STATUS_PENDING:
            change.status, change.verified = STATUS_ACTIVE, True
        if message.type == TYPE_PING and hook.status == STATUS_DISABLED \
                and hook.status_reason != REASON_DISABLED_BY_OWNER:
            change.status = STATUS_ACTIVE
        return

    change.failing = True
    message.state = MESSAGE_FAILED
    message.error = outcome.error
    if outcome.gone:
        change.gone = True
    elif outcome.redirect:
        message.error = "redirects are not followed"
    elif outcome.client_error:
        change.errors += 1
    else:
        delay = _retry_delay(message, outcome, jitter)
        if message.event_id:
            change.failures += 1
        if delay is not None:
            message.state = MESSAGE_PENDING
            message.next_attempt = now + datetime.timedelta(seconds=delay)
            if message.event_id:
                change.circuit_until = max(
                    change.circuit_until or message.next_attempt,
                    message.next_attempt)


def record(messages: list[ClaimedMessage]) -> dict[str, datetime.datetime]:
    """Store outcomes and apply the hook rules; the hooks whose circuit is
    open now, with the time it closes."""
    now = utcnow()
    jitter = 1 + random.uniform(0, 0.1)
    changes: dict[str, _HookChange] = {}
    dropped: list[str] = []
    stored: list[ClaimedMessage] = []
    attempted: list[ClaimedMessage] = []
    for message in messages:
        if message.state == "drop":
            dropped.append(message.id)
            continue
        stored.append(message)
        if message.outcome is None:  # decided without an attempt
            message.state = MESSAGE_FAILED
            continue
        attempted.append(message)
        change = changes.get(message.hook.id)
        if change is None:
            change = changes[message.hook.id] = _HookChange()
        _judge(message, change, now, jitter)

    session = model.Session
    if dropped:
        session.execute(_DROP, {"ids": dropped})
    if stored:
        session.execute(_STORE_OUTCOMES, {
            "ids": [m.id for m in stored],
            "statuses": [m.state for m in stored],
            "codes": [m.outcome and m.outcome.status for m in stored],
            "errors": [m.error for m in stored],
            "durations": [m.outcome and m.outcome.duration_ms
                          for m in stored],
            "nexts": [m.next_attempt for m in stored],
            "bodies": [m.body if m.new_body else None for m in stored]})
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
    opened = _store_hooks(changes, stored, now)
    session.commit()
    return opened


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
