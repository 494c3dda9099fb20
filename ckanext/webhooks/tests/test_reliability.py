"""Nothing is lost when Redis, a worker or a receiver fails.

These tests run real `ckan webhooks worker` processes, really stop a Redis
server and really kill a worker with SIGKILL.
"""
from __future__ import annotations

import datetime
import signal
import time

import pytest

import ckan.model as model
import ckan.plugins.toolkit as tk
from ckan.tests import factories, helpers

from ckanext.webhooks.pipeline import sweep as sweeping
from ckanext.webhooks.model import Message, Hook
from ckanext.webhooks.tests import processes
from ckanext.webhooks.tests.factories import HookFactory
from ckanext.webhooks.tests.receiver import Answer

pytestmark = pytest.mark.usefixtures("webhooks")


@pytest.mark.slow
def test_events_are_delivered_as_they_commit(own_redis, workers, receiver):
    HookFactory(receiver=receiver)
    processes.wait_until_listening(
        workers(**processes.worker_options(own_redis.url)))
    started = time.monotonic()
    dataset = factories.Dataset()
    got = receiver.wait_for(1, timeout=20)
    assert [r.json["data"]["id"] for r in got] == [dataset["id"]]
    # woken by the commit's notification, not by a poll or a sweep
    assert time.monotonic() - started < 1.0


@pytest.mark.slow
@pytest.mark.parametrize("kill", ["group", "pid"])
def test_another_worker_delivers_when_one_is_killed(own_redis, workers,
                                                    receiver, kill):
    HookFactory(receiver=receiver)
    options = processes.worker_options(own_redis.url)
    first, second = workers(**options), workers(**options)
    processes.wait_until_listening(first, second)
    if kill == "group":  # as systemd would stop the service
        processes.stop(first)
    else:
        first.send_signal(signal.SIGKILL)
        first.wait(10)
    dataset = factories.Dataset()
    got = receiver.wait_for(1, timeout=20)
    assert [r.json["data"]["id"] for r in got] == [dataset["id"]]


@pytest.mark.slow
def test_deliveries_go_on_while_redis_is_down(own_redis, workers, receiver):
    """Delivery needs only PostgreSQL: the worker finds its work there."""
    hook = HookFactory(receiver=receiver)
    worker = workers(**processes.worker_options(own_redis.url))
    processes.wait_until_listening(worker)

    own_redis.stop()
    dataset = factories.Dataset()
    got = receiver.wait_for(1, timeout=10)
    assert len(got) == 1
    payload = got[0].verify(hook["secret"])
    assert payload["type"] == "dataset/create"
    assert payload["data"]["id"] == dataset["id"]

    own_redis.start()
    second = factories.Dataset()
    got = receiver.wait_for(2, timeout=10)
    assert got[1].json["data"]["id"] == second["id"]
    assert worker.poll() is None  # the worker lived through it


@pytest.mark.slow
def test_a_worker_started_while_redis_is_down_delivers(own_redis, workers,
                                                       receiver):
    HookFactory(receiver=receiver)
    own_redis.stop()
    worker = workers(**processes.worker_options(own_redis.url))
    processes.wait_until_listening(worker)
    dataset = factories.Dataset()
    got = receiver.wait_for(1, timeout=10)
    assert [r.json["data"]["id"] for r in got] == [dataset["id"]]
    assert worker.poll() is None


@pytest.mark.slow
def test_attempt_of_a_killed_worker_is_sent_again_with_same_id(
        own_redis, workers, receiver):
    receiver.answer("/hook", Answer(204, delay=1.5))
    hook_id = HookFactory(receiver=receiver)["id"]
    options = processes.worker_options(own_redis.url,
                              **{"ckanext.webhooks.concurrency": 1})
    first = workers(**options)
    factories.Dataset()
    assert receiver.wait_for(1, arrived=True, timeout=20)
    first.send_signal(signal.SIGKILL)  # dies in the middle of the attempt
    first.wait(10)

    workers(**options)
    arrivals = receiver.wait_for(2, arrived=True, timeout=60)
    assert len(arrivals) == 2
    assert arrivals[0].headers["webhook-id"] == \
        arrivals[1].headers["webhook-id"]
    assert receiver.wait_for(1, timeout=10)

    deadline = time.monotonic() + 10
    rows = []
    while time.monotonic() < deadline:
        # the message shows once an attempt's outcome (and with it the
        # body judged for the owner) is recorded: the killed worker's never
        # was
        rows = helpers.call_action("webhook_delivery_list", id=hook_id)
        if rows and rows[0]["status"] == "succeeded":
            break
        time.sleep(0.2)
    [row] = rows
    assert row["status"] == "succeeded"
    assert row["attempts"] == 2


