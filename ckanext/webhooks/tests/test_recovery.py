"""Delivery recovers by itself when PostgreSQL comes back.

Real ``ckan webhooks worker`` processes; a Redis server and a PostgreSQL
cluster of the test's own (``initdb``/``pg_ctl`` on a temporary directory
and port), so the machine's servers are never touched.
"""
from __future__ import annotations

import os
import signal
import time

import pytest


from ckanext.webhooks.tests import processes

ACTION_RUNNER = os.path.join(os.path.dirname(__file__), "action_runner.py")

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("webhooks")]


def test_delivery_resumes_within_10s_after_postgresql_restarts(
        request, tmp_path, own_postgres, own_redis, receiver):
    """The worker's engine and listener lose their connections; an event
    committed while the worker could not hear it is delivered, and one
    committed after the restart within 10 s. The worker lives on."""
    ini = processes.private_ckan(
        os.path.abspath(request.config.getoption("ckan_ini")),
        tmp_path / "private.ini", own_postgres,
        **{"ckan.redis.url": own_redis.url})
    [hook] = processes.run_actions(ini, ("webhook_create", {
        "topic": "dataset/create", "address": receiver.url()}))
    worker = processes.start([processes.CKAN, "-c", str(ini), "webhooks",
                              "worker"], tmp_path / "worker.log")
    request.addfinalizer(lambda: processes.stop(worker))
    processes.wait_until_listening(worker)

    # committed while the worker is frozen: its notification is lost with
    # the connections the restart breaks
    os.kill(worker.pid, signal.SIGSTOP)
    [before] = processes.run_actions(ini, ("package_create", {"name": "before"}))
    own_postgres.restart()
    os.kill(worker.pid, signal.SIGCONT)
    restarted = time.monotonic()
    got = receiver.wait_for(1, timeout=10)
    assert [r.json["data"]["id"] for r in got] == [before["result"]]
    assert time.monotonic() - restarted < 10

    [after] = processes.run_actions(ini, ("package_create", {"name": "after"}))
    got = receiver.wait_for(2, timeout=10)
    assert got[1].json["data"]["id"] == after["result"]
    assert time.time() - after["at"] < 10
    assert worker.poll() is None  # it lived through it

    # and once more, the worker running throughout this time
    own_postgres.restart()
    [again] = processes.run_actions(ini, ("package_create", {"name": "again"}))
    got = receiver.wait_for(3, timeout=10)
    assert got[2].json["data"]["id"] == again["result"]
    assert time.time() - again["at"] < 10
    assert worker.poll() is None
    assert len({r.headers["webhook-id"] for r in got}) == 3
    assert hook["result"]
