"""The process behind ``ckan webhooks worker``.

An RQ worker on the webhooks queue that runs jobs in its own process (no fork
per job: CKAN's forking worker reloads the whole environment for every job),
runs RQ's scheduler so delayed retries happen, sweeps the database every
``ckanext.webhooks.sweep_interval`` seconds for work whose job was lost, and
runs a dispatcher thread that enqueues events as they commit (``dispatch``).
"""
from __future__ import annotations

import logging
import time

import rq

import ckan.model as model
import ckan.plugins.toolkit as tk
from ckan.lib import jobs as ckan_jobs

from ckanext.webhooks import dispatch, jobs

log = logging.getLogger(__name__)


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


def run_worker(burst: bool = False) -> None:
    """Sweep once for anything left behind, then work the queue; a worker
    that keeps running also dispatches new events as they commit."""
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
