"""Managing hooks through the API: update, pause and resume, many topics,
the attempt log, retry now, recover, test deliveries, challenge limits, and
what an owner may know of messages not yet judged."""
from __future__ import annotations

import datetime
import json

import pytest
import sqlalchemy as sa
from ckanapi import LocalCKAN

import ckan.logic as logic
import ckan.model as model
from ckan.tests import factories, helpers

from ckanext.webhooks.pipeline import matching, sweep as sweeping
from ckanext.webhooks.model import Attempt, Message, Event, Hook, utcnow
from ckanext.webhooks.tests.callers import as_user, call
from ckanext.webhooks.tests.factories import ADDRESS
from ckanext.webhooks.tests.receiver import Answer, echo_challenge

pytestmark = pytest.mark.usefixtures("webhooks")


def create(address: str = ADDRESS, context=None, **data) -> str:
    if "topics" not in data:
        data.setdefault("topic", "dataset/create")
    return call("webhook_create", context, address=address, **data)


def show(hook_id: str) -> dict:
    model.Session.remove()
    return call("webhook_show", id=hook_id)


def refused(action: str, context=None, **data) -> dict:
    with pytest.raises(logic.ValidationError) as raised:
        call(action, context, **data)
    return raised.value.error_dict


def types_at(receiver, path: str) -> list[str]:
    return [r.json["type"] for r in receiver.on(path)]


def age_last_challenge(hook_id: str, minutes: float) -> None:
    row = model.Session.get(Hook, hook_id)
    row.last_challenge -= datetime.timedelta(minutes=minutes)
    model.Session.commit()


# --- many topics -------------------------------------------------------------

def test_topics_on_create_and_show_list_and_topic():
    hook_id = create(topics=["dataset/create", "resource/create",
                             "dataset/create"])
    shown = show(hook_id)
    assert shown["topics"] == ["dataset/create", "resource/create"]
    assert shown["topic"] is None
    single = show(create(topic="dataset/update"))
    assert (single["topics"], single["topic"]) == (["dataset/update"],
                                                   "dataset/update")
    user = factories.User()
    create(context=as_user(user), topics=["dataset/*", "resource/*"])
    [listed] = call("webhook_list", as_user(user))
    assert listed["topics"] == ["dataset/*", "resource/*"]
    assert listed["topic"] is None


@pytest.mark.parametrize("data, field", [
    ({"topic": "dataset/create", "topics": ["dataset/update"]}, "topics"),
    ({}, "topic"),
    ({"topics": []}, "topics"),
    ({"topics": "dataset/create"}, "topics"),
    ({"topics": ["dataset/create", "dataset/nope"]}, "topics"),
    ({"topics": [None]}, "topics"),
    ({"topic": "dataset/create", "description": "x" * 201}, "description"),
    ({"topic": "dataset/create", "description": 5}, "description"),
])
def test_create_refuses_bad_topics_and_descriptions(data, field):
    before = model.Session.query(Hook).count()
    errors = refused("webhook_create", address=ADDRESS, **data)
    assert field in errors, errors
    assert model.Session.query(Hook).count() == before


def test_description_of_200_characters_is_kept():
    hook_id = create(description=" " + "d" * 200 + " ")
    assert show(hook_id)["description"] == "d" * 200
    assert show(create())["description"] is None


def test_a_hook_with_several_topics_gets_each_and_nothing_else(
        receiver, run_jobs):
    create(receiver.url("/several"),
           topics=["dataset/create", "resource/update"])
    dataset = factories.Dataset()
    resource = factories.Resource(package_id=dataset["id"])
    helpers.call_action("resource_patch", id=resource["id"], name="renamed")
    helpers.call_action("package_patch", id=dataset["id"], title="New")
    run_jobs()
    receiver.wait_for(2, "/several")
    assert sorted(types_at(receiver, "/several")) == [
        "dataset/create", "resource/update"]


# --- webhook_update ----------------------------------------------------------

def test_update_changes_topics_filters_and_description():
    org = factories.Organization()
    group = factories.Group()
    dataset = factories.Dataset(owner_org=org["id"])
    hook_id = create(organization=org["name"], dataset=dataset["name"])
    updated = call("webhook_update", id=hook_id,
                   topics=["dataset/update", "dataset/delete"],
                   group=group["name"], dataset=None, organization="",
                   description="Mirror to the archive")
    assert updated == show(hook_id)
    assert updated["topics"] == ["dataset/update", "dataset/delete"]
    assert updated["topic"] is None
    assert updated["filters"] == {"dataset": None, "organization": None,
                                  "group": group["id"], "resource": None}
    assert updated["description"] == "Mirror to the archive"
    # what is not given stays as it was
    again = call("webhook_update", id=hook_id, topic="dataset/*")
    assert again["topics"] == ["dataset/*"]
    assert again["filters"]["group"] == group["id"]
    assert again["description"] == "Mirror to the archive"
    assert call("webhook_update", id=hook_id,
                description="")["description"] is None


def _unchanged(hook_id: str, before: dict) -> None:
    after = show(hook_id)
    for key in ("topics", "address", "filters", "description", "status",
                "secret"):
        assert after[key] == before[key], key


