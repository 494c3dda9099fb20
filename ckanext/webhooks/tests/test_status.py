"""``ckan webhooks status``: what an operator sees, and its exit status as a
health check."""
from __future__ import annotations

import datetime
import json
import time

import pytest

import ckan.model as model
from ckan.tests import factories, helpers

from ckanext.webhooks import tables
from ckanext.webhooks.model import Event, Hook
from ckanext.webhooks.tests import processes
from ckanext.webhooks.tests.factories import HookFactory


def _status(cli, *args):
    from ckan.cli.cli import ckan
    result = cli.invoke(ckan, ["webhooks", "status", "--json", *args])
    # CKAN may log to the same output first
    output = result.output
    return result.exit_code, json.loads(output[output.index("\n{") + 1:]
                                        if not output.startswith("{")
                                        else output)


def _text(cli):
    from ckan.cli.cli import ckan
    result = cli.invoke(ckan, ["webhooks", "status"])
    if result.exception and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result.exit_code, result.output


@pytest.fixture(autouse=True)
def no_earlier_workers():
    """Workers of earlier tests were killed (SIGKILL): their heartbeats
    would still count as recent."""
    import sqlalchemy as sa
    try:
        model.Session.execute(sa.text("DELETE FROM webhooks_worker"))
        model.Session.commit()
    except sa.exc.ProgrammingError:  # no tables yet: nothing to forget
        model.Session.rollback()
    yield


@pytest.mark.usefixtures("webhooks")
def test_a_quiet_site_is_healthy(cli):
    code, report = _status(cli)
    assert code == 0
    assert report["schema"] == "ready"
    assert report["pending"] == report["events_waiting"] == 0
    assert report["stuck"] is False
    code, text = _text(cli)
    assert code == 0 and "delivery: ok" in text


@pytest.mark.usefixtures("webhooks")
def test_work_waiting_without_a_worker_is_stuck(cli, receiver):
    HookFactory(receiver=receiver)
    factories.Dataset()
    # just recorded: a worker has not had its chance yet, but none is alive
    code, report = _status(cli)
    assert report["events_waiting"] == 1
    assert report["workers_alive"] == 0
    assert code == 1 and report["stuck"]
    assert any("no worker" in p for p in report["problems"])

    # waiting for longer than --stuck-after is named too
    model.Session.query(Event).update({"created": datetime.datetime.utcnow()
                                       - datetime.timedelta(minutes=5)})
    model.Session.commit()
    code, report = _status(cli, "--stuck-after", "60")
    assert code == 1
    assert any("fanned out" in p for p in report["problems"])
    code, text = _text(cli)
    assert code == 1 and "delivery: STUCK" in text


@pytest.mark.slow
@pytest.mark.usefixtures("webhooks")
def test_a_running_worker_shows_alive_and_listening_and_delivers(
        cli, workers, receiver):
    hook_id = HookFactory(receiver=receiver)["id"]
    worker = workers(**{"ckanext.webhooks.sweep_interval": 1})
    processes.wait_until_listening(worker)
    deadline = time.monotonic() + 20
    while True:
        code, report = _status(cli)
        if report["workers_listening"] and report["last_sweep"]:
            break
        assert time.monotonic() < deadline, report
        time.sleep(0.5)
    assert code == 0
    [row] = report["workers"]
    assert row["pid"] == worker.pid and row["alive"] and row["listening"]
    assert report["workers_listening"] == [row["id"]]
    assert report["last_sweep_age"] < 10
    # RQ's registry, read from Redis (killed workers of earlier tests may
    # linger there until RQ's own heartbeat expires)
    assert worker.pid in [w["pid"] for w in report["rq_workers"]]
    code, text = _text(cli)  # the text form lists the worker, listening
    assert code == 0
    [line] = [line for line in text.splitlines()
              if line.startswith("  {0}  alive  seen ".format(row["id"]))]
    assert line.endswith("  listening")

    model.Session.query(Hook).filter_by(id=hook_id).update(
        {"failing_since": datetime.datetime.utcnow()})
    model.Session.commit()
    factories.Dataset()
    receiver.wait_for(1, timeout=10)
    code, report = _status(cli)
    assert code == 0
    assert report["hooks_failing"] == 0  # the delivery succeeded

    processes.stop(worker)  # SIGKILL: its row stays and ages
    code, report = _status(cli)
    assert report["workers"][0]["id"] == row["id"]


@pytest.mark.usefixtures("webhooks")
def test_failing_and_disabled_hooks_and_retries_are_counted(cli, receiver):
    first = HookFactory(receiver=receiver)["id"]
    second = HookFactory(receiver=receiver, path="/other",
                         topic="dataset/update")["id"]
    helpers.call_action("webhook_update", id=second, enabled=False)
    model.Session.query(Hook).filter_by(id=first).update(
        {"failing_since": datetime.datetime.utcnow()})
    model.Session.commit()
    code, report = _status(cli)
    assert report["hooks_failing"] == 1
    assert report["hooks_disabled"] == 1
    assert code == 0


@pytest.mark.usefixtures("clean_db", "with_plugins")
def test_a_missing_or_outdated_schema_is_reported(cli, migrate_db_for):
    migrate_db_for("webhooks", "base", False)
    try:
        code, report = _status(cli)
        assert code == 2 and report["schema"] == "missing"
        assert tables.UPGRADE_COMMAND in report["problems"][0]
        migrate_db_for("webhooks", "6b42935909d0")
        code, text = _text(cli)
        assert code == 2
        assert "outdated (6b42935909d0)" in text
        assert tables.UPGRADE_COMMAND in text
    finally:
        migrate_db_for("webhooks")
    code, report = _status(cli)
    assert code == 0 and report["schema"] == "ready"


@pytest.mark.slow
@pytest.mark.usefixtures("webhooks")
def test_a_worker_delivers_when_its_heartbeat_cannot_be_written(
        cli, workers, receiver, migrate_db_for):
    """Code upgraded before ``ckan db upgrade -p webhooks``: the heartbeat's
    table is not there yet, deliveries go on (here a ping: with an outdated
    schema no events are recorded)."""
    hook_id = HookFactory(receiver=receiver)["id"]
    # this session's reads of the tables must not hold up the downgrade
    model.Session.remove()
    migrate_db_for("webhooks", "6b42935909d0", False)
    try:
        worker = workers()
        processes.wait_until_listening(worker)
        time.sleep(1)  # its first beat failed
        with open(worker.log_path) as f:
            assert "could not write the heartbeat" in f.read()
        helpers.call_action("webhook_ping", id=hook_id)
        got = receiver.wait_for(1, timeout=10)
        assert [r.json["type"] for r in got] == ["webhook/ping"]
        code, report = _status(cli)
        assert code == 2 and report["schema"] == "outdated (6b42935909d0)"
    finally:
        migrate_db_for("webhooks")
