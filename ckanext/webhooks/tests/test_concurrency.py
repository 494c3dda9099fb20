"""People and workers at the same time: what a person does to a hook while
a worker attempts or records its messages.

The person acts from the receiver's thread, while the attempt waits for
its answer (the thread has a database session of its own), or from threads
of the test's own while a real worker records outcomes.
"""
from __future__ import annotations

import datetime
import threading

import pytest
import sqlalchemy as sa
from standardwebhooks.webhooks import WebhookVerificationError

import ckan.logic as logic
import ckan.model as model
from ckan.tests import factories

from ckanext.webhooks.model import Attempt, Hook, Message, utcnow
from ckanext.webhooks.pipeline import claiming
from ckanext.webhooks.tests import processes
from ckanext.webhooks.tests.callers import call
from ckanext.webhooks.tests.factories import HookFactory
from ckanext.webhooks.tests.receiver import Answer, echo_challenge

pytestmark = pytest.mark.usefixtures("webhooks")


def _as_a_person(act):
    """An answer maker that first does ``act(got)`` as a person would (in
    the receiver's thread, its own session), then answers as ``act``
    says; what went wrong is kept in ``errors``."""
    errors: list[BaseException] = []

    def answer(got):
        try:
            return act(got)
        except BaseException as e:  # the test looks at it
            errors.append(e)
            return Answer(204)
        finally:
            model.Session.remove()
    answer.errors = errors  # type: ignore[attr-defined]
    return answer


def _hook(hook_id: str) -> Hook | None:
    model.Session.remove()
    return model.Session.get(Hook, hook_id)


# --- deletes while outcomes are recorded -------------------------------------

