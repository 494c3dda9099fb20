"""How the delivery queue is doing: counts read with plain SQL, and the
workers seen recently in Redis.

Shown to sysadmins on /ckan-admin/webhooks; cheap enough to run on every
visit of that page (the counts use the partial indexes on pending messages
and unfanned events).
"""
from __future__ import annotations

import datetime
import logging
from typing import Any, Optional

import redis
import sqlalchemy as sa

import ckan.model as model
import ckan.plugins.toolkit as tk

from ckanext.webhooks.model import utcnow

log = logging.getLogger(__name__)

# A running worker's RQ loop reports to Redis (a heartbeat) at least every
# worker TTL - 15 seconds while it waits for jobs, and Redis forgets a worker
# 60 seconds after its TTL runs out: a worker killed without a word is listed
# that long. A worker that has not reported for longer is counted apart.
def _recent(worker: Any) -> datetime.timedelta:
    return datetime.timedelta(seconds=worker.worker_ttl + 60)

_MESSAGES = sa.text("""
    SELECT count(*) AS pending,
           count(*) FILTER (WHERE next_attempt <= :now) AS due,
           min(created) AS oldest
    FROM webhooks_delivery
    WHERE status = 'pending'
""")

_EVENTS = sa.text("""
    SELECT count(*) AS waiting, min(created) AS oldest
    FROM webhooks_event
    WHERE fanned_out IS NULL
""")


def _age(now: datetime.datetime,
         moment: Optional[datetime.datetime]) -> Optional[int]:
    return max(0, int((now - moment).total_seconds())) if moment else None


def message_counts(now: Optional[datetime.datetime] = None
                   ) -> dict[str, Any]:
    """Pending messages, how many are due now, and the age in seconds of the
    oldest (None when there is none)."""
    now = now or utcnow()
    row = model.Session.execute(_MESSAGES, {"now": now}).one()
    return {"pending": row.pending, "due": row.due,
            "oldest_age": _age(now, row.oldest), "oldest": row.oldest}


def event_counts(now: Optional[datetime.datetime] = None) -> dict[str, Any]:
    """Events not yet fanned out to their hooks, and the oldest one's age."""
    now = now or utcnow()
    row = model.Session.execute(_EVENTS).one()
    return {"waiting": row.waiting, "oldest_age": _age(now, row.oldest),
            "oldest": row.oldest}


def workers_seen(now: Optional[datetime.datetime] = None
                 ) -> Optional[dict[str, Any]]:
    """The workers of the webhooks queue as Redis knows them: ``seen``
    (those whose last report is recent enough for a running worker) and
    ``silent`` (how many others Redis still lists); None when Redis cannot
    be asked. A worker delivers while Redis is down, unseen here."""
    import rq
    from ckan.lib import jobs as ckan_jobs
    now = now or utcnow()
    try:
        queue = ckan_jobs.get_queue(tk.config.get("ckanext.webhooks.queue"))
        workers = rq.Worker.all(connection=queue.connection, queue=queue)
        listed = [(worker, worker.get_state()) for worker in workers]
    except redis.exceptions.RedisError as e:
        log.warning("webhooks: could not list the workers (%s)", e)
        return None
    seen, silent = [], 0
    for worker, state in listed:
        heartbeat = getattr(worker, "last_heartbeat", None)
        if heartbeat is not None and heartbeat.tzinfo is not None:
            heartbeat = heartbeat.astimezone(datetime.timezone.utc) \
                .replace(tzinfo=None)
        if heartbeat is None or now - heartbeat > _recent(worker):
            silent += 1
            continue
        seen.append({"name": worker.name, "hostname": worker.hostname,
                     "pid": worker.pid, "state": state,
                     "last_heartbeat": heartbeat})
    return {"seen": sorted(seen, key=lambda w: w["name"]),
            "silent": silent}


def queue_health() -> dict[str, Any]:
    """Everything the admin page shows about the queue."""
    now = utcnow()
    return {"messages": message_counts(now), "events": event_counts(now),
            "workers": workers_seen(now)}
