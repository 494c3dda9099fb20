"""The webhook actions as API users call them: create, show, delete, list."""
import base64
import datetime
import re

import pytest
from ckanapi import LocalCKAN

import ckan.logic as logic
import ckan.model as model
from ckan.tests import factories, helpers

from ckanext.webhooks.model import Hook
from ckanext.webhooks.tests.callers import anonymous, as_user
from ckanext.webhooks.tests.factories import ADDRESS, hook_count
from ckanext.webhooks.tests.receiver import Answer, echo_challenge

URL_SAFE_ID = re.compile(r"^[A-Za-z0-9_-]{22,}$")

pytestmark = pytest.mark.usefixtures("webhooks")


def create_hook(context=None, **data) -> str:
    data.setdefault("topic", "dataset/create")
    data.setdefault("address", ADDRESS)
    return helpers.call_action("webhook_create",
                               context=context or anonymous(), **data)


def show_hook(hook_id: str) -> dict:
    return helpers.call_action("webhook_show", context=anonymous(), id=hook_id)


def validation_errors(**data) -> dict:
    """The error_dict of a webhook_create that must be refused."""
    before = hook_count()
    with pytest.raises(logic.ValidationError) as raised:
        helpers.call_action("webhook_create", context=anonymous(), **data)
    assert hook_count() == before, "a refused hook must not be stored"
    return raised.value.error_dict


# --- the seed usage ----------------------------------------------------------

def test_seed_usage_runs_verbatim_with_ckanapi():
    ckan = LocalCKAN(username="")
    hook = ckan.action.webhook_create(topic="dataset/create",
                                      address="http://example.com/callback")
    assert isinstance(hook, str)
    shown = ckan.action.webhook_show(id=hook)
    assert shown["id"] == hook
    assert shown["topic"] == "dataset/create"
    assert shown["address"] == "http://example.com/callback"
    assert ckan.action.webhook_delete(id=hook) is None
    with pytest.raises(logic.NotFound):
        ckan.action.webhook_show(id=hook)


# --- ids and secrets ---------------------------------------------------------

# 50 hooks at one address: more than the cap per address allows
@pytest.mark.ckan_config("ckanext.webhooks.max_hooks_per_address", "0")
def test_hook_ids_are_url_safe_long_and_unique():
    ids = [create_hook(address=ADDRESS + "?n={}".format(n))
           for n in range(50)]
    for hook_id in ids:
        assert isinstance(hook_id, str)
        assert URL_SAFE_ID.match(hook_id), hook_id
    assert len(set(ids)) == 50


def test_secret_is_whsec_and_base64_of_32_bytes():
    secrets = {show_hook(create_hook())["secret"] for _ in range(5)}
    assert len(secrets) == 5
    for secret in secrets:
        assert secret.startswith("whsec_")
        assert len(base64.b64decode(secret[len("whsec_"):],
                                    validate=True)) == 32


# --- webhook_show ------------------------------------------------------------

def test_show_has_the_contract_fields():
    hook_id = create_hook(topic="dataset/update", address=ADDRESS)
    shown = show_hook(hook_id)
    for key in ("id", "topic", "address", "filters", "status", "secret",
                "created"):
        assert key in shown, key
    assert shown["id"] == hook_id
    assert shown["topic"] == "dataset/update"
    assert shown["address"] == ADDRESS
    assert shown["status"] == "active"  # test.ini: verify_intent = false
    assert shown["filters"] == {"dataset": None, "organization": None,
                                "group": None, "resource": None}
    assert shown["created"]


def test_show_counts_deliveries(receiver, run_jobs):
    hook_id = create_hook(address=receiver.url("/stats"))
    assert show_hook(hook_id)["deliveries"] == {
        "pending": 0, "succeeded": 0, "failed": 0}
    helpers.call_action("webhook_ping", context=anonymous(), id=hook_id)
    run_jobs()
    receiver.wait_for(1, "/stats")
    shown = show_hook(hook_id)
    assert shown["deliveries"]["succeeded"] == 1
    assert shown["last_success"]