@pytest.mark.slow
def test_deleting_hooks_from_threads_while_outcomes_are_recorded_never_fails(
        own_redis, workers, receiver):
    """200 hooks deleted from four threads while a real worker records the
    outcomes of their messages: every delete succeeds (a recording and a
    delete once took their locks in opposite orders: deadlock, HTTP 500)."""
    hooks = [HookFactory(receiver=receiver, path="/h{}".format(i),
                         topics=["dataset/*"])["id"] for i in range(200)]
    for _ in range(10):
        factories.Dataset()
    model.Session.remove()
    processes.wait_until_listening(
        workers(**processes.worker_options(own_redis.url)))
    # outcomes are being recorded from now on
    assert len(receiver.wait_for(200, timeout=30)) >= 200
    errors: list[BaseException] = []

    def delete(ids: list[str]) -> None:
        try:
            for hook_id in ids:
                call("webhook_delete", id=hook_id)
        except BaseException as e:
            errors.append(e)
        finally:
            model.Session.remove()
    threads = [threading.Thread(target=delete, args=(hooks[i::4],))
               for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert errors == []
    model.Session.remove()
    assert model.Session.query(Hook).count() == 0
    assert model.Session.query(Message).count() == 0


# --- an outcome changes a hook only if it still is what it was made for ------

@pytest.mark.ckan_config("ckanext.webhooks.verify_intent", "true")
def test_a_challenge_answered_at_the_old_address_verifies_nothing(
        receiver, run_jobs):
    """A pending hook moved from A to B while A's challenge is in flight:
    A's answer does not make the hook active at B, which never agreed."""
    hook_id = call("webhook_create", topic="dataset/create",
                   address=receiver.url("/a"))

    def move_then_echo(got):
        call("webhook_update", id=hook_id, address=receiver.url("/b"))
        return echo_challenge(got)
    answer = _as_a_person(move_then_echo)
    receiver.always("/a", answer)
    receiver.always("/b", lambda got: Answer(204))  # B never echoes
    run_jobs()
    assert answer.errors == []
    assert [r.json["type"] for r in receiver.on("/a")] == ["webhook/verify"]
    assert [r.json["type"] for r in receiver.on("/b")] == ["webhook/verify"]
    hook = _hook(hook_id)
    assert (hook.status, hook.address, hook.verified) == (
        "pending", receiver.url("/b"), None)


def test_disabling_a_hook_during_its_ping_keeps_it_disabled(
        receiver, run_jobs):
    """A hook disabled for failing gets a ping; its owner disables it
    while the ping is in flight: the ping's success does not enable it."""
    hook = HookFactory(receiver=receiver, path="/slow")
    row = model.Session.get(Hook, hook["id"])
    row.status, row.status_reason = "disabled", "every delivery failed"
    model.Session.commit()
    ping_id = call("webhook_ping", id=hook["id"])

    def disable_then_answer(got):
        call("webhook_update", id=hook["id"], enabled=False)
        return Answer(204)
    answer = _as_a_person(disable_then_answer)
    receiver.always("/slow", answer)
    run_jobs()
    assert answer.errors == []
    assert len(receiver.on("/slow")) == 1
    shown = call("webhook_show", id=hook["id"])
    assert (shown["status"], shown["status_reason"]) == (
        "disabled", "disabled by its owner")
    ping = call("webhook_delivery_show", id=hook["id"], delivery_id=ping_id)
    # called off while in flight; its attempt is still in the log
    assert ping["status"] == "failed"
    assert [a["response_status"] for a in ping["attempt_log"]] == [204]


@pytest.mark.ckan_config("ckanext.webhooks.retry_schedule", "")
def test_a_410_from_the_old_address_does_not_delete_a_moved_hook(
        receiver, run_jobs):
    hook = HookFactory(receiver=receiver, path="/old")

    def move_then_gone(got):
        call("webhook_update", id=hook["id"], address=receiver.url("/new"))
        return Answer(410)
    answer = _as_a_person(move_then_gone)
    receiver.always("/old", answer)
    factories.Dataset()
    run_jobs()
    assert answer.errors == []
    assert len(receiver.on("/old")) == 1
    assert _hook(hook["id"]) is not None
    # and the new address gets what comes next
    dataset = factories.Dataset()
    run_jobs()
    [got] = receiver.on("/new")
    assert got.json["data"]["id"] == dataset["id"]


@pytest.mark.ckan_config("ckanext.webhooks.max_client_errors", "1")
def test_client_errors_of_the_old_address_do_not_count_for_the_new_one(
        receiver, run_jobs):
    hook = HookFactory(receiver=receiver, path="/old")

    def move_then_refuse(got):
        call("webhook_update", id=hook["id"], address=receiver.url("/new"))
        return Answer(400)
    answer = _as_a_person(move_then_refuse)
    receiver.always("/old", answer)
    factories.Dataset()
    run_jobs()
    assert answer.errors == []
    shown = call("webhook_show", id=hook["id"])
    assert shown["consecutive_client_errors"] == 0


# --- what a worker records: only what it still holds -------------------------

def test_deliver_again_during_an_attempt_sends_it_again(receiver, run_jobs):
    """"Deliver again" while the receiver holds the first attempt: the
    message is listed and shown (pending, with its payload), the request
    is accepted, and a second attempt arrives."""
    hook = HookFactory(receiver=receiver, path="/hold")
    seen = {}

    def again_then_answer(got):
        if seen:  # the second attempt: just answered
            return Answer(204)
        message_id = got.headers["webhook-id"]
        seen["listed"] = call("webhook_delivery_list", id=hook["id"])
        seen["shown"] = call("webhook_delivery_show", id=hook["id"],
                             delivery_id=message_id)
        seen["again"] = call("webhook_redeliver", id=hook["id"],
                             delivery_id=message_id)
        return Answer(204)
    first = _as_a_person(again_then_answer)
    receiver.always("/hold", first)
    dataset = factories.Dataset()
    run_jobs()
    assert first.errors == []
    got = receiver.on("/hold")
    assert len(got) == 2
    message_id = got[0].headers["webhook-id"]
    assert got[1].headers["webhook-id"] == message_id
    assert seen["again"] == message_id
    assert [(m["id"], m["status"]) for m in seen["listed"]] == [
        (message_id, "pending")]
    assert seen["shown"]["payload"]["data"]["id"] == dataset["id"]
    assert seen["shown"]["status"] == "pending"


def test_an_outcome_does_not_overwrite_a_newer_claim(receiver, run_jobs):
    """The worker's lease lapsed during its attempt and another worker
    claimed the message: the first worker's outcome is logged but does not
    touch the message the other now holds."""
    hook = HookFactory(receiver=receiver, path="/slow")
    taken = {}

    def taken_over(got):
        # the lease lapses; another worker claims the message
        model.Session.execute(sa.text(
            "UPDATE webhooks_delivery SET lease_until = :past"),
            {"past": utcnow() - datetime.timedelta(seconds=1)})
        model.Session.commit()
        rows, taken["lease_id"] = claiming.claim(10)
        taken["ids"] = [row[0] for row in rows]
        return Answer(204)
    answer = _as_a_person(taken_over)
    receiver.always("/slow", answer)
    factories.Dataset()
    run_jobs()
    assert answer.errors == []
    [message_id] = taken["ids"]
    model.Session.remove()
    message = model.Session.get(Message, message_id)
    assert (message.status, message.lease_id, message.attempts) == (
        "pending", taken["lease_id"], 2)
    # the attempt that was made is in the log all the same
    assert model.Session.query(Attempt).filter(
        Attempt.message_id == message_id).count() == 1
    assert hook["id"] == message.hook_id


# --- rotation ----------------------------------------------------------------

def test_two_rotations_at_once_keep_every_secret_signing(receiver, run_jobs):
    hook = HookFactory(receiver=receiver, path="/rotated")
    original = hook["secret"]
    start = threading.Barrier(2)
    issued: list[str] = []
    errors: list[BaseException] = []

    def rotate() -> None:
        try:
            start.wait(10)
            issued.append(call("webhook_rotate_secret", id=hook["id"]))
        except BaseException as e:
            errors.append(e)
        finally:
            model.Session.remove()
    threads = [threading.Thread(target=rotate) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert errors == []
    assert len(set(issued)) == 2
    call("webhook_ping", id=hook["id"])
    run_jobs()
    [request] = receiver.wait_for(1, "/rotated")
    assert len(request.headers["webhook-signature"].split(" ")) == 3
    # the current secret is the one issued last; every one still verifies
    assert call("webhook_show", id=hook["id"])["secret"] in issued
    for secret in [original, *issued]:
        request.verify(secret)


def test_a_second_rotation_keeps_the_first_secret_for_its_24_hours(
        receiver, run_jobs):
    hook = HookFactory(receiver=receiver, path="/rotated")
    first = hook["secret"]
    second = call("webhook_rotate_secret", id=hook["id"])
    third = call("webhook_rotate_secret", id=hook["id"])
    call("webhook_ping", id=hook["id"])
    run_jobs()
    [request] = receiver.wait_for(1, "/rotated")
    for secret in (first, second, third):
        request.verify(secret)
    with pytest.raises(WebhookVerificationError):
        request.verify("whsec_" + "A" * 43 + "=")


def test_a_third_rotation_within_24_hours_is_refused_naming_the_secret():
    hook = HookFactory()
    call("webhook_rotate_secret", id=hook["id"])
    current = call("webhook_rotate_secret", id=hook["id"])
    with pytest.raises(logic.ValidationError) as refused:
        call("webhook_rotate_secret", id=hook["id"])
    [message] = refused.value.error_dict["secret"]
    assert "rotate again after" in message
    assert call("webhook_show", id=hook["id"])["secret"] == current