@pytest.mark.parametrize("data, field", [
    ({"topics": []}, "topics"),
    ({"topics": ["dataset/update", "nope"]}, "topics"),
    ({"topic": "dataset/update", "topics": ["dataset/update"]}, "topics"),
    ({"topic": None}, "topic"),
    ({"address": None}, "address"),
    ({"address": "ftp://example.com/x"}, "address"),
    ({"address": "http://"}, "address"),
    ({"dataset": "no-such-dataset"}, "dataset"),
    ({"organization": 5}, "organization"),
    ({"resource": "no-such-resource"}, "resource"),
    ({"description": "x" * 201}, "description"),
    ({"enabled": "maybe"}, "enabled"),
    ({"colour": "red"}, "colour"),
])
def test_update_refuses_bad_input_naming_the_field_and_changes_nothing(
        data, field):
    hook_id = create(topic="dataset/create", description="kept")
    before = show(hook_id)
    errors = refused("webhook_update", id=hook_id, **data)
    assert field in errors, errors
    _unchanged(hook_id, before)


def test_update_refuses_a_good_change_beside_a_bad_one():
    hook_id = create()
    before = show(hook_id)
    errors = refused("webhook_update", id=hook_id, topic="dataset/update",
                     description="new", dataset="no-such-dataset")
    assert list(errors) == ["dataset"]
    _unchanged(hook_id, before)


def test_update_filters_are_judged_like_on_create():
    org = factories.Organization()
    private = factories.Dataset(owner_org=org["id"], private=True)
    hook_id = create()
    unknown = refused("webhook_update", id=hook_id, dataset="no-such-thing")
    assert refused("webhook_update", id=hook_id,
                   dataset=private["name"]) == unknown
    member = factories.User()
    helpers.call_action("organization_member_create", id=org["id"],
                        username=member["name"], role="member")
    # the member may see it, but the hook acts for an anonymous visitor
    assert refused("webhook_update", as_user(member), id=hook_id,
                   dataset=private["id"]) == unknown
    own = create(context=as_user(member))
    assert call("webhook_update", as_user(member), id=own,
                dataset=private["name"])["filters"]["dataset"] == \
        private["id"]


@pytest.mark.ckan_config("ckanext.webhooks.allow_private_addresses", "false")
def test_update_refuses_private_addresses():
    hook_id = create()
    errors = refused("webhook_update", id=hook_id,
                     address="http://127.0.0.1/hook")
    assert "private" in errors["address"][0]
    assert show(hook_id)["address"] == ADDRESS


@pytest.mark.ckan_config("ckanext.webhooks.max_hooks_per_address", "1")
def test_update_to_an_address_at_its_cap_is_refused():
    create("http://example.com/full")
    hook_id = create("http://example.com/other")
    errors = refused("webhook_update", id=hook_id,
                     address="http://example.com/full")
    assert "maximum" in errors["address"][0]
    # giving the hook its own address again changes nothing and is fine
    assert call("webhook_update", id=hook_id,
                address="http://example.com/other")["status"] == "active"


def test_update_of_an_unknown_hook_is_not_found():
    with pytest.raises(logic.NotFound):
        call("webhook_update", id="no-such-hook", description="x")


def test_update_with_ckanapi_and_the_seed_usage_still_works():
    ckan = LocalCKAN(username="")
    hook = ckan.action.webhook_create(topic="dataset/create",
                                      address="http://example.com/callback")
    updated = ckan.action.webhook_update(id=hook, topics=["dataset/*"],
                                         description="all of it")
    assert updated["topics"] == ["dataset/*"]
    assert ckan.action.webhook_show(id=hook)["description"] == "all of it"
    ckan.action.webhook_delete(id=hook)


def test_a_new_address_receives_from_then_on(receiver, run_jobs):
    hook_id = create(receiver.url("/old"))
    call("webhook_update", id=hook_id, address=receiver.url("/new"))
    factories.Dataset()
    run_jobs()
    assert types_at(receiver, "/new") == ["dataset/create"]
    assert receiver.on("/old") == []


# --- pause and resume --------------------------------------------------------

def test_disabled_hook_gets_nothing_and_enabled_gets_events_again(
        receiver, run_jobs):
    hook_id = create(receiver.url("/pause"))
    paused = call("webhook_update", id=hook_id, enabled=False)
    assert (paused["status"], paused["status_reason"]) == (
        "disabled", "disabled by its owner")
    factories.Dataset(title="while paused")
    run_jobs()
    assert receiver.on("/pause") == []
    # no pings or tests for a paused hook, and nothing to redeliver
    assert "status" in refused("webhook_ping", id=hook_id)
    assert "status" in refused("webhook_ping", id=hook_id,
                               topic="dataset/create")

    resumed = call("webhook_update", id=hook_id, enabled=True)
    assert (resumed["status"], resumed["status_reason"]) == ("active", None)
    dataset = factories.Dataset(title="after")
    run_jobs()
    got = receiver.wait_for(1, "/pause")
    assert [r.json["data"]["id"] for r in got] == [dataset["id"]]


