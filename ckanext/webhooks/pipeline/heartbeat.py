"""Each worker's engine says it is alive, in PostgreSQL (no Redis needed).

Every ``BEAT`` seconds an engine writes its row in ``webhooks_worker``:
hostname, pid, when it started, whether its listener is listening, the
attempts it has in flight and when it last swept. ``ckan webhooks status``
reads these rows; a row not written for ``ALIVE`` seconds is a worker that
is gone (killed, or its machine lost the database). A worker that stops
cleanly removes its row; rows of workers gone for a day are removed by the
next beat of any worker.
"""
from __future__ import annotations

import datetime
import os
import socket
import uuid
from typing import Optional

import sqlalchemy as sa

import ckan.model as model

from ckanext.webhooks.model import utcnow

# seconds between beats
BEAT = 5.0
# a worker seen within this many seconds is alive
ALIVE = 3 * BEAT
# rows of workers gone this long are removed
FORGET_AFTER = datetime.timedelta(days=1)


class Identity:
    """Who this worker is: its row's id, hostname, pid and start time."""

    def __init__(self) -> None:
        self.hostname = socket.gethostname()
        self.pid = os.getpid()
        self.started = utcnow()
        self.id = "{}:{}:{}".format(self.hostname, self.pid,
                                    uuid.uuid4().hex[:8])


def beat(identity: Identity, listening: bool, in_flight: int,
         last_sweep: Optional[datetime.datetime]) -> None:
    """Write this worker's row (and forget long-gone workers)."""
    now = utcnow()
    session = model.Session
    session.execute(sa.text("""
        INSERT INTO webhooks_worker (id, hostname, pid, started, last_seen,
                                     listening, in_flight, last_sweep)
        VALUES (:id, :hostname, :pid, :started, :now, :listening,
                :in_flight, :last_sweep)
        ON CONFLICT (id) DO UPDATE SET last_seen = :now,
            listening = :listening, in_flight = :in_flight,
            last_sweep = :last_sweep"""), {
        "id": identity.id, "hostname": identity.hostname,
        "pid": identity.pid, "started": identity.started, "now": now,
        "listening": listening, "in_flight": in_flight,
        "last_sweep": last_sweep})
    session.execute(sa.text(
        "DELETE FROM webhooks_worker WHERE last_seen < :cutoff"),
        {"cutoff": now - FORGET_AFTER})
    session.commit()


def leave(identity: Identity) -> None:
    """Remove this worker's row (a clean stop)."""
    model.Session.execute(sa.text(
        "DELETE FROM webhooks_worker WHERE id = :id"), {"id": identity.id})
    model.Session.commit()