def test_unknown_and_deleted_ids_give_the_same_not_found():
    hook_id = create_hook()
    helpers.call_action("webhook_delete", context=anonymous(), id=hook_id)
    messages = []
    for missing in ("no-such-hook", hook_id, "x" * 43):
        with pytest.raises(logic.NotFound) as raised:
            show_hook(missing)
        messages.append(str(raised.value))
    assert len(set(messages)) == 1
    assert hook_id not in messages[0]


@pytest.mark.parametrize("action, extra", [
    ("webhook_delete", {}),
    ("webhook_ping", {}),
    ("webhook_delivery_list", {}),
    ("webhook_rotate_secret", {}),
    ("webhook_redeliver", {"delivery_id": "msg_nothing"}),
])
def test_every_action_taking_an_id_says_not_found_for_a_deleted_hook(
        action, extra):
    hook_id = create_hook()
    helpers.call_action("webhook_delete", context=anonymous(), id=hook_id)
    with pytest.raises(logic.NotFound):
        helpers.call_action(action, context=anonymous(), id=hook_id, **extra)


def test_delete_twice_is_not_found():
    hook_id = create_hook()
    helpers.call_action("webhook_delete", context=anonymous(), id=hook_id)
    with pytest.raises(logic.NotFound):
        helpers.call_action("webhook_delete", context=anonymous(), id=hook_id)


# --- validation --------------------------------------------------------------

@pytest.mark.parametrize("data, field", [
    ({"address": ADDRESS}, "topic"),
    ({"topic": "dataset/create"}, "address"),
    ({"topic": "dataset/created", "address": ADDRESS}, "topic"),
    ({"topic": "*", "address": ADDRESS}, "topic"),
    ({"topic": "", "address": ADDRESS}, "topic"),
    ({"topic": "dataset/create", "address": "ftp://example.com/x"}, "address"),
    ({"topic": "dataset/create", "address": "javascript:alert(1)"}, "address"),
    ({"topic": "dataset/create", "address": "file:///etc/passwd"}, "address"),
    ({"topic": "dataset/create", "address": "http://"}, "address"),
    ({"topic": "dataset/create", "address": ""}, "address"),
    ({"topic": "dataset/create",
      "address": "http://example.com/" + "a" * 2000}, "address"),
    ({"topic": 123, "address": ADDRESS}, "topic"),
    ({"topic": None, "address": ADDRESS}, "topic"),
    ({"topic": "dataset/create", "address": ["x"]}, "address"),
    ({"topic": "dataset/create", "address": ADDRESS, "dataset": {}},
     "dataset"),
    ({"topic": "dataset/create", "address": ADDRESS, "organization": 7},
     "organization"),
    ({"topic": "dataset/create", "address": ADDRESS, "colour": "red"},
     "colour"),
])
def test_bad_input_is_a_validation_error_naming_the_field(data, field):
    errors = validation_errors(**data)
    assert field in errors, errors
    assert errors[field]


def test_address_of_exactly_2000_characters_is_accepted():
    address = "http://example.com/"
    address += "a" * (2000 - len(address))
    assert len(address) == 2000
    hook_id = create_hook(address=address)
    assert show_hook(hook_id)["address"] == address


@pytest.mark.ckan_config("ckanext.webhooks.allow_private_addresses", "false")
@pytest.mark.parametrize("address", [
    "http://127.0.0.1/x", "http://localhost:5000/x", "http://10.1.2.3/",
    "http://[::1]/", "http://169.254.169.254/latest/meta-data",
])
def test_private_addresses_are_refused_by_default(address):
    errors = validation_errors(topic="dataset/create", address=address)
    assert "address" in errors


@pytest.mark.parametrize("field", ["dataset", "organization", "group",
                                   "resource"])
def test_filter_naming_no_entity_is_refused(field):
    errors = validation_errors(topic="dataset/*", address=ADDRESS,
                               **{field: "no-such-thing"})
    assert list(errors) == [field]


def test_filter_on_organization_given_a_group_is_refused_and_vice_versa():
    group = factories.Group()
    org = factories.Organization()
    assert "organization" in validation_errors(
        topic="dataset/*", address=ADDRESS, organization=group["id"])
    assert "group" in validation_errors(
        topic="dataset/*", address=ADDRESS, group=org["id"])