def test_a_ping_queued_before_pausing_is_not_sent(receiver, run_jobs):
    hook_id = create(receiver.url("/queued"))
    ping_id = call("webhook_ping", id=hook_id)
    call("webhook_update", id=hook_id, enabled=False)
    run_jobs()
    assert receiver.on("/queued") == []
    [ping] = call("webhook_delivery_list", id=hook_id)
    assert (ping["id"], ping["status"]) == (ping_id, "failed")
    assert show(hook_id)["status"] == "disabled"


def test_enabling_a_hook_disabled_for_failures_is_a_fresh_start():
    hook_id = create()
    row = model.Session.get(Hook, hook_id)
    row.status, row.status_reason = "disabled", "every delivery failed"
    row.failing_since = utcnow() - datetime.timedelta(days=6)
    model.Session.commit()
    enabled = call("webhook_update", id=hook_id, enabled=True)
    assert (enabled["status"], enabled["failing_since"]) == ("active", None)
    # the sweep does not disable it again at once
    sweeping.sweep()
    assert show(hook_id)["status"] == "active"


@pytest.mark.ckan_config("ckanext.webhooks.verify_intent", "true")
def test_enabling_a_never_verified_hook_makes_it_pending_with_a_challenge(
        receiver, run_jobs):
    receiver.always("/late", echo_challenge)
    hook_id = create(receiver.url("/late"))
    assert call("webhook_update", id=hook_id,
                enabled=False)["status"] == "disabled"
    run_jobs()
    assert receiver.on("/late") == []  # its challenge was called off
    age_last_challenge(hook_id, 11)
    assert call("webhook_update", id=hook_id,
                enabled=True)["status"] == "pending"
    run_jobs()
    assert types_at(receiver, "/late") == ["webhook/verify"]
    shown = show(hook_id)
    assert shown["status"] == "active" and shown["verified"]


@pytest.mark.ckan_config("ckanext.webhooks.verify_intent", "true")
def test_a_new_address_is_pending_until_it_answers_its_own_challenge(
        receiver, run_jobs):
    receiver.always("/first", echo_challenge)
    receiver.always("/second", lambda got: Answer(200, b"what challenge?"))
    hook_id = create(receiver.url("/first"), topic="dataset/*")
    run_jobs()
    first = show(hook_id)
    assert first["status"] == "active" and first["verified"]

    moved = call("webhook_update", id=hook_id, address=receiver.url("/second"))
    assert (moved["status"], moved["verified"]) == ("pending", None)
    factories.Dataset()
    run_jobs()
    # the new address got its challenge and nothing else
    assert types_at(receiver, "/second") == ["webhook/verify"]
    assert types_at(receiver, "/first") == ["webhook/verify"]
    assert show(hook_id)["status"] == "pending"
    # the sweep does not take a hook pending since a moment for a stale one
    row = model.Session.get(Hook, hook_id)
    row.created -= datetime.timedelta(days=3)
    model.Session.commit()
    sweeping.sweep()
    assert show(hook_id)["status"] == "pending"

    receiver.always("/second", echo_challenge)
    call("webhook_update", id=hook_id, address=receiver.url("/third"))
    receiver.always("/third", echo_challenge)
    run_jobs()
    assert types_at(receiver, "/third") == ["webhook/verify"]
    assert show(hook_id)["status"] == "active"


# --- the attempt log and webhook_delivery_show -------------------------------

def test_delivery_show_has_the_payload_and_every_attempt(receiver, run_jobs):
    hook_id = create(receiver.url("/log"))
    receiver.answer("/log", Answer(400, b"missing field"),
                    Answer(200, b"thanks"))
    dataset = factories.Dataset()
    run_jobs()
    [message] = call("webhook_delivery_list", id=hook_id)
    call("webhook_redeliver", id=hook_id, delivery_id=message["id"])
    run_jobs()
    first, second = receiver.wait_for(2, "/log")

    shown = call("webhook_delivery_show", id=hook_id,
                 delivery_id=message["id"])
    assert shown["id"] == message["id"]
    assert shown["status"] == "succeeded" and shown["attempts"] == 2
    assert shown["payload"] == json.loads(second.body)
    assert shown["payload"]["data"]["id"] == dataset["id"]
    log = shown["attempt_log"]
    assert [a["response_status"] for a in log] == [400, 200]
    assert [a["response_body"] for a in log] == ["missing field", "thanks"]
    assert log[0]["at"] <= log[1]["at"]
    assert all(a["duration_ms"] is not None for a in log)
    assert [a["error"] for a in log] == [None, None]


@pytest.mark.ckan_config("ckanext.webhooks.retry_schedule", "")
def test_attempt_log_records_errors_and_keeps_2048_characters_as_text(
        receiver, run_jobs):
    hook_id = create(receiver.url("/long"))
    body = "é".encode() * 3000 + b"\xff\x00"
    receiver.answer("/long", Answer(500, body))
    ping_id = call("webhook_ping", id=hook_id)
    run_jobs()
    [attempt] = call("webhook_delivery_show", id=hook_id,
                     delivery_id=ping_id)["attempt_log"]
    assert attempt["response_status"] == 500
    assert attempt["response_body"] == "é" * 2048

    receiver.close()
    refused_id = call("webhook_ping", id=hook_id)
    run_jobs()
    [attempt] = call("webhook_delivery_show", id=hook_id,
                     delivery_id=refused_id)["attempt_log"]
    assert attempt["response_status"] is None
    assert attempt["error"].startswith("connection error")