@pytest.mark.slow
# 40 hooks at one address: more than the cap per address allows
@pytest.mark.ckan_config("ckanext.webhooks.max_hooks_per_address", "0")
def test_two_workers_never_send_the_same_attempt_twice(
        own_redis, workers, receiver):
    receiver.always("/many", lambda got: Answer(204, delay=0.05))
    hooks = [HookFactory(receiver=receiver, path="/many") for _ in range(15)]
    hooks += [HookFactory(receiver=receiver, path="/many?n={}".format(n))
              for n in range(25)]
    factories.Dataset()
    # both workers race for the event and its 40 messages
    options = processes.worker_options(own_redis.url,
                              **{"ckanext.webhooks.concurrency": 4})
    workers(**options)
    workers(**options)

    got = receiver.wait_for(len(hooks), timeout=60, arrived=True)
    time.sleep(2)  # room for any duplicate to show up
    ids = [r.headers["webhook-id"] for r in receiver.arrived]
    assert len(ids) == len(hooks) == len(got)
    assert len(set(ids)) == len(hooks)


@pytest.mark.slow
def test_a_claim_sent_for_longer_than_a_lease_is_not_sent_twice(
        own_redis, workers, receiver):
    """With a 1 s timeout a lease lasts 2 * (1 + 1) + 5 = 9 s; sending these
    16 messages one at a time takes about 11 s. The worker renews the leases
    of what it holds while it sends, so the second worker, looking every
    second, finds nothing to take over."""
    count = 16
    for n in range(count):
        path = "/slow/{}".format(n)
        receiver.always(path, lambda got: Answer(204, delay=0.7))
        HookFactory(receiver=receiver, path=path)
    options = processes.worker_options(own_redis.url, **{
        "ckanext.webhooks.concurrency": 1, "ckanext.webhooks.timeout": 1})
    workers(**options)
    factories.Dataset()
    assert receiver.wait_for(1, arrived=True, timeout=30)
    workers(**options)

    receiver.wait_for(count, timeout=60, arrived=True)
    time.sleep(3)  # room for any duplicate to show up
    ids = [r.headers["webhook-id"] for r in receiver.arrived]
    assert len(ids) == count
    assert len(set(ids)) == count


@pytest.mark.slow
def test_two_workers_share_one_large_event(own_redis, workers, receiver):
    """At concurrency 1 one worker sends one message at a time, each
    answered after 0.3 s, so its requests start at least 0.3 s apart. Two
    starts closer than that mean the second worker helped with the same
    event."""
    starts = []

    def slow(got):
        starts.append(time.monotonic())
        return Answer(204, delay=0.3)

    count = 24
    for n in range(count):
        path = "/big/{}".format(n)
        receiver.always(path, slow)
        HookFactory(receiver=receiver, path=path)
    options = processes.worker_options(own_redis.url,
                              **{"ckanext.webhooks.concurrency": 1})
    processes.wait_until_listening(workers(**options), workers(**options))
    factories.Dataset()

    receiver.wait_for(count, timeout=60)
    ids = [r.headers["webhook-id"] for r in receiver.arrived]
    assert len(ids) == len(set(ids)) == count
    starts.sort()
    assert min(b - a for a, b in zip(starts, starts[1:])) < 0.2


@pytest.mark.slow
def test_worker_runs_delayed_retries(
        own_redis, workers, receiver):
    receiver.answer("/hook", Answer(500), Answer(503))
    hook_id = HookFactory(receiver=receiver)["id"]
    workers(**processes.worker_options(
        own_redis.url, **{"ckanext.webhooks.retry_schedule": "1 1 1",
                          "ckanext.webhooks.sweep_interval": 300}))
    factories.Dataset()
    got = receiver.wait_for(3, timeout=30)
    assert [r.headers["webhook-id"] for r in got] == \
        [got[0].headers["webhook-id"]] * 3
    [row] = helpers.call_action("webhook_delivery_list", id=hook_id)
    assert row["attempts"] == 3
    assert row["status"] in ("succeeded", "pending")


