"""Wake the engine the moment an event or a message commits.

Requests add events to ``webhooks_event`` in their own transaction, and its
trigger notifies the ``webhooks_event`` channel; actions that create or
re-schedule messages (pings, challenges, redeliveries) notify
``webhooks_wake``. PostgreSQL delivers a notification only when, and if, its
transaction commits. Every worker listens (a request never talks to Redis);
its engine also looks by itself every second, so a notification missed
while the connection was down delays nothing for long.
"""
from __future__ import annotations

import logging
import select
import threading
import time
from typing import Any, Optional

import ckan.model as model

log = logging.getLogger(__name__)

EVENTS = "webhooks_event"
WAKE = "webhooks_wake"
IDLE_CHECK = 30.0  # seconds of quiet after which the link is checked


def notify_wake() -> None:
    """Tell the workers that messages are due now (sent at commit)."""
    import sqlalchemy as sa
    model.Session.execute(sa.text("SELECT pg_notify(:channel, '')"),
                          {"channel": WAKE})


def _listen_connection() -> Any:
    """A psycopg2 connection of its own, out of SQLAlchemy's pool."""
    engine = model.meta.engine
    assert engine is not None  # CKAN's environment is loaded
    # a pool's proxy of the DBAPI connection
    fairy: Any = engine.raw_connection()
    fairy.detach()
    conn = getattr(fairy, "driver_connection", None) or fairy.connection
    conn.rollback()
    conn.autocommit = True
    return conn


class Listener:
    """A thread that LISTENs and wakes ``engine``; reconnects by itself."""

    def __init__(self, engine: Any) -> None:
        self.engine = engine
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None
        self.listening = threading.Event()
        self._down_since: Optional[float] = None

    def start(self) -> "Listener":
        self._thread = threading.Thread(target=self._run, daemon=True,
                                        name="webhooks-listener")
        self._thread.start()
        return self

    def stop(self, timeout: float = 5) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self._serve()
            except Exception as e:  # the database went away, and the like
                self.listening.clear()
                if self._down_since is None:  # once per outage
                    self._down_since = time.monotonic()
                    log.warning("webhooks listener: %s; trying again every "
                                "second", e)
                self._stop.wait(1.0)
            else:
                self._down_since = None

    def _serve(self) -> None:
        conn = _listen_connection()
        try:
            cur = conn.cursor()
            cur.execute("LISTEN " + EVENTS)
            cur.execute("LISTEN " + WAKE)
            self.listening.set()
            self._down_since = None  # the next outage is logged again
            log.info("webhooks: listening for events")
            # whatever was committed while no one listened
            self.engine.wake(events=True)
            quiet_since = time.monotonic()
            while not self._stop.is_set():
                if select.select([conn], [], [], 1.0)[0]:
                    conn.poll()
                    quiet_since = time.monotonic()
                elif time.monotonic() - quiet_since >= IDLE_CHECK:
                    cur.execute("SELECT 1")  # raises if the link is dead
                    quiet_since = time.monotonic()
                if conn.notifies:
                    events = any(n.channel == EVENTS for n in conn.notifies)
                    conn.notifies.clear()
                    self.engine.wake(events=events)
        finally:
            self.listening.clear()
            conn.close()
