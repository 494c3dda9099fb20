"""Limits that cannot be walked around: the per-address cap counts every
spelling of an address once, the creation rate slides, IPv6 clients share a
/64, and logged-in users have a limit of their own."""
from __future__ import annotations

import pytest
import sqlalchemy as sa

import ckan.model as model
import ckan.plugins.toolkit as tk
from ckan.tests import factories, helpers

from ckanext.webhooks import limits
from ckanext.webhooks.addresses import normalized
from ckanext.webhooks.model import Hook
from ckanext.webhooks.tests.factories import hook_count

CREATE = "/api/3/action/webhook_create"


# --- the cap counts a normalized address -------------------------------------

SAME_ADDRESS = {
    "http://example.com/victim": [
        "HTTP://EXAMPLE.COM/victim", "http://Example.Com:80/victim",
        "http://example.com/victim/", "http://example.com/victim?0",
        "http://example.com/victim#x", "http://example.com./victim",
        "http://example.com//victim", "http://example.com/./victim",
        "http://example.com/x/../victim", "http://example.com/%76ictim",
        "http://example.com:080/victim/?a=1#b",
    ],
    "https://example.com": [
        "https://example.com:443/", "HTTPS://example.com/?",
        "https://EXAMPLE.com./",
    ],
    "http://127.0.0.1/hook": [
        "http://127.000.000.001/hook", "http://2130706433/hook",
        "http://0x7f000001/hook", "http://0177.0.0.1/hook",
        "http://127.1/hook", "http://[::ffff:127.0.0.1]/hook",
    ],
    "http://[2001:db8::1]:8080/hook": [
        "http://[2001:DB8:0:0:0:0:0:1]:8080/hook",
        "http://[2001:db8::0001]:8080/hook/",
    ],
    "http://xn--bcher-kva.example/%C3%BC": [
        "http://BÜCHER.example/ü", "http://xn--bcher-kva.example/%c3%bc",
    ],
}

DIFFERENT_ADDRESSES = [
    "http://example.com/victim", "https://example.com/victim",
    "http://example.com:8080/victim", "http://example.com/Victim",
    "http://example.com/victim/more", "http://www.example.com/victim",
]


@pytest.mark.parametrize("canonical, spellings", SAME_ADDRESS.items(),
                         ids=list(SAME_ADDRESS))
def test_every_spelling_normalizes_to_one_address(canonical, spellings):
    assert normalized(canonical) == canonical
    assert {normalized(s) for s in spellings} == {canonical}


def test_different_addresses_stay_different():
    assert len({normalized(a) for a in DIFFERENT_ADDRESSES}) == \
        len(DIFFERENT_ADDRESSES)


@pytest.mark.usefixtures("webhooks")
@pytest.mark.ckan_config("ckanext.webhooks.max_hooks_per_address", "1")
@pytest.mark.parametrize(
    "first, spelling",
    [(canonical, spelling) for canonical, spellings in SAME_ADDRESS.items()
     for spelling in spellings])
def test_each_spelling_of_an_address_counts_against_its_cap(first, spelling):
    helpers.call_action("webhook_create", topic="dataset/create",
                        address=first)
    with pytest.raises(tk.ValidationError) as e:
        helpers.call_action("webhook_create", topic="dataset/create",
                            address=spelling)
    assert "maximum" in e.value.error_dict["address"][0]
    assert hook_count() == 1


@pytest.mark.usefixtures("webhooks")
@pytest.mark.ckan_config("ckanext.webhooks.max_hooks_per_address", "1")
def test_different_addresses_have_caps_of_their_own():
    for address in DIFFERENT_ADDRESSES:
        helpers.call_action("webhook_create", topic="dataset/create",
                            address=address)
    assert hook_count() == len(DIFFERENT_ADDRESSES)


@pytest.mark.usefixtures("webhooks")
def test_the_hook_keeps_its_address_as_given():
    hook_id = helpers.call_action("webhook_create", topic="dataset/create",
                                  address="HTTP://Example.com:80/Victim/?x")
    shown = helpers.call_action("webhook_show", id=hook_id)
    assert shown["address"] == "HTTP://Example.com:80/Victim/?x"


@pytest.mark.usefixtures("clean_db", "with_plugins")
def test_upgrade_normalizes_the_addresses_of_existing_hooks(migrate_db_for):
    migrate_db_for("webhooks", "5a2c9d7e1f34", False)
    try:
        model.Session.execute(sa.text(
            "INSERT INTO webhooks_hook (id, topics, address, secret, status,"
            " created, client_errors) VALUES ('h1', ARRAY['dataset/create'],"
            " 'HTTP://Example.com:80/x/?y', 's', 'active', now(), 0)"))
        model.Session.commit()
    finally:
        migrate_db_for("webhooks")
    model.Session.remove()
    assert model.Session.get(Hook, "h1").normalized_address == \
        "http://example.com/x"


# --- the creation rate -------------------------------------------------------

