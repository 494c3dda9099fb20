"""The delivery rules that hold at every attempt: access judged again, the
circuit breaker, the challenge's and pings' own retry limits, many events in
one claim, and what the attempt log keeps of an answer."""
from __future__ import annotations

import datetime

import pytest
import sqlalchemy as sa

import ckan.model as model
from ckan.tests import factories, helpers

from ckanext.webhooks.model import Message, Hook
from ckanext.webhooks.pipeline import engine
from ckanext.webhooks.tests.factories import HookFactory
from ckanext.webhooks.tests.receiver import Answer

pytestmark = pytest.mark.usefixtures("webhooks")


def _due_now(hook_id: str) -> None:
    """Bring the hook's scheduled retries forward to now."""
    model.Session.execute(sa.text(
        "UPDATE webhooks_delivery SET next_attempt = now() AT TIME ZONE 'utc'"
        " - interval '1 second' WHERE hook_id = :h AND status = 'pending'"),
        {"h": hook_id})
    model.Session.commit()


def _rows(hook_id: str) -> list[Message]:
    model.Session.expire_all()
    return model.Session.query(Message).filter_by(hook_id=hook_id).all()


def test_a_retry_is_not_sent_once_the_owner_may_no_longer_see_it(
        receiver, run_jobs):
    org = factories.Organization()
    dataset = factories.Dataset(owner_org=org["id"])
    receiver.answer("/hook", Answer(503))
    hook_id = HookFactory(receiver=receiver, topic="dataset/update")["id"]
    helpers.call_action("package_patch", id=dataset["id"],
                        notes="public notes")
    run_jobs()
    assert len(receiver.requests) == 1  # failed: a retry is scheduled
    helpers.call_action("package_patch", id=dataset["id"], private=True,
                        notes="secret notes")
    _due_now(hook_id)
    run_jobs()
    assert len(receiver.requests) == 1
    # and nothing shows that the message existed
    assert helpers.call_action("webhook_delivery_list", id=hook_id) == []


def test_a_redelivery_is_not_sent_once_the_owner_may_no_longer_see_it(
        receiver, run_jobs):
    org = factories.Organization()
    dataset = factories.Dataset(owner_org=org["id"])
    hook_id = HookFactory(receiver=receiver, topic="dataset/update")["id"]
    helpers.call_action("package_patch", id=dataset["id"], notes="public")
    run_jobs()
    [row] = helpers.call_action("webhook_delivery_list", id=hook_id)
    helpers.call_action("package_patch", id=dataset["id"], private=True)
    try:
        helpers.call_action("webhook_redeliver", id=hook_id,
                            delivery_id=row["id"])
    except Exception:
        pass  # refusing at once is as good
    run_jobs()
    assert len(receiver.requests) == 1


def test_many_events_in_one_claim_each_owner_gets_what_they_may_see(
        receiver, run_jobs):
    sysadmin = factories.Sysadmin()
    members = [factories.User() for _ in range(3)]
    outsider = factories.User()
    org = factories.Organization(users=[
        {"name": m["name"], "capacity": "member"} for m in members])
    owners = {"anonymous": ""} | {
        "member{}".format(n): m["name"] for n, m in enumerate(members)} | {
        "outsider": outsider["name"], "sysadmin": sysadmin["name"]}
    for owner, user in owners.items():
        for n in range(2):  # two hooks each
            HookFactory(receiver=receiver, path="/{}/{}".format(owner, n),
                        user=user)
    public = [factories.Dataset(owner_org=org["id"]) for _ in range(10)]
    private = [factories.Dataset(owner_org=org["id"], private=True)
               for _ in range(10)]
    stats = engine.run_burst()

    expected_public = {d["id"] for d in public}
    expected_all = expected_public | {d["id"] for d in private}
    for owner in owners:
        sees_private = owner.startswith("member") or owner == "sysadmin"
        for n in range(2):
            got = receiver.on("/{}/{}".format(owner, n))
            ids = [r.json["data"]["id"] for r in got]
            assert len(ids) == len(set(ids)), owner
            assert set(ids) == (expected_all if sees_private
                                else expected_public), owner
            for request in got:
                assert request.json["data"]["private"] == (
                    request.json["data"]["id"] not in expected_public)
    sent = stats["sent"]
    # anonymous and outsider: 10 each; three members and the sysadmin: 20
    assert sent == len(receiver.requests) == 2 * (10 + 10 + 4 * 20)
    # payloads were computed per event and view (in each claim), not per
    # hook: 20 events, four views each (anonymous, members, outsider,
    # sysadmin), an event now and then split over two claims
    assert stats["views"] < sent / 2


