"""The process behind ``ckan webhooks worker``.

Two loops side by side:

- the delivery engine (``pipeline.engine``) on a thread of its own, with a
  listener that wakes it when events and messages commit. It needs only
  PostgreSQL: a Redis outage does not stop deliveries.
- RQ's worker on the webhooks queue in the main thread (jobs run in this
  process, with no fork per job: CKAN's forking worker reloads the whole
  environment for every job). It stops the worker on SIGTERM or Ctrl-C
  (warm shutdown); while Redis is down it keeps trying to reach it.

On stop the engine claims nothing more, finishes the attempts in flight
(``timeout`` at most), records them and gives back what it had claimed.
"""
from __future__ import annotations

import gc
import logging
import signal
import threading

import redis
import rq

import ckan.model as model
import ckan.plugins.toolkit as tk
from ckan.lib import jobs as ckan_jobs

from ckanext.webhooks.pipeline import listening, sweep
from ckanext.webhooks.pipeline.engine import EngineThread, run_burst

log = logging.getLogger(__name__)


class WebhooksWorker(rq.SimpleWorker):
    # RQ waits 1, 2, 4 ... 60 s between attempts to reach a Redis that is
    # down; once a second instead, so the queue is worked again within
    # seconds of Redis coming back, however long it was away. Worker class
    # attributes RQ reads in work() (RQ 1.11 to 2.x, CKAN 2.10 to 2.12) but
    # does not document: test_recovery's long Redis outage checks them.
    exponential_backoff_factor = 1.0
    max_connection_wait_time = 1.0

    def __init__(self, *args, **kwargs):
        queue = ckan_jobs.get_queue(tk.config.get("ckanext.webhooks.queue"))
        super().__init__([queue], *args, connection=queue.connection,
                         **kwargs)

    def perform_job(self, *args, **kwargs):
        try:
            return super().perform_job(*args, **kwargs)
        finally:
            model.Session.remove()


def _work_queue(stopping: threading.Event) -> None:
    """RQ's loop until a warm shutdown; through Redis outages."""
    while not stopping.is_set():
        try:
            WebhooksWorker().work(burst=False, with_scheduler=False,
                                  logging_level="INFO")
            return
        except redis.exceptions.RedisError as e:
            log.warning("webhooks: Redis is unreachable (%s); deliveries go "
                        "on, trying Redis again in a second", e)
            stopping.wait(1.0)


def run_worker(burst: bool = False) -> None:
    """Deliver until stopped; with ``burst``, deliver what is due now (and
    run what the queue holds), then return."""
    try:
        sweep.sweep()
    except Exception:
        log.exception("webhooks: initial sweep failed")
    finally:
        model.Session.remove()
    if burst:
        try:
            WebhooksWorker().work(burst=True, with_scheduler=False,
                                  logging_level="WARNING")
        except redis.exceptions.RedisError as e:
            log.warning("webhooks: Redis is unreachable (%s)", e)
        run_burst()
        return

    # CKAN, its plugins and SQLAlchemy are loaded and live as long as the
    # worker: out of the collector's sight, so that its full collections,
    # which the many short-lived objects of attempts set off, do not walk
    # them every time (measured: about 15% of the CPU per delivery)
    gc.freeze()
    engine = EngineThread().start()
    listener = listening.Listener(engine.engine).start()
    engine.engine.listening = listener.listening
    stopping = threading.Event()

    def stop(signum, frame):  # before RQ installs its own handlers
        stopping.set()
        raise SystemExit(0)

    previous = signal.signal(signal.SIGTERM, stop)
    try:
        _work_queue(stopping)
    except SystemExit:
        pass
    finally:
        signal.signal(signal.SIGTERM, previous)
        listener.stop()
        engine.stop(timeout=tk.config.get("ckanext.webhooks.timeout") + 10)
