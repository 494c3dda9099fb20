"""No cache keeps a hook's secret or log, and no other site frames the
pages: the headers as a browser or a proxy sees them, over HTTP."""
from __future__ import annotations

import pytest

from ckan.tests import factories, helpers

from ckanext.webhooks.tests.factories import HookFactory

ACTION = "/api/3/action/"

pytestmark = pytest.mark.usefixtures("webhooks")


def _cache_control(response) -> set[str]:
    return {part.strip() for part in
            response.headers.get("Cache-Control", "").split(",")}


def _assert_not_stored(response):
    directives = _cache_control(response)
    assert "no-store" in directives, response.headers
    assert "public" not in directives
    assert not any(d.startswith("max-age") and d != "max-age=0"
                   for d in directives)


def _assert_not_framed(response):
    assert response.headers["X-Frame-Options"] == "DENY"
    assert "frame-ancestors 'none'" in response.headers.getlist(
        "Content-Security-Policy")


@pytest.fixture
def hook_id(receiver):
    hook_id = HookFactory(receiver=receiver)["id"]
    helpers.call_action("webhook_ping", id=hook_id)
    return hook_id


@pytest.mark.usefixtures("forget_creation_rates")
@pytest.mark.parametrize("action", [
    "webhook_show", "webhook_delivery_list"])
def test_get_of_a_hook_is_never_stored(app, hook_id, action):
    response = app.get(ACTION + action, query_string={"id": hook_id})
    assert response.status_code == 200
    _assert_not_stored(response)


@pytest.mark.usefixtures("forget_creation_rates")
def test_every_webhook_action_answer_is_never_stored(app, hook_id):
    answers = [
        app.get("/api/action/webhook_show", query_string={"id": hook_id}),
        app.post(ACTION + "webhook_create", json={
            "topic": "dataset/create", "address": "http://example.com/a"}),
        app.post(ACTION + "webhook_rotate_secret", json={"id": hook_id}),
        app.post(ACTION + "webhook_ping", json={"id": hook_id}),
        # errors too: a 404 and a 409 of an unknown or bad id
        app.get(ACTION + "webhook_show", query_string={"id": "nope"}),
        app.get(ACTION + "webhook_delivery_list",
                query_string={"id": hook_id, "limit": "lots"}),
    ]
    assert [a.status_code for a in answers] == [200, 200, 200, 200, 404, 409]
    for answer in answers:
        _assert_not_stored(answer)


@pytest.mark.usefixtures("forget_creation_rates")
def test_a_users_list_of_hooks_is_never_stored(app, hook_id):
    user = factories.UserWithToken()
    response = app.get(ACTION + "webhook_list",
                       headers={"Authorization": user["token"]})
    assert response.status_code == 200
    _assert_not_stored(response)


def test_other_actions_keep_ckans_caching(app):
    response = app.get(ACTION + "status_show")
    assert response.status_code == 200
    assert "no-store" not in _cache_control(response)
    assert "X-Frame-Options" not in response.headers


@pytest.mark.usefixtures("forget_creation_rates")
def test_pages_are_never_stored_nor_framed(app, hook_id):
    pages = [
        app.get("/webhooks"),
        app.get("/webhooks/" + hook_id),
        app.get("/webhooks/{}/delete".format(hook_id)),
        app.get("/webhooks/unknown-id"),
    ]
    assert [p.status_code for p in pages] == [200, 200, 200, 404]
    for page in pages:
        _assert_not_stored(page)
        _assert_not_framed(page)


def test_other_pages_are_not_changed(app):
    response = app.get("/dataset/")
    assert response.status_code == 200
    assert "X-Frame-Options" not in response.headers
    assert "no-store" not in _cache_control(response)
