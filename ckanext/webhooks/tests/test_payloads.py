"""Payload helper processes: what they compute is what each owner may see,
a helper that dies costs nothing but time, and helpers end with their
worker however it ends."""
from __future__ import annotations

import json
import os
import signal
import time
from typing import Optional

import pytest

import ckan.model as model
from ckan.tests import factories, helpers

from ckanext.webhooks.pipeline import (
    claiming, composing, engine, matching, payloads)
from ckanext.webhooks.pipeline.claiming import ClaimedMessage
from ckanext.webhooks.tests import processes
from ckanext.webhooks.tests.factories import HookFactory

pytestmark = [pytest.mark.usefixtures("webhooks"), pytest.mark.slow]


@pytest.fixture
def ready_helpers(request):
    """Two helpers that have loaded CKAN from the tests' configuration."""
    started = payloads.Helpers(2, os.path.abspath(
        request.config.getoption("ckan_ini")))
    deadline = time.monotonic() + 60
    while not started.ready:
        assert not started.broken, "the helpers failed to start"
        assert time.monotonic() < deadline, "the helpers did not start"
        time.sleep(0.1)
    yield started
    started.close()


def _shown_as(user: str, dataset_id: str) -> dict:
    context = {"user": user, "ignore_auth": False}
    return helpers.call_action("package_show", context=context,
                               id=dataset_id)


def _mixed_burst(receiver) -> tuple[dict, dict]:
    """Owners who see differently, and datasets public, private, made
    public and made private, updated in one burst: the owners (user names,
    "" for anonymous) and the datasets by name."""
    member, outsider = factories.User(), factories.User()
    admin = factories.Sysadmin()
    org = factories.Organization(users=[{"name": member["name"],
                                         "capacity": "member"}])
    owners = {"anonymous": "", "member": member["name"],
              "outsider": outsider["name"], "sysadmin": admin["name"]}
    for owner, user in owners.items():
        HookFactory(receiver=receiver, path="/" + owner, user=user,
                    topic="dataset/update")
    datasets = {
        "public": factories.Dataset(owner_org=org["id"], notes="before"),
        "private": factories.Dataset(owner_org=org["id"], private=True,
                                     notes="before"),
        "opened": factories.Dataset(owner_org=org["id"], private=True,
                                    notes="before"),
        "closed": factories.Dataset(owner_org=org["id"], notes="before"),
    }
    for name, dataset in datasets.items():
        change = {"opened": {"private": False},
                  "closed": {"private": True}}.get(name, {})
        helpers.call_action("package_patch", id=dataset["id"],
                            notes="after " + name, **change)
    return owners, datasets


def test_helpers_compute_exactly_what_each_owner_may_see(receiver,
                                                         ready_helpers):
    owners, datasets = _mixed_burst(receiver)
    stats = engine.run_burst(helpers=ready_helpers)

    # every payload of the burst came from a helper
    assert stats["views"] >= payloads.MIN_PAYLOADS
    assert stats["views_helped"] == stats["views"]
    expected = {
        "anonymous": {"public", "opened"},
        "outsider": {"public", "opened"},
        "member": {"public", "private", "opened", "closed"},
        "sysadmin": {"public", "private", "opened", "closed"},
    }
    names = {d["id"]: name for name, d in datasets.items()}
    for owner, user in owners.items():
        got = {names[r.json["data"]["id"]]: r.json
               for r in receiver.on("/" + owner)}
        assert set(got) == expected[owner], owner
        for name, body in got.items():
            shown = _shown_as(user, datasets[name]["id"])
            assert body["data"] == shown, (owner, name)
            assert body["data"]["notes"] == "after " + name
    # members saw the dataset before it was made public: they get what
    # changed; outsiders and anonymous hooks did not: they get no changes
    member = {names[r.json["data"]["id"]]: r.json
              for r in receiver.on("/member")}
    assert member["opened"]["changes"]["notes"] == {"from": "before"}
    assert member["closed"]["changes"]["private"] == {"from": False}
    assert all("changes" not in r.json for r in receiver.on("/outsider")
               if r.json["data"]["id"] == datasets["opened"]["id"])


def test_without_helpers_the_same_burst_is_delivered_alike(receiver):
    """The reference for the test above: the worker computing itself."""
    owners, datasets = _mixed_burst(receiver)
    stats = engine.run_burst()
    assert stats["views_helped"] == 0
    assert {len(receiver.on("/" + owner)) for owner in owners} == {2, 4}


def test_a_helper_that_dies_under_its_task_costs_only_time(receiver,
                                                           ready_helpers):
    """Both helpers killed while they compute: the worker notices within
    seconds (not the 30 s it would wait for a slow answer) and computes
    every payload itself, exactly as it would have."""
    owners, datasets = _mixed_burst(receiver)
    matching.fan_out_waiting(200)
    rows, lease_id = claiming.claim(100)
    messages = [ClaimedMessage(row, lease_id) for row in rows]
    views = composing.Views()
    views.prefetch(messages, ready_helpers)
    assert views.pending  # queued for the helpers
    for pid in ready_helpers.pids:
        os.kill(pid, signal.SIGKILL)
    started = time.monotonic()
    composing.compose(messages, views)
    assert time.monotonic() - started < 10
    assert ready_helpers.broken
    assert views.views_helped == 0

    sent = [m for m in messages if m.state == "send"]
    # the same messages as in the test above: 12 of the 14 (anonymous
    # hooks get no message of a private dataset at all)
    assert len(sent) == 12
    for message in sent:
        owner = model.Session.get(model.User, message.hook.owner_id) \
            if message.hook.owner_id else None
        data = json.loads(message.body)["data"]
        assert data == _shown_as(owner.name if owner else "", data["id"])


def _stat(pid: str) -> Optional[list[str]]:
    """/proc/PID/stat after the command name (state first, then the
    parent's pid); None for a process that is gone or a zombie."""
    try:
        with open("/proc/{}/stat".format(pid)) as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return None if fields[0] == "Z" else fields


def _children(pid: int) -> set[int]:
    return {int(entry) for entry in os.listdir("/proc") if entry.isdigit()
            and (_stat(entry) or ["", ""])[1] == str(pid)}


def _alive(pids: set[int]) -> set[int]:
    return {pid for pid in pids if _stat(str(pid)) is not None}


def _wait_for(check, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        assert time.monotonic() < deadline, what
        time.sleep(0.1)


def _helpers_of(pid: int) -> set[int]:
    """The worker's payload helpers (not multiprocessing's resource
    tracker, also its child)."""
    found = set()
    for child in _children(pid):
        try:
            with open("/proc/{}/cmdline".format(child), "rb") as f:
                if b"spawn_main" in f.read():
                    found.add(child)
        except OSError:
            pass
    return found


@pytest.mark.parametrize("how", [signal.SIGTERM, signal.SIGKILL])
def test_a_workers_helpers_end_with_it(workers, how):
    """Helpers that are ready and idle end with their worker, whether it
    stops (TERM) or is killed (KILL)."""
    worker = workers(**processes.worker_options(
        **{"ckanext.webhooks.payload_processes": 2}))
    processes.wait_until_listening(worker)

    def ready():
        with open(worker.log_path) as f:
            return "2 payload helpers ready" in f.read()
    _wait_for(ready, 60, "the worker's helpers did not get ready")
    helpers_ = _helpers_of(worker.pid)
    assert len(helpers_) == 2
    os.kill(worker.pid, how)
    _wait_for(lambda: not _alive(helpers_), 15,
              "the helpers outlived their worker")