def test_response_bodies_are_shown_only_while_the_hook_is_active(
        receiver, run_jobs):
    hook_id = create(receiver.url("/shown"))
    receiver.answer("/shown", Answer(200, b"private answer"))
    ping_id = call("webhook_ping", id=hook_id)
    run_jobs()

    def bodies():
        log = call("webhook_delivery_show", id=hook_id,
                   delivery_id=ping_id)["attempt_log"]
        return [a["response_body"] for a in log]
    assert bodies() == ["private answer"]
    call("webhook_update", id=hook_id, enabled=False)
    assert bodies() == [None]


@pytest.mark.ckan_config("ckanext.webhooks.verify_intent", "true")
def test_answers_to_a_pending_hook_are_never_recorded(receiver, run_jobs):
    receiver.always("/unasked", lambda got: Answer(200, b"secret page"))
    hook_id = create(receiver.url("/unasked"))
    run_jobs()
    receiver.wait_for(1, "/unasked")
    assert model.Session.query(Attempt.response_body).filter(
        Attempt.response_body.isnot(None)).all() == []
    [challenge] = call("webhook_delivery_list", id=hook_id)
    [attempt] = call("webhook_delivery_show", id=hook_id,
                     delivery_id=challenge["id"])["attempt_log"]
    assert attempt["response_status"] == 200
    assert attempt["response_body"] is None


def test_the_log_of_one_message_is_bounded(receiver, run_jobs, monkeypatch):
    from ckanext.webhooks.pipeline import outcomes
    monkeypatch.setattr(outcomes, "LOGGED_ATTEMPTS", 3)
    hook_id = create(receiver.url("/many"))
    ping_id = call("webhook_ping", id=hook_id)
    run_jobs()
    for _ in range(4):
        call("webhook_redeliver", id=hook_id, delivery_id=ping_id)
        run_jobs()
    receiver.wait_for(5, "/many")
    shown = call("webhook_delivery_show", id=hook_id, delivery_id=ping_id)
    assert shown["attempts"] == 5
    ids = [row.id for row in model.Session.query(Attempt.id).filter(
        Attempt.message_id == ping_id).order_by(Attempt.id)]
    assert len(ids) == len(shown["attempt_log"]) == 3


def test_attempts_go_with_their_message(receiver, run_jobs):
    hook_id = create(receiver.url("/pruned"))
    ping_id = call("webhook_ping", id=hook_id)
    run_jobs()
    assert model.Session.query(Attempt).filter(
        Attempt.message_id == ping_id).count() == 1
    sweeping.prune(days=-1)
    model.Session.remove()
    assert model.Session.query(Attempt).filter(
        Attempt.message_id == ping_id).count() == 0


def test_a_hook_deleted_during_its_attempt_loses_no_other_outcome(
        receiver, run_jobs):
    doomed = create(receiver.url("/doomed"))
    kept = create(receiver.url("/kept"))

    def delete_the_hook(got):
        # the receiver's thread has a database session of its own
        model.Session.query(Hook).filter(Hook.id == doomed).delete()
        model.Session.commit()
        model.Session.remove()
        return Answer(204)
    receiver.always("/doomed", delete_the_hook)
    factories.Dataset()
    run_jobs()
    assert len(receiver.wait_for(1, "/doomed")) == 1
    [message] = call("webhook_delivery_list", id=kept)
    assert message["status"] == "succeeded"
    [attempt] = call("webhook_delivery_show", id=kept,
                     delivery_id=message["id"])["attempt_log"]
    assert attempt["response_status"] == 204
    assert model.Session.query(Hook).filter(Hook.id == doomed).count() == 0


def test_delivery_show_of_another_hooks_or_unknown_message_is_not_found(
        receiver, run_jobs):
    mine = create(receiver.url("/a"))
    theirs = create(receiver.url("/b"))
    message_id = call("webhook_ping", id=theirs)
    for hook_id, delivery_id in ((mine, message_id), (mine, "msg_none"),
                                 ("no-such-hook", message_id)):
        with pytest.raises(logic.NotFound):
            call("webhook_delivery_show", id=hook_id,
                 delivery_id=delivery_id)


def test_a_ping_not_yet_attempted_is_shown_without_a_payload():
    hook_id = create()
    ping_id = call("webhook_ping", id=hook_id)
    shown = call("webhook_delivery_show", id=hook_id, delivery_id=ping_id)
    assert (shown["status"], shown["payload"], shown["attempt_log"]) == (
        "pending", None, [])


# --- retry now ---------------------------------------------------------------