@pytest.mark.ckan_config("ckanext.webhooks.circuit_failures", "2")
@pytest.mark.ckan_config("ckanext.webhooks.max_per_host", "1")
@pytest.mark.ckan_config("ckanext.webhooks.retry_schedule", "60 60")
def test_a_receiver_that_keeps_failing_waits_for_its_retry_slot(
        receiver, run_jobs):
    receiver.always("/down", lambda got: Answer(503))
    hook_id = HookFactory(receiver=receiver, path="/down")["id"]
    for _ in range(6):
        factories.Dataset()
    run_jobs()
    # two failures in a row open the circuit: the rest wait, unattempted
    assert len(receiver.requests) == 2
    rows = _rows(hook_id)
    waiting = [r for r in rows if r.attempts == 0]
    assert len(waiting) == 4
    soon = datetime.datetime.utcnow() + datetime.timedelta(seconds=50)
    assert all(r.status == "pending" and r.next_attempt > soon
               for r in waiting)
    hook = model.Session.get(Hook, hook_id)
    assert hook.circuit_until is not None and hook.circuit_until > soon

    # a ping still goes through (that is how an owner checks the receiver)
    helpers.call_action("webhook_ping", id=hook_id)
    run_jobs()
    assert receiver.requests[-1].json["type"] == "webhook/ping"

    # the receiver is back: the next success closes the circuit
    receiver.always("/down", lambda got: Answer(204))
    _due_now(hook_id)
    run_jobs()
    assert all(r.status == "succeeded" for r in _rows(hook_id))
    model.Session.expire_all()
    hook = model.Session.get(Hook, hook_id)
    assert hook.circuit_until is None and hook.consecutive_failures == 0


@pytest.mark.ckan_config("ckanext.webhooks.verify_intent", "true")
def test_the_challenge_is_attempted_three_times_at_most(receiver, run_jobs):
    receiver.always("/hook", lambda got: Answer(500))
    hook_id = HookFactory(receiver=receiver)["id"]
    for _ in range(5):
        run_jobs()
        _due_now(hook_id)
    run_jobs()
    assert len(receiver.requests) == 3
    assert {r.json["type"] for r in receiver.requests} == {"webhook/verify"}
    [row] = _rows(hook_id)
    assert row.status == "failed"

    # asked again later (pings re-send it every ten minutes at most): the
    # address has had its three attempts, in all
    model.Session.query(Hook).filter_by(id=hook_id).update(
        {"last_challenge": datetime.datetime.utcnow()
         - datetime.timedelta(minutes=11)})
    model.Session.commit()
    helpers.call_action("webhook_ping", id=hook_id)
    for _ in range(3):
        run_jobs()
        _due_now(hook_id)
    assert len(receiver.requests) == 3


def test_pings_get_two_quick_retries_not_the_event_schedule(
        receiver, run_jobs):
    receiver.always("/hook", lambda got: Answer(500))
    hook_id = HookFactory(receiver=receiver)["id"]
    helpers.call_action("webhook_ping", id=hook_id)
    run_jobs()
    [row] = _rows(hook_id)
    assert row.status == "pending"
    assert row.next_attempt < datetime.datetime.utcnow() + \
        datetime.timedelta(seconds=10)
    for _ in range(4):
        _due_now(hook_id)
        run_jobs()
    assert len(receiver.requests) == 3
    [row] = _rows(hook_id)
    assert row.status == "failed"


def test_another_protocols_banner_is_never_stored(run_jobs):
    import socket
    import threading
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(8)

    def serve():
        while True:
            try:
                conn, _ = server.accept()
            except OSError:
                return
            conn.sendall(b"SSH-2.0-OpenSSH_9.2p1 secret-banner\r\n")
            conn.close()
    threading.Thread(target=serve, daemon=True).start()
    try:
        hook_id = HookFactory(address="http://127.0.0.1:{}/".format(
            server.getsockname()[1]))["id"]
        factories.Dataset()
        run_jobs()
    finally:
        server.close()
    [row] = helpers.call_action("webhook_delivery_list", id=hook_id)
    stored = model.Session.execute(sa.text(
        "SELECT d.error, a.error, a.response_body FROM webhooks_delivery d "
        "JOIN webhooks_attempt a ON a.message_id = d.id "
        "WHERE d.hook_id = :h"), {"h": hook_id}).fetchall()
    assert stored == [("not an HTTP answer", "not an HTTP answer", None)]
    assert "SSH" not in str(row)