def test_private_dataset_filter_from_anonymous_is_refused_like_unknown():
    org = factories.Organization()
    private = factories.Dataset(owner_org=org["id"], private=True)
    unknown = validation_errors(topic="dataset/*", address=ADDRESS,
                                dataset="no-such-dataset")
    for name_or_id in (private["id"], private["name"]):
        hidden = validation_errors(topic="dataset/*", address=ADDRESS,
                                   dataset=name_or_id)
        assert hidden == unknown


def test_resource_filter_of_private_dataset_from_anonymous_is_refused():
    org = factories.Organization()
    private = factories.Dataset(owner_org=org["id"], private=True)
    resource = factories.Resource(package_id=private["id"])
    unknown = validation_errors(topic="resource/*", address=ADDRESS,
                                resource="no-such-resource")
    hidden = validation_errors(topic="resource/*", address=ADDRESS,
                               resource=resource["id"])
    assert hidden == unknown


def test_private_dataset_filter_from_a_member_is_accepted():
    user = factories.User()
    org = factories.Organization(
        users=[{"name": user["name"], "capacity": "member"}])
    private = factories.Dataset(owner_org=org["id"], private=True)
    hook_id = create_hook(as_user(user), topic="dataset/*",
                          dataset=private["name"])
    assert show_hook(hook_id)["filters"]["dataset"] == private["id"]


def test_deleted_dataset_filter_is_refused_like_unknown():
    dataset = factories.Dataset()
    helpers.call_action("package_delete", id=dataset["id"])
    unknown = validation_errors(topic="dataset/*", address=ADDRESS,
                                dataset="no-such-dataset")
    assert validation_errors(topic="dataset/*", address=ADDRESS,
                             dataset=dataset["id"]) == unknown


def test_filters_given_by_name_are_stored_as_ids():
    org = factories.Organization()
    group = factories.Group()
    dataset = factories.Dataset(owner_org=org["id"],
                                groups=[{"id": group["id"]}])
    resource = factories.Resource(package_id=dataset["id"])
    hook_id = create_hook(topic="dataset/*", dataset=dataset["name"],
                          organization=org["name"], group=group["name"])
    assert show_hook(hook_id)["filters"] == {
        "dataset": dataset["id"], "organization": org["id"],
        "group": group["id"], "resource": None}
    hook_id = create_hook(topic="resource/*", resource=resource["id"])
    assert show_hook(hook_id)["filters"]["resource"] == resource["id"]


def test_blank_filters_mean_no_filter():
    hook_id = create_hook(dataset="", organization="  ")
    assert show_hook(hook_id)["filters"]["dataset"] is None
    assert show_hook(hook_id)["filters"]["organization"] is None


# --- who may create and list -------------------------------------------------

@pytest.mark.ckan_config("ckanext.webhooks.allow_anonymous", "false")
def test_anonymous_create_is_refused_when_anonymous_not_allowed():
    before = hook_count()
    with pytest.raises(logic.NotAuthorized):
        create_hook(anonymous())
    assert hook_count() == before
    user = factories.User()
    assert create_hook(as_user(user))


def test_list_refuses_anonymous():
    create_hook()
    with pytest.raises(logic.NotAuthorized):
        helpers.call_action("webhook_list", context=anonymous())


def test_list_shows_a_user_only_their_own_hooks():
    alice, bob = factories.User(), factories.User()
    mine = {create_hook(as_user(alice)) for _ in range(2)}
    create_hook(as_user(bob))
    create_hook(anonymous())
    listed = helpers.call_action("webhook_list", context=as_user(alice))
    assert {h["id"] for h in listed} == mine
    assert all(h["secret"] for h in listed)


def test_list_shows_a_sysadmin_every_hook():
    admin, alice = factories.Sysadmin(), factories.User()
    every = {create_hook(as_user(alice)), create_hook(anonymous()),
             create_hook(as_user(admin))}
    listed = helpers.call_action("webhook_list", context=as_user(admin))
    assert {h["id"] for h in listed} == every


