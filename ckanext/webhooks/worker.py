"""The process behind ``ckan webhooks worker``.

An RQ worker on the webhooks queue that runs jobs in its own process (no fork
per job: CKAN's forking worker reloads the whole environment for every job),
runs RQ's scheduler so delayed retries happen, sweeps the database every
``ckanext.webhooks.sweep_interval`` seconds for work whose job was lost, and
runs a dispatcher thread that enqueues events as they commit (``dispatch``).
"""
from __future__ import annotations

import logging
import os
import time

import rq

import ckan.model as model
import ckan.plugins.toolkit as tk
from ckan.lib import jobs as ckan_jobs

from ckanext.webhooks import dispatch, jobs

log = logging.getLogger(__name__)


def _close_inherited_redis_sockets() -> None:
    """In a child forked from the worker (RQ's scheduler): close its copies
    of the worker's Redis sockets.

    Otherwise, once the worker itself is killed, the child keeps the
    worker's connection open and Redis goes on treating its blocked
    ``BLMOVE`` as a live client: the next job is handed to the dead worker
    and waits for the sweep. The child makes connections of its own.
    """
    import ckan.lib.redis as ckan_redis
    pool = ckan_redis._connection_pool
    if pool is None:
        return
    connections = list(getattr(pool, "_available_connections", ())) + \
        list(getattr(pool, "_in_use_connections", ()))
    for connection in connections:
        sock = getattr(connection, "_sock", None)
        if sock is not None:
            try:
                sock.close()  # this process's copy only: no shutdown
            except OSError:
                pass
            connection._sock = None


class WebhooksWorker(rq.SimpleWorker):

    def __init__(self, *args, **kwargs):
        self.sweep_interval = max(1, tk.config.get(
            "ckanext.webhooks.sweep_interval"))
        queue = ckan_jobs.get_queue(tk.config.get("ckanext.webhooks.queue"))
        super().__init__([queue], *args, connection=queue.connection,
                         **kwargs)
        self._next_sweep = time.monotonic() + self.sweep_interval

    @property
    def dequeue_timeout(self):
        # wake up from waiting on Redis at least once per sweep interval
        return max(1, min(self.worker_ttl - 15, self.sweep_interval))

    def dequeue_job_and_maintain_ttl(self, timeout, *args, **kwargs):
        # RQ < 1.12 (CKAN 2.10) has no dequeue_timeout: it waits
        # default_worker_ttl - 15 (405) seconds, and sweeps would stop
        if timeout is not None:
            timeout = max(1, min(timeout, self.sweep_interval))
        return super().dequeue_job_and_maintain_ttl(timeout, *args, **kwargs)

    @property
    def should_run_maintenance_tasks(self):
        return time.monotonic() >= self._next_sweep or \
            super().should_run_maintenance_tasks

    def run_maintenance_tasks(self):
        if time.monotonic() >= self._next_sweep:
            self._next_sweep = time.monotonic() + self.sweep_interval
            try:
                jobs.sweep(grace=self.sweep_interval)
            except Exception:
                log.exception("webhooks: sweep failed; next in %ss",
                              self.sweep_interval)
        if super().should_run_maintenance_tasks:
            super().run_maintenance_tasks()

    def perform_job(self, *args, **kwargs):
        try:
            return super().perform_job(*args, **kwargs)
        finally:
            model.Session.remove()


_at_fork_registered = False


def run_worker(burst: bool = False) -> None:
    """Sweep once for anything left behind, then work the queue; a worker
    that keeps running also dispatches new events as they commit."""
    global _at_fork_registered
    if not _at_fork_registered:
        os.register_at_fork(after_in_child=_close_inherited_redis_sockets)
        _at_fork_registered = True
    try:
        jobs.sweep(grace=0)
    except Exception:
        log.exception("webhooks: initial sweep failed")
    dispatcher = None if burst else dispatch.Dispatcher().start()
    try:
        WebhooksWorker().work(burst=burst, with_scheduler=True,
                              logging_level="INFO")
    finally:
        if dispatcher is not None:
            dispatcher.stop()
