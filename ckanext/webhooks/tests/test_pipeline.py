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


def test_owners_who_see_a_public_dataset_as_the_public_share_its_view(
        receiver):
    member, outsider = factories.User(), factories.User()
    sysadmin = factories.Sysadmin()
    org = factories.Organization(users=[{"name": member["name"],
                                         "capacity": "editor"}])
    owners = {"anonymous": "", "member": member["name"],
              "outsider": outsider["name"], "sysadmin": sysadmin["name"]}
    for owner, user in owners.items():
        HookFactory(receiver=receiver, path="/" + owner, user=user,
                    topic="dataset/update")
    dataset = factories.Dataset(owner_org=org["id"])
    helpers.call_action("package_patch", id=dataset["id"], notes="patched")
    stats = engine.run_burst()

    bodies = {owner: receiver.on("/" + owner)[0].json for owner in owners}
    assert stats["sent"] == 4
    for owner in ("member", "outsider", "sysadmin"):
        assert bodies[owner]["data"]["notes"] == "patched"
        assert bodies[owner]["changes"] == bodies["anonymous"]["changes"]
    # what they got is what CKAN shows each of them
    for owner in ("member", "outsider"):
        assert bodies[owner]["data"] == helpers.call_action(
            "package_show", {"user": owners[owner], "ignore_auth": False},
            id=dataset["id"])
    # one package_show for the anonymous hook, the member and the outsider
    # (each sees the dataset only because it is public), one for the
    # sysadmin
    assert stats["views"] == 2


def test_readers_share_views_only_where_they_see_alike(receiver):
    """Made public: anonymous hooks and outsiders see it as the change left
    it, not before (no ``changes``), and share that view. Made private:
    only members see it."""
    member, outsider = factories.User(), factories.User()
    org = factories.Organization(users=[{"name": member["name"],
                                         "capacity": "member"}])
    owners = {"anonymous": "", "member": member["name"],
              "outsider": outsider["name"]}
    for owner, user in owners.items():
        HookFactory(receiver=receiver, path="/" + owner, user=user,
                    topic="dataset/update")
    opened = factories.Dataset(owner_org=org["id"], private=True,
                               notes="before")
    closed = factories.Dataset(owner_org=org["id"], notes="before")
    helpers.call_action("package_patch", id=opened["id"], private=False,
                        notes="after")
    helpers.call_action("package_patch", id=closed["id"], private=True,
                        notes="after")
    stats = engine.run_burst()

    got = {owner: {r.json["data"]["id"]: r.json
                   for r in receiver.on("/" + owner)} for owner in owners}
    assert set(got["anonymous"]) == set(got["outsider"]) == {opened["id"]}
    assert set(got["member"]) == {opened["id"], closed["id"]}
    for owner in ("anonymous", "outsider"):
        assert got[owner][opened["id"]]["data"]["notes"] == "after"
        assert "changes" not in got[owner][opened["id"]]
    assert got["member"][opened["id"]]["changes"]["notes"] == {
        "from": "before"}
    assert got["member"][closed["id"]]["changes"]["private"] == {
        "from": False}
    # made public: anonymous and outsider alike, the member apart (they
    # saw it before); made private: outsider and member apart (anonymous
    # hooks got no message of it at all)
    assert stats["claimed"] == 5
    assert stats["views"] == 4


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
    # 60 s, less a fifth at most (jitter)
    soon = datetime.datetime.utcnow() + datetime.timedelta(seconds=45)
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