@pytest.mark.ckan_config("ckanext.webhooks.retry_schedule", "3600")
def test_redeliver_of_a_pending_message_attempts_it_now(receiver, run_jobs):
    hook_id = create(receiver.url("/later"))
    receiver.answer("/later", Answer(503), Answer(204))
    factories.Dataset()
    run_jobs()
    [message] = call("webhook_delivery_list", id=hook_id)
    assert message["status"] == "pending"
    assert message["next_attempt"] > (
        utcnow() + datetime.timedelta(minutes=45)).isoformat()  # -20% jitter
    assert call("webhook_redeliver", id=hook_id,
                delivery_id=message["id"]) == message["id"]
    run_jobs()
    got = receiver.wait_for(2, "/later")
    assert [r.headers["webhook-id"] for r in got] == [message["id"]] * 2
    [again] = call("webhook_delivery_list", id=hook_id)
    assert (again["status"], again["attempts"]) == ("succeeded", 2)


# --- recover -----------------------------------------------------------------

def _since(moment: datetime.datetime) -> str:
    return moment.isoformat() + "Z"


@pytest.mark.ckan_config("ckanext.webhooks.retry_schedule", "")
# one request at a time, so the order of attempts is the order of arrival
@pytest.mark.ckan_config("ckanext.webhooks.concurrency", "1")
def test_recover_sends_failed_deliveries_since_again_oldest_first(
        receiver, run_jobs):
    hook_id = create(receiver.url("/down"))
    receiver.always("/down", lambda got: Answer(503))
    early = factories.Dataset(title="before since")
    run_jobs()
    since = utcnow()
    titles = ["first", "second", "third"]
    for title in titles:
        factories.Dataset(title=title)
        run_jobs()
    succeeded = call("webhook_ping", id=hook_id)
    receiver.always("/down", lambda got: Answer(204))
    run_jobs()
    failed = [m for m in call("webhook_delivery_list", id=hook_id)
              if m["status"] == "failed"]
    assert len(failed) == 4
    receiver.requests.clear()

    assert call("webhook_recover", id=hook_id, since=_since(since)) == 3
    run_jobs()
    got = receiver.wait_for(3, "/down")
    assert [r.json["data"]["title"] for r in got] == titles
    ids = {m["id"] for m in failed}
    assert {r.headers["webhook-id"] for r in got} <= ids
    assert early["id"] not in [r.json["data"]["id"] for r in got]
    assert succeeded not in [r.headers["webhook-id"] for r in got]
    statuses = {m["id"]: m["status"] for m in
                call("webhook_delivery_list", id=hook_id)}
    assert sorted(statuses.values()).count("succeeded") == 4


def test_recover_is_rate_limited_per_hook(receiver, run_jobs):
    hook_id = create(receiver.url("/often"))
    receiver.always("/often", lambda got: Answer(404))
    call("webhook_ping", id=hook_id)
    run_jobs()
    since = _since(utcnow() - datetime.timedelta(hours=1))
    assert call("webhook_recover", id=hook_id, since=since) == 1
    run_jobs()
    assert len(receiver.wait_for(2, "/often")) == 2
    errors = refused("webhook_recover", id=hook_id, since=since)
    assert "rate_limit" in errors
    # nothing found is no recovery: it does not count
    other = create(receiver.url("/quiet"))
    assert call("webhook_recover", id=other, since=since) == 0
    assert call("webhook_recover", id=other, since=since) == 0
    row = model.Session.get(Hook, hook_id)
    row.last_recover -= datetime.timedelta(minutes=11)
    model.Session.commit()
    assert call("webhook_recover", id=hook_id, since=since) == 1


@pytest.mark.parametrize("since", ["yesterday", "", None, 5,
                                   "0001-01-01T00:00:00+01:00",
                                   "2026-13-01T00:00:00Z"])
def test_recover_refuses_bad_times(since):
    hook_id = create()
    assert "since" in refused("webhook_recover", id=hook_id, since=since)


def test_recover_accepts_times_with_offsets():
    hook_id = create()
    assert call("webhook_recover", id=hook_id,
                since="2026-01-01T01:00:00+01:00") == 0
    assert call("webhook_recover", id=hook_id,
                since="2026-01-01T00:00:00") == 0


def test_recover_and_redeliver_need_an_active_hook(receiver, run_jobs):
    hook_id = create(receiver.url("/paused"))
    receiver.answer("/paused", Answer(404))
    ping_id = call("webhook_ping", id=hook_id)
    run_jobs()
    call("webhook_update", id=hook_id, enabled=False)
    assert "status" in refused("webhook_recover", id=hook_id,
                               since="2000-01-01T00:00:00Z")
    assert "status" in refused("webhook_redeliver", id=hook_id,
                               delivery_id=ping_id)
    run_jobs()
    assert len(receiver.on("/paused")) == 1