def test_list_pages_with_limit_and_offset():
    user = factories.User()
    created = [create_hook(as_user(user)) for _ in range(5)]
    pages = [helpers.call_action("webhook_list", context=as_user(user),
                                 limit=2, offset=offset)
             for offset in (0, 2, 4)]
    assert [len(page) for page in pages] == [2, 2, 1]
    seen = [h["id"] for page in pages for h in page]
    assert sorted(seen) == sorted(created)
    everything = helpers.call_action("webhook_list", context=as_user(user))
    assert [h["id"] for h in everything] == seen


@pytest.mark.parametrize("paging", [{"limit": 0}, {"limit": "many"},
                                    {"offset": -1}])
def test_list_refuses_bad_paging(paging):
    user = factories.User()
    with pytest.raises(logic.ValidationError) as raised:
        helpers.call_action("webhook_list", context=as_user(user), **paging)
    assert set(raised.value.error_dict) == set(paging)


# --- through the HTTP API ----------------------------------------------------

@pytest.mark.usefixtures("forget_creation_rates")
def test_api_create_with_json_returns_the_id(app):
    response = app.post("/api/3/action/webhook_create",
                        json={"topic": "dataset/create", "address": ADDRESS})
    assert response.status_code == 200
    body = response.json
    assert body["success"] is True
    hook_id = body["result"]
    assert URL_SAFE_ID.match(hook_id)
    shown = app.get("/api/3/action/webhook_show", query_string={
        "id": hook_id})
    assert shown.status_code == 200
    assert shown.json["result"]["address"] == ADDRESS


@pytest.mark.usefixtures("forget_creation_rates")
@pytest.mark.parametrize("payload, field", [
    ({"topic": "nope", "address": ADDRESS}, "topic"),
    ({"topic": "dataset/create", "address": "ftp://example.com"}, "address"),
    ({"topic": "dataset/create", "address": ["x"]}, "address"),
    ({"topic": ["dataset/create"], "address": ADDRESS}, "topic"),
    ({"topic": "dataset/create", "address": ADDRESS, "dataset": {"a": 1}},
     "dataset"),
    ({"topic": "dataset/create", "address": ADDRESS, "dataset": "missing"},
     "dataset"),
    ({"address": ADDRESS}, "topic"),
])
def test_api_bad_input_is_409_naming_the_field(app, payload, field):
    before = hook_count()
    response = app.post("/api/3/action/webhook_create", json=payload)
    assert response.status_code == 409, response.get_data(as_text=True)
    error = response.json["error"]
    assert error["__type"] == "Validation Error"
    assert field in error
    assert hook_count() == before


@pytest.mark.usefixtures("forget_creation_rates")
@pytest.mark.parametrize("action, payload", [
    ("webhook_show", {"id": 123}),
    ("webhook_show", {}),
    ("webhook_delivery_list", {"id": "x", "limit": "lots"}),
])
def test_api_bad_ids_are_409_not_500(app, action, payload):
    response = app.post("/api/3/action/" + action, json=payload)
    assert response.status_code == 409, response.get_data(as_text=True)


@pytest.mark.usefixtures("forget_creation_rates")
def test_api_unknown_id_is_404(app):
    response = app.post("/api/3/action/webhook_show", json={"id": "nope"})
    assert response.status_code == 404


@pytest.mark.usefixtures("forget_creation_rates")
def test_api_list_is_403_for_anonymous_and_own_hooks_for_a_token(app):
    response = app.post("/api/3/action/webhook_list", json={})
    assert response.status_code == 403
    assert response.json["success"] is False

    user = factories.UserWithToken()
    headers = {"Authorization": user["token"]}
    created = app.post("/api/3/action/webhook_create", headers=headers,
                       json={"topic": "dataset/*", "address": ADDRESS})
    assert created.status_code == 200
    create_hook(anonymous())
    listed = app.post("/api/3/action/webhook_list", headers=headers,
                      json={})
    assert listed.status_code == 200
    assert [h["id"] for h in listed.json["result"]] == [
        created.json["result"]]


# --- verification of intent --------------------------------------------------

