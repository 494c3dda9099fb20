"""The queue's health as the admin page shows it (health.py)."""
from __future__ import annotations

import datetime
import re

import pytest

import ckan.model as model
from ckan.tests import factories, helpers

from ckanext.webhooks import health
from ckanext.webhooks.model import Delivery, utcnow
from ckanext.webhooks.tests.receiver import Answer

pytestmark = pytest.mark.usefixtures("webhooks")


@pytest.fixture
def no_workers(clean_webhooks_queue):
    """Forget workers that earlier tests killed: Redis keeps a dead
    worker's registration until its TTL runs out."""
    import rq
    for worker in rq.Worker.all(connection=clean_webhooks_queue.connection,
                                queue=clean_webhooks_queue):
        worker.register_death()


def test_pending_messages_their_due_ones_and_the_oldest(receiver, run_jobs):
    assert health.message_counts() == {
        "pending": 0, "due": 0, "oldest_age": None, "oldest": None}
    receiver.answer("/hook", Answer(status=503))
    hook_id = helpers.call_action("webhook_create", topic="dataset/create",
                                  address=receiver.url())
    retried = helpers.call_action("webhook_ping", id=hook_id)
    run_jobs()  # fails once: waits for its retry
    waiting = helpers.call_action("webhook_ping", id=hook_id)  # not run yet
    an_hour_ago = utcnow() - datetime.timedelta(hours=1)
    model.Session.query(Delivery).filter(Delivery.id == waiting).update(
        {"created": an_hour_ago})
    model.Session.commit()

    counts = health.message_counts()
    assert counts["pending"] == 2
    assert counts["due"] == 1  # the retry is due in a few seconds only
    assert counts["oldest"] == an_hour_ago
    assert 3590 <= counts["oldest_age"] <= 3700
    assert retried != waiting


def test_events_waiting_for_fan_out():
    assert health.event_counts()["waiting"] == 0
    factories.Dataset()  # no dispatcher runs here: its event waits
    counts = health.event_counts()
    assert counts["waiting"] == 1
    assert counts["oldest_age"] is not None and counts["oldest_age"] < 60


def test_workers_seen_recently(no_workers):
    from ckanext.webhooks.worker import WebhooksWorker
    assert health.workers_seen() == {"seen": [], "silent": 0}
    worker = WebhooksWorker()
    worker.register_birth()
    try:
        worker.heartbeat()
        seen = health.workers_seen()
        assert [w["name"] for w in seen["seen"]] == [worker.name]
        assert seen["seen"][0]["pid"] == worker.pid
        assert seen["silent"] == 0
        # longer without a report than a running worker would be: still
        # registered, not seen
        later = utcnow() + datetime.timedelta(
            seconds=worker.worker_ttl + 120)
        assert health.workers_seen(later) == {"seen": [], "silent": 1}
    finally:
        worker.register_death()
    assert health.workers_seen() == {"seen": [], "silent": 0}


def test_the_admin_page_names_the_workers(app, no_workers):
    from ckanext.webhooks.tests.test_views import Browser
    from ckanext.webhooks.worker import WebhooksWorker
    admin = factories.SysadminWithToken()
    browser = Browser(app, {"Authorization": admin["token"]})
    none = browser.get("/ckan-admin/webhooks").body
    assert "None. Nothing is delivered until a worker runs" in none
    worker = WebhooksWorker()
    worker.register_birth()
    try:
        worker.set_state("idle")  # as a running worker waiting for jobs
        worker.heartbeat()
        page = browser.get("/ckan-admin/webhooks").body
    finally:
        worker.register_death()
    workers = re.search(r'<dd[^>]*id="webhooks-queue-workers">(.*?)</dd>',
                        page, re.S).group(1)
    assert worker.name in workers
    assert "pid {}, waiting for jobs".format(worker.pid) in workers