@pytest.mark.ckan_config("ckanext.webhooks.retry_schedule", "")
def test_recover_judges_access_again(receiver, run_jobs):
    member = factories.User()
    org = factories.Organization(users=[{"name": member["name"],
                                         "capacity": "member"}])
    hook_id = create(receiver.url("/member"), context=as_user(member),
                     topic="dataset/*")
    receiver.always("/member", lambda got: Answer(503))
    private = factories.Dataset(owner_org=org["id"], private=True)
    public = factories.Dataset(owner_org=org["id"])
    run_jobs()
    assert len(receiver.wait_for(2, "/member")) == 2
    helpers.call_action("organization_member_delete",
                        context={"user": factories.Sysadmin()["name"]},
                        id=org["id"], username=member["name"])
    receiver.always("/member", lambda got: Answer(204))
    receiver.requests.clear()
    call("webhook_recover", as_user(member), id=hook_id,
         since="2000-01-01T00:00:00Z")
    run_jobs()
    got = receiver.wait_for(1, "/member")
    assert [r.json["data"]["id"] for r in got] == [public["id"]]
    assert private["id"] not in [r.json["data"]["id"] for r in
                                 receiver.wait_for(2, "/member", timeout=1)]


# --- test deliveries ---------------------------------------------------------

def test_ping_with_a_topic_sends_a_test_with_a_real_public_dataset(
        receiver, run_jobs):
    org = factories.Organization()
    public = factories.Dataset(owner_org=org["id"], title="Public one")
    factories.Dataset(owner_org=org["id"], private=True, title="Secret")
    hook_id = create(receiver.url("/test"), topic="dataset/*")
    secret = show(hook_id)["secret"]
    message_id = call("webhook_ping", id=hook_id, topic="dataset/update")
    run_jobs()
    [got] = receiver.wait_for(1, "/test")
    payload = got.verify(secret)
    assert payload["id"] == message_id
    assert payload["type"] == "dataset/update"
    assert payload["test"] is True
    assert payload["data"]["id"] == public["id"]
    assert payload["data"]["title"] == "Public one"
    # "test" comes before "data" in the body
    assert got.body.index(b'"test":true') < got.body.index(b'"data"')
    [listed] = call("webhook_delivery_list", id=hook_id)
    assert (listed["type"], listed["test"], listed["status"]) == (
        "dataset/update", True, "succeeded")


def test_test_deliveries_prefer_what_the_filters_name(receiver, run_jobs):
    chosen = factories.Dataset(title="Chosen")
    factories.Dataset(title="Newer")
    resource = factories.Resource(package_id=chosen["id"])
    hook_id = create(receiver.url("/filtered"), topics=["dataset/*",
                                                        "resource/*"],
                     dataset=chosen["name"])
    call("webhook_ping", id=hook_id, topic="dataset/create")
    call("webhook_ping", id=hook_id, topic="resource/create")
    call("webhook_ping", id=hook_id, topic="dataset/delete")
    run_jobs()
    got = {r.json["type"]: r.json for r in receiver.wait_for(3, "/filtered")}
    assert got["dataset/create"]["data"]["id"] == chosen["id"]
    assert got["resource/create"]["data"]["id"] == resource["id"]
    assert got["dataset/delete"]["data"] == {
        "id": chosen["id"], "name": chosen["name"], "title": "Chosen",
        "type": "dataset", "owner_org": chosen["owner_org"],
        "state": "deleted"}


def test_test_deliveries_make_up_an_example_on_an_empty_portal(
        receiver, run_jobs):
    hook_id = create(receiver.url("/empty"), topic="resource/*")
    call("webhook_ping", id=hook_id, topic="resource/update")
    run_jobs()
    [got] = receiver.wait_for(1, "/empty")
    assert got.json["test"] is True
    assert got.json["data"]["name"] == "example.csv"
    assert got.json["data"]["package_id"]


@pytest.mark.parametrize("topic", ["dataset/*", "resource/create", "nope",
                                   ""])
def test_ping_topic_must_be_an_event_type_the_hook_receives(topic):
    hook_id = create(topic="dataset/*")
    errors = refused("webhook_ping", id=hook_id, topic=topic)
    assert "topic" in errors
    assert call("webhook_delivery_list", id=hook_id) == []


# --- a pending hook gets nothing but its challenge (13.1) --------------------

@pytest.mark.ckan_config("ckanext.webhooks.verify_intent", "true")
def test_ping_on_a_pending_hook_sends_the_challenge_again_within_limits(
        receiver, run_jobs):
    receiver.always("/victim", lambda got: Answer(200, b"who are you?"))
    hook_id = create(receiver.url("/victim"))
    run_jobs()
    [first] = call("webhook_delivery_list", id=hook_id)
    assert first["type"] == "webhook/verify"

    # within ten minutes: the same challenge, nothing sent
    for topic in (None, "dataset/create"):
        assert call("webhook_ping", id=hook_id, topic=topic) == first["id"]
    run_jobs()
    assert len(receiver.on("/victim")) == 1

    sent = [first["id"]]
    for _ in range(2):
        age_last_challenge(hook_id, 10)
        sent.append(call("webhook_ping", id=hook_id))
        run_jobs()
    assert len(set(sent)) == 3
    assert types_at(receiver, "/victim") == ["webhook/verify"] * 3
    # three in all: no more, however long one waits
    age_last_challenge(hook_id, 60)
    assert call("webhook_ping", id=hook_id) == sent[-1]
    run_jobs()
    assert len(receiver.on("/victim")) == 3
    assert model.Session.get(Hook, hook_id).challenges_sent == 3


