"""Delivery recovers by itself when Redis or PostgreSQL come back.

Real ``ckan webhooks worker`` processes; a Redis server and a PostgreSQL
cluster of the test's own (``initdb``/``pg_ctl`` on a temporary directory
and port), so the machine's servers are never touched.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from ckan.lib import jobs as ckan_jobs
import ckan.plugins.toolkit as tk
from ckan.tests import factories

from ckanext.webhooks.tests import processes
from ckanext.webhooks.tests.factories import HookFactory

ACTION_RUNNER = os.path.join(os.path.dirname(__file__), "action_runner.py")

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("webhooks")]


def test_queue_and_deliveries_resume_within_5s_after_a_long_redis_outage(
        own_redis, workers, receiver):
    """RQ alone would wait up to 60 s between attempts to reach Redis (1,
    2, 4, 8 ... s); the worker tries every second."""
    HookFactory(receiver=receiver)
    worker = workers(**processes.worker_options(own_redis.url))
    processes.wait_until_listening(worker)

    own_redis.stop()
    time.sleep(16)  # RQ's back-off would be at 16 s by now
    own_redis.start()
    back = time.monotonic()

    dataset = factories.Dataset()
    got = receiver.wait_for(1, timeout=5)
    assert [r.json["data"]["id"] for r in got] == [dataset["id"]]

    queue = ckan_jobs.get_queue(tk.config.get("ckanext.webhooks.queue"))
    job = queue.enqueue("os.getpid")
    while job.get_status(refresh=True) != "finished":
        assert time.monotonic() - back < 5, "the queue is not worked again"
        time.sleep(0.1)
    # RQ 1.11 (CKAN 2.10) has return_value as an attribute, later a method
    result = job.return_value
    assert (result() if callable(result) else result) == worker.pid
    assert worker.poll() is None


@pytest.fixture
def own_postgres():
    try:
        server = processes.OwnPostgres()
    except RuntimeError as e:
        pytest.skip(str(e))
    try:
        server.create()
        yield server
        server.stop()
    finally:
        server.remove()


def _actions(ini, *calls):
    """Run actions in a CKAN process against ``ini``'s database."""
    lines = "".join("{} {}\n".format(action, json.dumps(data))
                    for action, data in calls)
    done = subprocess.run([sys.executable, ACTION_RUNNER, str(ini)],
                          input=lines, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    return [json.loads(line) for line in done.stdout.splitlines()
            if line.startswith("{")]


def test_delivery_resumes_within_10s_after_postgresql_restarts(
        request, tmp_path, own_postgres, own_redis, receiver):
    """The worker's engine and listener lose their connections; an event
    committed while the worker could not hear it is delivered, and one
    committed after the restart within 10 s. The worker lives on."""
    test_ini = os.path.abspath(request.config.getoption("ckan_ini"))
    ini = processes.write_ini(
        test_ini, tmp_path / "private.ini", **processes.worker_options(
            own_redis.url, **{"sqlalchemy.url": own_postgres.url}))
    for args in (["db", "init"], ["db", "upgrade", "-p", "webhooks"]):
        subprocess.run([processes.CKAN, "-c", str(ini), *args], check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    [hook] = _actions(ini, ("webhook_create", {
        "topic": "dataset/create", "address": receiver.url()}))
    worker = processes.start([processes.CKAN, "-c", str(ini), "webhooks",
                              "worker"], tmp_path / "worker.log")
    request.addfinalizer(lambda: processes.stop(worker))
    processes.wait_until_listening(worker)

    # committed while the worker is frozen: its notification is lost with
    # the connections the restart breaks
    os.kill(worker.pid, signal.SIGSTOP)
    [before] = _actions(ini, ("package_create", {"name": "before"}))
    own_postgres.restart()
    os.kill(worker.pid, signal.SIGCONT)
    restarted = time.monotonic()
    got = receiver.wait_for(1, timeout=10)
    assert [r.json["data"]["id"] for r in got] == [before["result"]]
    assert time.monotonic() - restarted < 10

    [after] = _actions(ini, ("package_create", {"name": "after"}))
    got = receiver.wait_for(2, timeout=10)
    assert got[1].json["data"]["id"] == after["result"]
    assert time.time() - after["at"] < 10
    assert worker.poll() is None  # it lived through it

    # and once more, the worker running throughout this time
    own_postgres.restart()
    [again] = _actions(ini, ("package_create", {"name": "again"}))
    got = receiver.wait_for(3, timeout=10)
    assert got[2].json["data"]["id"] == again["result"]
    assert time.time() - again["at"] < 10
    assert worker.poll() is None
    assert len({r.headers["webhook-id"] for r in got}) == 3
    assert hook["result"]