class _Clock:
    """A clock the test moves by hand (the limits read ``time.time()``)."""

    def __init__(self, now: float):
        self.now = now

    def time(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch):
    # the end of an hour: a fixed hourly slot would start afresh in 2 seconds
    clock = _Clock(1_800_000_000.0 - 2)
    monkeypatch.setattr(limits, "time", clock)
    return clock


def _create(app, remote_addr, headers=None, address="http://example.com/a"):
    return app.post(CREATE, headers=headers or {},
                    json={"topic": "dataset/create", "address": address},
                    environ_base={"REMOTE_ADDR": remote_addr})


@pytest.mark.usefixtures("webhooks", "forget_creation_rates")
@pytest.mark.ckan_config("ckanext.webhooks.anonymous_create_limit", "2")
def test_ipv6_clients_in_one_64_share_a_limit(app):
    assert _create(app, "2001:db8:1:2::1").status_code == 200
    assert _create(app, "2001:db8:1:2:ffff:ffff:ffff:fffe").status_code == 200
    refused = _create(app, "2001:db8:1:2:abcd::7")
    assert refused.status_code == 409
    assert "rate_limit" in refused.json["error"]
    # the next /64 is another client
    assert _create(app, "2001:db8:1:3::1").status_code == 200


@pytest.mark.usefixtures("webhooks", "forget_creation_rates")
@pytest.mark.ckan_config("ckanext.webhooks.anonymous_create_limit", "1")
def test_ipv4_mapped_client_is_its_ipv4_address(app):
    assert _create(app, "203.0.113.9").status_code == 200
    assert _create(app, "::ffff:203.0.113.9").status_code == 409


@pytest.mark.usefixtures("webhooks", "forget_creation_rates")
@pytest.mark.ckan_config("ckanext.webhooks.anonymous_create_limit", "3")
@pytest.mark.ckan_config("ckanext.webhooks.anonymous_create_window", "3600")
def test_no_double_burst_at_the_edge_of_a_window(app, clock):
    for _ in range(3):
        assert _create(app, "203.0.113.5").status_code == 200
    clock.now += 4  # past the hour: a new fixed slot, same sliding window
    refused = _create(app, "203.0.113.5")
    assert refused.status_code == 409
    # the oldest creation leaves the window in 3596 s: "60 minutes"
    assert "60 minutes" in refused.json["error"]["rate_limit"][0]
    clock.now += 3600 - 4 - 1
    assert _create(app, "203.0.113.5").status_code == 409
    clock.now += 1.5  # an hour after the first three
    for _ in range(3):
        assert _create(app, "203.0.113.5").status_code == 200
    assert _create(app, "203.0.113.5").status_code == 409


@pytest.mark.usefixtures("webhooks", "forget_creation_rates")
@pytest.mark.ckan_config("ckanext.webhooks.anonymous_create_limit", "2")
@pytest.mark.ckan_config("ckanext.webhooks.anonymous_create_window", "60")
def test_refused_attempts_do_not_extend_the_wait(app, clock):
    for _ in range(2):
        assert _create(app, "203.0.113.5").status_code == 200
    for _ in range(10):
        clock.now += 5
        assert _create(app, "203.0.113.5").status_code == 409
    clock.now += 11
    assert _create(app, "203.0.113.5").status_code == 200


@pytest.mark.usefixtures("webhooks", "forget_creation_rates")
@pytest.mark.ckan_config("ckanext.webhooks.anonymous_create_limit", "1")
@pytest.mark.ckan_config("ckanext.webhooks.user_create_limit", "3")
def test_logged_in_users_have_a_limit_of_their_own(app):
    user = factories.UserWithToken()
    headers = {"Authorization": user["token"]}
    # counted per account, from whatever address the user comes
    for ip in ("203.0.113.1", "203.0.113.2", "2001:db8:9::1"):
        assert _create(app, ip, headers).status_code == 200
    refused = _create(app, "203.0.113.3", headers)
    assert refused.status_code == 409
    assert "your account" in refused.json["error"]["rate_limit"][0]
    # another user, and anonymous callers from the same address, count apart
    other = factories.UserWithToken()
    assert _create(app, "203.0.113.3",
                   {"Authorization": other["token"]}).status_code == 200
    assert _create(app, "203.0.113.3").status_code == 200
    assert _create(app, "203.0.113.3").status_code == 409


@pytest.mark.usefixtures("webhooks", "forget_creation_rates")
@pytest.mark.ckan_config("ckanext.webhooks.user_create_limit", "1")
def test_sysadmins_are_not_limited(app):
    sysadmin = factories.SysadminWithToken()
    for _ in range(3):
        assert _create(app, "203.0.113.1",
                       {"Authorization": sysadmin["token"]}).status_code == 200


@pytest.mark.usefixtures("webhooks", "forget_creation_rates")
@pytest.mark.ckan_config("ckanext.webhooks.user_create_limit", "0")
@pytest.mark.ckan_config("ckanext.webhooks.anonymous_create_limit", "0")
def test_a_limit_of_zero_turns_it_off(app):
    user = factories.UserWithToken()
    for _ in range(3):
        assert _create(app, "203.0.113.1").status_code == 200
        assert _create(app, "203.0.113.1",
                       {"Authorization": user["token"]}).status_code == 200
