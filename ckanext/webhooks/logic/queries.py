"""The read-only queries of the actions beyond a hook's own row: its
deliveries filtered and paged, its health read from its attempts, and the
hooks a sysadmin searches for.

What each costs (the indexes are those of the migrations):

- ``deliveries``: a range scan of ``ix_webhooks_delivery_hook_created``
  (the hook's messages, newest first, narrowed by ``since`` and ``until``),
  status and type filtered on the way; it stops once ``offset + limit``
  rows matched. A filter that matches few of a hook's many messages scans
  those many (``since``/``until`` bound it): no index on status, which
  changes at every attempt, so recording outcomes stays HOT updates.
- ``health``: two range scans per hook of the partial indexes
  ``ix_webhooks_attempt_hook_succeeded`` / ``_failed`` over the last 7 days
  (every attempt is in exactly one of them), sorted once for the
  percentiles: linear in the hook's attempts of the week. The last success
  and failure are one index probe each (the newest entry of each index).
"""
from __future__ import annotations

import datetime
from typing import Any, Optional

import sqlalchemy as sa

import ckan.model as model

from ckanext.webhooks.logic import schema
from ckanext.webhooks.model import Hook, Message, utcnow

DAY = datetime.timedelta(days=1)
WEEK = datetime.timedelta(days=7)
# the windows of a hook's health: name and length
WINDOWS = (("last_24h", DAY), ("last_7d", WEEK))


def deliveries(hook_id: str, visible: Any, data: dict[str, Any]
               ) -> list[Message]:
    """A hook's messages that ``visible`` lets its owner know of, newest
    first, filtered by ``status``, ``type`` (a wildcard: its prefix),
    ``since`` (inclusive) and ``until`` (exclusive) on their creation, and
    paged by ``offset`` and ``limit``."""
    query = model.Session.query(Message).filter(
        Message.hook_id == hook_id, visible)
    if data.get("status"):
        query = query.filter(Message.status == data["status"])
    kind = data.get("type")
    if kind and schema.is_wildcard(kind):
        query = query.filter(Message.type.startswith(kind[:-1],
                                                     autoescape=True))
    elif kind:
        query = query.filter(Message.type == kind)
    if data.get("since"):
        query = query.filter(Message.created >= data["since"])
    if data.get("until"):
        query = query.filter(Message.created < data["until"])
    return query.order_by(Message.created.desc(), Message.id) \
        .offset(data.get("offset") or 0).limit(data["limit"]).all()


_WINDOW_FIGURES = """
    count(*) FILTER (WHERE at >= :{w}) AS {w}_attempts,
    count(*) FILTER (WHERE at >= :{w} AND ok) AS {w}_succeeded,
    percentile_disc(0.5) WITHIN GROUP (ORDER BY duration_ms)
        FILTER (WHERE at >= :{w}) AS {w}_p50,
    percentile_disc(0.95) WITHIN GROUP (ORDER BY duration_ms)
        FILTER (WHERE at >= :{w}) AS {w}_p95"""
# each branch matches the predicate of one partial index
_HEALTH = sa.text("""
    WITH recent AS (
        SELECT hook_id, at, duration_ms, true AS ok FROM webhooks_attempt
        WHERE hook_id = ANY(:ids) AND succeeded AND at >= :oldest
        UNION ALL
        SELECT hook_id, at, duration_ms, false FROM webhooks_attempt
        WHERE hook_id = ANY(:ids) AND NOT succeeded AND at >= :oldest)
    SELECT hook_id, {figures}
    FROM recent GROUP BY hook_id
""".format(figures=",".join(_WINDOW_FIGURES.format(w=name)
                           for name, _ in WINDOWS)))
_LAST = sa.text("""
    SELECT h.id,
        (SELECT max(at) FROM webhooks_attempt a
         WHERE a.hook_id = h.id AND a.succeeded) AS last_success,
        (SELECT max(at) FROM webhooks_attempt a
         WHERE a.hook_id = h.id AND NOT a.succeeded) AS last_failure
    FROM unnest(CAST(:ids AS text[])) AS h(id)
""")


def _window(row: Any, name: str) -> dict[str, Any]:
    attempts = getattr(row, name + "_attempts", 0) if row else 0
    succeeded = getattr(row, name + "_succeeded", 0) if row else 0
    return {
        "attempts": attempts,
        "succeeded": succeeded,
        "success_rate": round(succeeded / attempts, 4) if attempts else None,
        "p50_ms": getattr(row, name + "_p50") if attempts else None,
        "p95_ms": getattr(row, name + "_p95") if attempts else None,
    }


def health(hook_ids: list[str],
           now: Optional[datetime.datetime] = None
           ) -> dict[str, dict[str, Any]]:
    """Per hook, from its attempts: for the last 24 hours and 7 days how
    many attempts, how many succeeded, the success rate and the median and
    95th percentile of their durations; and the times of the last attempt
    that succeeded and the last that failed (null when none is logged)."""
    if not hook_ids:
        return {}
    now = now or utcnow()
    params: dict[str, Any] = {"ids": list(hook_ids), "oldest": now - WEEK}
    params.update({name: now - length for name, length in WINDOWS})
    session = model.Session
    figures = {row.hook_id: row for row in session.execute(_HEALTH, params)}
    last = {row.id: row for row in session.execute(
        _LAST, {"ids": list(hook_ids)})}
    result: dict[str, dict[str, Any]] = {}
    for hook_id in hook_ids:
        row, times = figures.get(hook_id), last.get(hook_id)
        shown: dict[str, Any] = {
            name: _window(row, name) for name, _ in WINDOWS}
        shown["last_success"] = times.last_success if times else None
        shown["last_failure"] = times.last_failure if times else None
        result[hook_id] = shown
    return result


def matching_hooks(query: Any, q: Optional[str]) -> Any:
    """Hooks whose id starts with ``q``, or whose address or description
    holds it (case-insensitive), or whose owner's name is ``q``."""
    if not q:
        return query
    owners = sa.select(model.User.id).where(model.User.name == q)
    # lower() and contains(): SQLAlchemy 1.4 (CKAN 2.10) has no icontains
    lowered = q.lower()
    return query.filter(sa.or_(
        Hook.id.startswith(q, autoescape=True),
        sa.func.lower(Hook.address).contains(lowered, autoescape=True),
        sa.func.lower(Hook.description).contains(lowered, autoescape=True),
        Hook.owner_id.in_(owners)))


def owner_names(hooks: list[Hook]) -> dict[str, str]:
    """{user id: user name} of the hooks' owners."""
    ids = {h.owner_id for h in hooks if h.owner_id}
    if not ids:
        return {}
    return dict(model.Session.query(model.User.id, model.User.name)
                .filter(model.User.id.in_(ids)).all())