# --- the sweep's housekeeping (run in-process) ---------------------------

def _age(model_class, ident, **columns):
    model.Session.query(model_class).filter_by(id=ident).update(columns)
    model.Session.commit()


def test_hook_failing_for_five_days_is_disabled_until_a_good_ping(
        receiver, run_jobs):
    hook_id = HookFactory(receiver=receiver)["id"]
    _age(Hook, hook_id, failing_since=datetime.datetime.utcnow()
         - datetime.timedelta(days=5, minutes=1))
    sweeping.sweep()
    hook = helpers.call_action("webhook_show", id=hook_id)
    assert hook["status"] == "disabled"
    assert hook["status_reason"]

    factories.Dataset()
    run_jobs()  # fanned out while the hook is disabled: nothing for it
    helpers.call_action("webhook_ping", id=hook_id)
    run_jobs()
    assert [r.json["type"] for r in receiver.requests] == ["webhook/ping"]
    assert helpers.call_action("webhook_show", id=hook_id)["status"] == \
        "active"


@pytest.mark.ckan_config("ckanext.webhooks.verify_intent", "true")
def test_unverified_hook_is_removed_after_pending_ttl(receiver, run_jobs):
    receiver.always("/hook", lambda got: Answer(204))  # never echoes
    hook_id = HookFactory(receiver=receiver)["id"]
    run_jobs()
    assert helpers.call_action("webhook_show", id=hook_id)["status"] == \
        "pending"
    # pending since its challenge (sent when it was created)
    long_ago = datetime.datetime.utcnow() - datetime.timedelta(hours=24,
                                                               minutes=1)
    _age(Hook, hook_id, created=long_ago, last_challenge=long_ago)
    sweeping.sweep()
    with pytest.raises(tk.ObjectNotFound):
        helpers.call_action("webhook_show", id=hook_id)


@pytest.mark.ckan_config("ckanext.webhooks.delivery_retention_days", "7")
def test_old_finished_deliveries_are_pruned(receiver, run_jobs):
    hook_id = HookFactory(receiver=receiver)["id"]
    factories.Dataset()
    factories.Dataset()
    run_jobs()
    old, new = helpers.call_action("webhook_delivery_list", id=hook_id)
    _age(Message, old["id"], created=datetime.datetime.utcnow()
         - datetime.timedelta(days=8))
    sweeping.sweep()
    remaining = helpers.call_action("webhook_delivery_list", id=hook_id)
    assert [d["id"] for d in remaining] == [new["id"]]


# --- operators' commands --------------------------------------------------

def test_cli_lists_shows_redelivers_and_deletes(cli, receiver, run_jobs):
    from ckan.cli.cli import ckan
    hook_id = HookFactory(receiver=receiver)["id"]
    factories.Dataset()
    run_jobs()

    result = cli.invoke(ckan, ["webhooks", "list"])
    assert result.exit_code == 0, result.output
    assert hook_id in result.output and receiver.url() in result.output

    result = cli.invoke(ckan, ["webhooks", "show", hook_id])
    assert result.exit_code == 0 and '"topic": "dataset/create"' in \
        result.output

    result = cli.invoke(ckan, ["webhooks", "deliveries", hook_id])
    # CKAN may log to the same output first (logging stays on, as it should)
    rows = [line for line in result.output.splitlines()
            if line.startswith("msg_")]
    message_id = rows[0].split()[0]
    assert "succeeded" in rows[0]

    result = cli.invoke(ckan, ["webhooks", "redeliver", hook_id, message_id])
    assert result.exit_code == 0, result.output
    run_jobs()
    assert [r.headers["webhook-id"] for r in receiver.requests] == \
        [message_id, message_id]

    result = cli.invoke(ckan, ["webhooks", "prune", "--days", "0"])
    assert result.exit_code == 0 and "Pruned 1" in result.output

    result = cli.invoke(ckan, ["webhooks", "delete", hook_id])
    assert result.exit_code == 0
    result = cli.invoke(ckan, ["webhooks", "show", hook_id])
    assert result.exit_code != 0 and "not found" in result.output
