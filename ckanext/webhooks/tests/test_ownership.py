"""A hook belongs to the user who created it, not to the API token used:
what holds when the token is revoked, and when the owner is deleted or
otherwise not active (docs/access.rst, "Owners")."""
from __future__ import annotations

import pytest

import ckan.model as model
from ckan.tests import factories, helpers


class Portal:
    """An organization with a member who has an API token and a hook."""

    def __init__(self, app, receiver):
        self.app = app
        self.receiver = receiver
        self.member = factories.UserWithToken()
        self.org = factories.Organization(users=[
            {"name": self.member["name"], "capacity": "member"}])
        response = app.post(
            "/api/3/action/webhook_create",
            headers={"Authorization": self.member["token"]},
            json={"topic": "dataset/create", "address": receiver.url()})
        assert response.status_code == 200, response.json
        self.hook_id = response.json["result"]

    def delivered(self, run_jobs) -> dict[str, bool]:
        """Create a private and a public dataset; which reached the hook."""
        private = factories.Dataset(owner_org=self.org["id"], private=True)
        public = factories.Dataset(owner_org=self.org["id"])
        run_jobs()
        got = {r.json["data"]["id"] for r in self.receiver.requests}
        self.receiver.requests.clear()
        assert public["id"] in got, "the public event must arrive"
        return {"private": private["id"] in got, "public": True}

    def set_owner_state(self, state: str) -> None:
        user = model.User.get(self.member["id"])
        user.state = state
        model.Session.commit()
        model.Session.remove()


@pytest.fixture
def portal(app, webhooks, receiver, forget_creation_rates):
    return Portal(app, receiver)


def test_revoking_the_token_leaves_the_hook_to_its_owner(portal, run_jobs):
    [token] = helpers.call_action(
        "api_token_list", context={"user": portal.member["name"]},
        user_id=portal.member["id"])
    helpers.call_action("api_token_revoke", jti=token["id"])
    assert portal.delivered(run_jobs) == {"private": True, "public": True}
    assert helpers.call_action(
        "webhook_list", context={"user": portal.member["name"]}
    )[0]["id"] == portal.hook_id


def test_a_deleted_owners_hook_acts_for_an_anonymous_visitor(
        portal, run_jobs):
    assert portal.delivered(run_jobs)["private"] is True
    helpers.call_action("user_delete", id=portal.member["id"])
    assert portal.delivered(run_jobs) == {"private": False, "public": True}
    # the hook is still there for whoever knows its id
    shown = helpers.call_action("webhook_show", id=portal.hook_id)
    assert shown["owned"] is True and shown["status"] == "active"
    # the deleted user's token no longer lists or manages anything
    response = portal.app.post(
        "/api/3/action/webhook_list",
        headers={"Authorization": portal.member["token"]}, json={})
    assert response.status_code == 403


def test_an_owner_not_active_is_like_a_deleted_one_until_active_again(
        portal, run_jobs):
    portal.set_owner_state("pending")
    assert portal.delivered(run_jobs) == {"private": False, "public": True}
    portal.set_owner_state("active")
    assert portal.delivered(run_jobs) == {"private": True, "public": True}
