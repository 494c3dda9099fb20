"""Tidying up: unverified and failing hooks, old records.

Lost work needs no sweep: the engine claims messages whose lease expired and
fans out events nobody fanned out, straight from the database.
"""
from __future__ import annotations

import datetime
import logging
from typing import Optional

import sqlalchemy as sa

import ckan.model as model
import ckan.plugins.toolkit as tk

from ckanext.webhooks.model import (
    Message, Event, Hook, utcnow,
    MESSAGE_PENDING, STATUS_ACTIVE, STATUS_DISABLED, STATUS_PENDING)

log = logging.getLogger(__name__)

_SWEEP_LOCK = 0x7765626B  # "webk": one sweeper at a time across machines


def sweep() -> dict[str, int]:
    """Remove unverified hooks, disable failing ones, prune old records;
    safe to run anywhere, any time (one worker at a time does it)."""
    now = utcnow()
    counts = {"unverified": 0, "disabled": 0, "pruned": 0}
    session = model.Session
    locked = session.execute(sa.text(
        "SELECT pg_try_advisory_xact_lock(:key)"),
        {"key": _SWEEP_LOCK}).scalar()
    if not locked:
        session.commit()
        return counts

    pending_ttl = tk.config.get("ckanext.webhooks.pending_ttl")
    # a hook is pending since its latest challenge (a new address)
    unverified = _locked_hooks(
        Hook.status == STATUS_PENDING,
        sa.func.coalesce(Hook.last_challenge, Hook.created)
        < now - datetime.timedelta(seconds=pending_ttl))
    if unverified:
        counts["unverified"] = session.query(Hook).filter(
            Hook.id.in_(unverified)).delete(synchronize_session=False)

    disable_after = tk.config.get("ckanext.webhooks.disable_after")
    failing = _locked_hooks(
        Hook.status == STATUS_ACTIVE,
        Hook.failing_since < now - datetime.timedelta(
            seconds=disable_after))
    if failing:
        counts["disabled"] = session.query(Hook).filter(
            Hook.id.in_(failing)).update(
            {"status": STATUS_DISABLED, "status_reason":
             "every delivery failed since {}".format(
                 now - datetime.timedelta(seconds=disable_after))},
            synchronize_session=False)

    counts["pruned"] = prune(commit=False)
    session.commit()
    if any(counts.values()):
        log.info("webhooks sweep: %s", counts)
    return counts


def _locked_hooks(*conditions) -> list[str]:
    """The hooks that meet ``conditions``, locked in the order of their
    ids, as a worker recording outcomes locks them (no deadlock)."""
    return [row[0] for row in model.Session.query(Hook.id).filter(
        *conditions).order_by(Hook.id).with_for_update()]


def prune(days: Optional[float] = None, commit: bool = True) -> int:
    """Delete finished messages (and their attempt logs), and their events,
    older than ``days``."""
    if days is None:
        days = tk.config.get("ckanext.webhooks.delivery_retention_days")
    cutoff = utcnow() - datetime.timedelta(days=days)
    session = model.Session
    # rows locked now (their hook being deleted, a person asking for one
    # again) are skipped, not waited for: the next sweep takes them
    finished = sa.select(Message.id).where(
        Message.status != MESSAGE_PENDING, Message.created < cutoff,
    ).with_for_update(skip_locked=True)
    deleted = session.query(Message).filter(
        Message.id.in_(finished)).delete(synchronize_session=False)
    pending = sa.select(Message.event_id).where(
        Message.status == MESSAGE_PENDING, Message.event_id.isnot(None))
    session.query(Event).filter(
        Event.created < cutoff, Event.fanned_out.isnot(None),
        Event.id.notin_(pending),
    ).delete(synchronize_session=False)
    if commit:
        session.commit()
    return deleted