@pytest.mark.ckan_config("ckanext.webhooks.verify_intent", "true")
def test_hook_becomes_active_when_receiver_echoes_the_challenge(
        receiver, run_jobs):
    receiver.always("/verify", echo_challenge)
    hook_id = create_hook(address=receiver.url("/verify"))
    hook = show_hook(hook_id)
    assert hook["status"] == "pending"
    run_jobs()
    got = receiver.wait_for(1, "/verify")
    assert len(got) == 1
    payload = got[0].verify(hook["secret"])
    assert payload["type"] == "webhook/verify"
    assert payload["hook_id"] == hook_id
    assert set(payload["data"]) == {"challenge"}
    assert payload["data"]["challenge"]
    assert show_hook(hook_id)["status"] == "active"


@pytest.mark.ckan_config("ckanext.webhooks.verify_intent", "true")
def test_hook_becomes_active_when_receiver_answers_challenge_as_json(
        receiver, run_jobs):
    receiver.always("/verify-json", lambda got: Answer(
        200, b'{"challenge": "%s"}' % got.json["data"]["challenge"].encode(),
        {"Content-Type": "application/json"}))
    hook_id = create_hook(address=receiver.url("/verify-json"))
    run_jobs()
    receiver.wait_for(1, "/verify-json")
    assert show_hook(hook_id)["status"] == "active"


@pytest.mark.ckan_config("ckanext.webhooks.verify_intent", "true")
def test_unverified_hook_stays_pending_and_gets_no_events(receiver, run_jobs):
    receiver.always("/good", echo_challenge)
    receiver.always("/wrong", lambda got: Answer(200, b"not the challenge"))
    good = create_hook(address=receiver.url("/good"))
    wrong = create_hook(address=receiver.url("/wrong"))
    run_jobs()
    assert len(receiver.wait_for(1, "/wrong")) == 1
    receiver.wait_for(1, "/good")
    assert show_hook(good)["status"] == "active"
    assert show_hook(wrong)["status"] == "pending"

    dataset = factories.Dataset()
    run_jobs()
    events = [r for r in receiver.wait_for(2, "/good")
              if r.json["type"] == "dataset/create"]
    assert [e.json["data"]["id"] for e in events] == [dataset["id"]]
    assert [r.json["type"] for r in receiver.on("/wrong")] == [
        "webhook/verify"]
    assert show_hook(wrong)["status"] == "pending"


@pytest.mark.ckan_config("ckanext.webhooks.verify_intent", "true")
def test_hook_not_verified_within_24_hours_is_removed(receiver, run_jobs):
    receiver.always("/silent", lambda got: Answer(200, b"no"))
    stale = create_hook(address=receiver.url("/silent"))
    fresh = create_hook(address=receiver.url("/silent"))
    row = model.Session.get(Hook, stale)
    row.created -= datetime.timedelta(hours=24, minutes=1)
    row.last_challenge -= datetime.timedelta(hours=24, minutes=1)
    model.Session.commit()
    run_jobs()
    with pytest.raises(logic.NotFound):
        show_hook(stale)
    assert show_hook(fresh)["status"] == "pending"


# --- input PostgreSQL cannot store -------------------------------------------

@pytest.mark.usefixtures("forget_creation_rates")
@pytest.mark.parametrize("action", [
    "webhook_show", "webhook_delete", "webhook_ping", "webhook_delivery_list",
    "webhook_rotate_secret", "webhook_redeliver"])
def test_api_id_with_a_nul_character_is_not_a_500(app, action):
    response = app.post("/api/3/action/" + action,
                        json={"id": "abc\u0000def", "delivery_id": "msg_x"})
    assert response.status_code in (404, 409), response.status_code


@pytest.mark.usefixtures("forget_creation_rates")
def test_api_delivery_id_with_a_nul_character_is_not_a_500(app):
    hook_id = create_hook()
    response = app.post("/api/3/action/webhook_redeliver",
                        json={"id": hook_id, "delivery_id": "msg\u0000"})
    assert response.status_code in (404, 409), response.status_code


@pytest.mark.usefixtures("forget_creation_rates")
@pytest.mark.parametrize("field", ["dataset", "organization", "group",
                                   "resource"])
def test_api_filter_with_a_nul_character_is_a_409_naming_it(app, field):
    before = hook_count()
    response = app.post("/api/3/action/webhook_create", json={
        "topic": "dataset/*", "address": ADDRESS, field: "x\u0000y"})
    assert response.status_code == 409, response.status_code
    assert field in response.json["error"]
    assert hook_count() == before
