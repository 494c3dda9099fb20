"""Enqueue fan-out jobs the moment events commit (LISTEN/NOTIFY).

Requests add events to ``webhooks_event`` in their own transaction, and the
same statement notifies the ``webhooks_event`` channel, which PostgreSQL
delivers only when (and if) the transaction commits. A request never talks
to Redis.

Every ``ckan webhooks worker`` runs a dispatcher thread; one of them at a time
(the holder of a PostgreSQL advisory lock) listens and enqueues one fan-out
job per notified event. The others stand by and take over within seconds
when the listening worker goes away. Whenever a dispatcher starts listening
it first enqueues the events not yet fanned out, so notifications missed
while no one listened are caught up; the sweep remains the last resort.
While Redis is down the dispatcher keeps the events and tries again every
second.
"""
from __future__ import annotations

import logging
import os
import select
import threading
import time
from typing import Any, Optional

import redis

import ckan.model as model

from ckanext.webhooks import jobs
from ckanext.webhooks.subscriptions import CHANNEL

log = logging.getLogger(__name__)

_LEADER_LOCK = 0x7765626E  # "webn": one listening dispatcher at a time
STANDBY_POLL = 2.0         # seconds between a standby's tries for the lock
IDLE_CHECK = 30.0          # seconds of quiet after which the link is checked
CATCH_UP_LIMIT = 10000


# RQ forks its scheduler from the worker, at start-up or later. A child
# holding a copy of the listening socket would keep the session, and the
# leader's lock, alive after the worker died: children close their copies.
_sockets: set[int] = set()


def _close_inherited_sockets() -> None:
    for fd in list(_sockets):
        try:
            os.close(fd)
        except OSError:
            pass
    _sockets.clear()


os.register_at_fork(after_in_child=_close_inherited_sockets)


def _listen_connection() -> Any:
    """A psycopg2 connection of its own, out of SQLAlchemy's pool."""
    fairy = model.meta.engine.raw_connection()
    fairy.detach()
    conn = getattr(fairy, "driver_connection", None) or fairy.connection
    conn.rollback()
    conn.autocommit = True
    return conn


class Dispatcher:

    def __init__(self) -> None:
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None
        self._redis_down = False

    def start(self) -> "Dispatcher":
        self._thread = threading.Thread(target=self._run, daemon=True,
                                        name="webhooks-dispatcher")
        self._thread.start()
        return self

    def stop(self, timeout: float = 5) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def _run(self) -> None:
        delay = 1.0
        while not self._stop.is_set():
            try:
                self._serve()
                delay = 1.0
            except Exception as e:  # database gone, and the like
                log.warning("webhooks dispatcher: %s; trying again in %ss",
                            e, delay)
                self._stop.wait(delay)
                delay = min(30.0, delay * 2)

    def _serve(self) -> None:
        conn = _listen_connection()
        fd = conn.fileno()
        _sockets.add(fd)
        try:
            cur = conn.cursor()
            while True:
                cur.execute("SELECT pg_try_advisory_lock(%s)",
                            (_LEADER_LOCK,))
                if cur.fetchone()[0]:
                    break
                if self._stop.wait(STANDBY_POLL):
                    return
            cur.execute("LISTEN " + CHANNEL)
            # what was committed while no one listened
            cur.execute("SELECT id FROM webhooks_event WHERE fanned_out IS "
                        "NULL ORDER BY created LIMIT %s", (CATCH_UP_LIMIT,))
            backlog = [row[0] for row in cur.fetchall()]
            log.info("webhooks dispatcher: listening (%d events to catch "
                     "up)", len(backlog))
            quiet_since = time.monotonic()
            while not self._stop.is_set():
                # notifications that came with a query's answer wait in
                # conn.notifies, not on the socket: take them every time
                backlog.extend(n.payload for n in conn.notifies)
                conn.notifies.clear()
                backlog = self._enqueue(backlog)
                # a second at most: a stopping worker is not kept waiting,
                # and events held while Redis is down are tried again
                if select.select([conn], [], [], 1.0)[0]:
                    conn.poll()
                    quiet_since = time.monotonic()
                elif time.monotonic() - quiet_since >= IDLE_CHECK:
                    cur.execute("SELECT 1")  # raises if the link is dead
                    quiet_since = time.monotonic()
        finally:
            _sockets.discard(fd)
            conn.close()

    def _enqueue(self, event_ids: list[str]) -> list[str]:
        """Enqueue in order; what could not be enqueued yet."""
        for done, event_id in enumerate(event_ids):
            try:
                jobs.push_fan_out(event_id)
            except redis.exceptions.RedisError as e:
                if not self._redis_down:  # once per outage, not every second
                    log.warning("webhooks dispatcher: cannot reach Redis "
                                "(%s); holding %d events", e,
                                len(event_ids) - done)
                self._redis_down = True
                return event_ids[done:]
        if self._redis_down and event_ids:
            log.info("webhooks dispatcher: Redis is back")
            self._redis_down = False
        return []