@pytest.mark.ckan_config("ckanext.webhooks.verify_intent", "true")
def test_redeliver_and_recover_on_a_pending_hook_send_nothing(
        receiver, run_jobs):
    receiver.always("/unverified", lambda got: Answer(500))
    hook_id = create(receiver.url("/unverified"))
    run_jobs()
    [challenge] = call("webhook_delivery_list", id=hook_id)
    errors = refused("webhook_redeliver", id=hook_id,
                     delivery_id=challenge["id"])
    assert "webhook_ping" in errors["status"][0]
    assert "status" in refused("webhook_recover", id=hook_id,
                               since="2000-01-01T00:00:00Z")
    count = len(receiver.on("/unverified"))
    run_jobs()
    assert len(receiver.on("/unverified")) == count


# --- messages not yet judged are never visible (13.3) ------------------------

def test_messages_of_events_the_owner_may_not_see_are_never_visible(
        app, receiver, run_jobs):
    outsider = factories.User()
    org = factories.Organization()
    hook_id = create(receiver.url("/outsider"), context=as_user(outsider),
                     topic="dataset/*")
    private = factories.Dataset(owner_org=org["id"], private=True)
    for n in range(3):
        helpers.call_action("package_patch", id=private["id"],
                            title="edit {}".format(n))
    # the messages exist, not yet judged (as between fan-out and attempt)
    for event in model.Session.query(Event).all():
        matching.create_messages(event)
    model.Session.commit()
    hidden = [m.id for m in model.Session.query(Message).filter(
        Message.hook_id == hook_id)]
    assert len(hidden) == 4

    def nothing_shows():
        assert call("webhook_delivery_list", as_user(outsider),
                    id=hook_id) == []
        assert show(hook_id)["deliveries"] == {
            "pending": 0, "succeeded": 0, "failed": 0}
        for message_id in hidden:
            for action in ("webhook_delivery_show", "webhook_redeliver"):
                with pytest.raises(logic.NotFound):
                    call(action, as_user(outsider), id=hook_id,
                         delivery_id=message_id)
        page = app.get("/webhooks/" + hook_id).body
        assert not any(message_id in page for message_id in hidden)
        assert call("webhook_recover", id=hook_id,
                    since="2000-01-01T00:00:00Z") == 0
    nothing_shows()
    run_jobs()
    nothing_shows()
    assert receiver.on("/outsider") == []


def test_a_public_event_shows_once_judged(receiver, run_jobs):
    hook_id = create(receiver.url("/judged"))
    dataset = factories.Dataset()
    for event in model.Session.query(Event).all():
        matching.create_messages(event)
    model.Session.commit()
    assert call("webhook_delivery_list", id=hook_id) == []
    run_jobs()
    [message] = call("webhook_delivery_list", id=hook_id)
    shown = call("webhook_delivery_show", id=hook_id,
                 delivery_id=message["id"])
    assert shown["payload"]["data"]["id"] == dataset["id"]


# --- input PostgreSQL cannot store (13.6) ------------------------------------

def _post(app, action: str, payload: dict, headers=None):
    # json.dumps escapes a lone surrogate as "\ud800", as a client would
    return app.post("/api/3/action/" + action, data=json.dumps(payload),
                    content_type="application/json", headers=headers or {})


LONE = "a\ud800b"


@pytest.mark.usefixtures("forget_creation_rates")
@pytest.mark.parametrize("action, field, extra", [
    ("webhook_create", "topic", {"address": ADDRESS}),
    ("webhook_create", "address", {"topic": "dataset/create"}),
    ("webhook_create", "dataset", {"topic": "dataset/create",
                                   "address": ADDRESS}),
    ("webhook_create", "organization", {"topic": "dataset/create",
                                        "address": ADDRESS}),
    ("webhook_create", "group", {"topic": "dataset/create",
                                 "address": ADDRESS}),
    ("webhook_create", "resource", {"topic": "resource/create",
                                    "address": ADDRESS}),
    ("webhook_create", "description", {"topic": "dataset/create",
                                       "address": ADDRESS}),
    ("webhook_show", "id", {}),
    ("webhook_delete", "id", {}),
    ("webhook_ping", "id", {}),
    ("webhook_ping", "topic", {"id": "HOOK"}),
    ("webhook_delivery_list", "id", {}),
    ("webhook_delivery_show", "id", {"delivery_id": "msg_x"}),
    ("webhook_delivery_show", "delivery_id", {"id": "HOOK"}),
    ("webhook_redeliver", "delivery_id", {"id": "HOOK"}),
    ("webhook_recover", "since", {"id": "HOOK"}),
    ("webhook_rotate_secret", "id", {}),
    ("webhook_update", "id", {}),
    ("webhook_update", "address", {"id": "HOOK"}),
    ("webhook_update", "topic", {"id": "HOOK"}),
    ("webhook_update", "description", {"id": "HOOK"}),
    ("webhook_update", "dataset", {"id": "HOOK"}),
])
def test_a_lone_surrogate_is_a_409_naming_the_field(app, action, field,
                                                    extra):
    hook_id = create()
    payload = {key: hook_id if value == "HOOK" else value
               for key, value in extra.items()}
    payload[field] = LONE
    response = _post(app, action, payload)
    assert response.status_code == 409, response.get_data(as_text=True)
    assert field in response.json["error"]


