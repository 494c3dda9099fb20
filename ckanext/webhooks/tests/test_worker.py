"""``ckan webhooks worker`` as operators run it: one SIGTERM stops it in
every state, outages included, with nothing lost; a second exits at once;
a failed engine ends the process non-zero.

Real worker processes, a Redis server and a PostgreSQL cluster of the
test's own (so the machine's servers are never touched).
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest
import sqlalchemy as sa

import ckan.model as model
from ckan.tests import factories

from ckanext.webhooks.tests import processes
from ckanext.webhooks.tests.factories import HookFactory
from ckanext.webhooks.tests.receiver import Answer

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("webhooks")]

# worker_options(): attempts time out after 2 s; the worker must be gone
# within timeout plus a few seconds (the contract), here plus 10
TIMEOUT = 2
STOPPED_WITHIN = TIMEOUT + 10


def _exits_within(process: subprocess.Popen, seconds: float) -> int:
    try:
        return process.wait(seconds)
    except subprocess.TimeoutExpired:
        raise AssertionError("the worker still runs {:g} s after the "
                             "signal; its log:\n{}".format(
                                 seconds, _log(process)[-3000:])) from None


def _log(process: subprocess.Popen) -> str:
    with open(process.log_path) as f:
        return f.read()


def _delivered(receiver, dataset_ids: list[str], timeout: float) -> None:
    """Every dataset's event reached the receiver (at least once)."""
    deadline = time.monotonic() + timeout
    while True:
        got = {r.json["data"]["id"] for r in receiver.requests}
        if set(dataset_ids) <= got:
            return
        assert time.monotonic() < deadline, (
            "not delivered: {}".format(set(dataset_ids) - got))
        time.sleep(0.2)


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_one_signal_during_a_redis_outage_stops_the_worker_losing_nothing(
        own_redis, workers, receiver, signum):
    HookFactory(receiver=receiver, path="/slow")
    receiver.always("/slow", lambda got: Answer(204, delay=1.0))
    worker = workers(**processes.worker_options(own_redis.url))
    processes.wait_until_listening(worker)
    own_redis.stop()
    datasets = [factories.Dataset()["id"] for _ in range(3)]
    receiver.wait_for(1, "/slow", arrived=True)  # attempts in flight
    worker.send_signal(signum)
    assert _exits_within(worker, STOPPED_WITHIN) == 0
    assert "worker stopped" in _log(worker)
    # what it did not finish, the next worker delivers
    processes.wait_until_listening(
        workers(**processes.worker_options(own_redis.url)))
    _delivered(receiver, datasets, timeout=30)


def test_one_sigterm_during_a_postgresql_outage_stops_the_worker_in_time(
        request, tmp_path, own_postgres, own_redis, receiver):
    """The database is gone while attempts are in flight: their outcomes
    cannot be recorded, yet the worker exits in time; once the database is
    back, the next worker delivers them again (their leases ended)."""
    ini = processes.private_ckan(
        os.path.abspath(request.config.getoption("ckan_ini")),
        tmp_path / "private.ini", own_postgres,
        **{"ckan.redis.url": own_redis.url})
    receiver.always("/slow", lambda got: Answer(204, delay=1.0))
    processes.run_actions(ini, ("webhook_create", {
        "topic": "dataset/create", "address": receiver.url("/slow")}))
    first = processes.start([processes.CKAN, "-c", str(ini), "webhooks",
                             "worker"], tmp_path / "first.log")
    request.addfinalizer(lambda: processes.stop(first))
    processes.wait_until_listening(first)
    created = processes.run_actions(ini, *[
        ("package_create", {"name": "outage-{}".format(i)})
        for i in range(3)])
    receiver.wait_for(1, "/slow", arrived=True)
    own_postgres.stop()
    first.send_signal(signal.SIGTERM)
    assert _exits_within(first, STOPPED_WITHIN) == 0
    assert "stopping without the database" in _log(first) \
        or "worker stopped" in _log(first)

    own_postgres.start()
    second = processes.start([processes.CKAN, "-c", str(ini), "webhooks",
                              "worker"], tmp_path / "second.log")
    request.addfinalizer(lambda: processes.stop(second))
    _delivered(receiver, [c["result"] for c in created], timeout=60)


def test_a_second_signal_exits_at_once(own_redis, workers, receiver):
    HookFactory(receiver=receiver, path="/hung")
    receiver.always("/hung", lambda got: Answer(204, delay=30))
    worker = workers(**processes.worker_options(
        own_redis.url, **{"ckanext.webhooks.timeout": 20}))
    processes.wait_until_listening(worker)
    factories.Dataset()
    receiver.wait_for(1, "/hung", arrived=True)
    worker.send_signal(signal.SIGTERM)
    time.sleep(1)
    assert worker.poll() is None  # finishing its attempt (up to 20 s)
    asked = time.monotonic()
    worker.send_signal(signal.SIGTERM)
    assert _exits_within(worker, 5) != 0
    assert time.monotonic() - asked < 3
    assert "a second SIGTERM" in _log(worker)


# a worker whose engine breaks down: the task that ends attempts at their
# deadline dies (a fault made for this test, in the real worker process)
_FAILING_WORKER = """
import sys
from ckanext.webhooks.pipeline import engine
def broken(self):
    raise RuntimeError("the watch broke")
engine.Engine._watch = broken
from ckan.cli.cli import ckan
sys.argv = ["ckan", "-c", sys.argv[1], "webhooks", "worker"]
ckan()
"""


def test_a_worker_whose_engine_fails_exits_non_zero_and_shows_as_gone(
        request, tmp_path, cli):
    from ckan.cli.cli import ckan
    ini = processes.write_ini(
        os.path.abspath(request.config.getoption("ckan_ini")),
        tmp_path / "worker.ini", **processes.worker_options())
    worker = processes.start([sys.executable, "-c", _FAILING_WORKER,
                              str(ini)], tmp_path / "worker.log")
    request.addfinalizer(lambda: processes.stop(worker))
    assert _exits_within(worker, 30) == 1
    log = _log(worker)
    assert "the delivery engine failed" in log
    assert "the watch broke" in log
    # its heartbeat stopped: status shows it gone (once its last beat is
    # older than a live worker's would be)
    model.Session.execute(sa.text(
        "UPDATE webhooks_worker SET last_seen = last_seen - interval "
        "'1 minute' WHERE pid = :pid"), {"pid": worker.pid})
    model.Session.commit()
    result = cli.invoke(ckan, ["webhooks", "status"])
    [line] = [line for line in result.output.splitlines()
              if ":{}:".format(worker.pid) in line]
    assert "GONE" in line