@pytest.mark.usefixtures("forget_creation_rates")
def test_a_lone_surrogate_in_a_list_of_topics_or_a_field_name_is_a_409(app):
    response = _post(app, "webhook_create", {
        "topics": ["dataset/create", LONE], "address": ADDRESS})
    assert response.status_code == 409
    assert "topics" in response.json["error"]
    response = _post(app, "webhook_create", {
        "topic": "dataset/create", "address": ADDRESS, LONE: 1})
    assert response.status_code == 409


@pytest.mark.usefixtures("forget_creation_rates")
@pytest.mark.parametrize("offset", [2 ** 63, 2 ** 64 + 5, 10 ** 30])
def test_list_offset_beyond_a_bigint_is_a_409_naming_it(app, offset):
    user = factories.UserWithToken()
    response = _post(app, "webhook_list", {"offset": offset},
                     headers={"Authorization": user["token"]})
    assert response.status_code == 409, response.get_data(as_text=True)
    assert "offset" in response.json["error"]
    largest = _post(app, "webhook_list", {"offset": 2 ** 63 - 1},
                    headers={"Authorization": user["token"]})
    assert largest.status_code == 200
    assert largest.json["result"] == []


# --- the command line --------------------------------------------------------

def test_cli_updates_disables_enables_and_recovers(cli, receiver, run_jobs):
    from ckan.cli.cli import ckan
    hook_id = create(receiver.url("/cli"))
    dashed = "-C" + hook_id[2:]
    model.Session.execute(sa.text(
        "UPDATE webhooks_hook SET id = :new WHERE id = :old"),
        {"new": dashed, "old": hook_id})
    model.Session.commit()

    result = cli.invoke(ckan, ["webhooks", "update", dashed,
                               "--topic", "dataset/create",
                               "--topic", "dataset/update",
                               "--description", "from the shell"])
    assert result.exit_code == 0, result.output
    shown = show(dashed)
    assert shown["topics"] == ["dataset/create", "dataset/update"]
    assert shown["description"] == "from the shell"

    result = cli.invoke(ckan, ["webhooks", "update", dashed,
                               "--dataset", "no-such-dataset"])
    assert result.exit_code != 0
    assert "dataset" in result.output

    result = cli.invoke(ckan, ["webhooks", "disable", dashed])
    assert result.exit_code == 0, result.output
    assert show(dashed)["status"] == "disabled"
    result = cli.invoke(ckan, ["webhooks", "list"])
    assert result.exit_code == 0, result.output
    assert "dataset/create,dataset/update" in result.output
    result = cli.invoke(ckan, ["webhooks", "enable", dashed])
    assert result.exit_code == 0, result.output
    assert show(dashed)["status"] == "active"

    receiver.answer("/cli", Answer(404))
    call("webhook_ping", id=dashed)
    run_jobs()
    result = cli.invoke(ckan, ["webhooks", "recover", dashed,
                               "--since", "2000-01-01T00:00:00Z"])
    assert result.exit_code == 0, result.output
    assert "Delivering 1 failed deliveries again" in result.output
    run_jobs()
    assert len(receiver.wait_for(2, "/cli")) == 2


# --- the pages show hooks with several topics --------------------------------

def test_pages_name_every_topic_of_a_hook(app):
    user = factories.UserWithToken()
    hook_id = create(context=as_user(user),
                     topics=["dataset/create", "resource/delete"])
    page = app.get("/webhooks/" + hook_id).body
    # the hook's page lists them one by one
    for label in ("A dataset is created", "A resource is deleted"):
        assert label in page
    assert "None" not in page
    page = app.get("/webhooks/{}/delete".format(hook_id)).body
    assert "A dataset is created, A resource is deleted" in page
    assert "None" not in page
    # logged in with an API token (CKAN 2.12 ignores REMOTE_USER)
    page = app.get("/webhooks", headers={
        "Authorization": user["token"]}).body
    assert "A dataset is created, A resource is deleted" in page


@pytest.mark.ckan_config("ckanext.webhooks.verify_intent", "true")
def test_the_page_of_a_pending_hook_offers_no_redelivery(app, receiver,
                                                         run_jobs):
    receiver.always("/page", lambda got: Answer(500))
    hook_id = create(receiver.url("/page"))
    run_jobs()
    page = app.get("/webhooks/" + hook_id).body
    assert "/redeliver" not in page
    # the ping button sends the challenge again
    assert 'id="webhook-ping"' in page
    assert "Send the challenge again" in page


def test_the_page_of_a_paused_hook_says_its_owner_paused_it(app):
    hook_id = create()
    call("webhook_update", id=hook_id, enabled=False)
    page = app.get("/webhooks/" + hook_id).body
    assert "disabled by its owner" in page
    assert "kept failing" not in page
    assert 'id="webhook-ping"' not in page
