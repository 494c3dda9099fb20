"""The pages a person debugging a receiver uses, without JavaScript: the
attempts' headers, the history's filters and pages, health, the pending
hook's challenge, titles and filter names, the admin page, and the smaller
points of issue 30."""
from __future__ import annotations

import datetime

import pytest

import ckan.model as model
from ckan.tests import factories, helpers

from ckanext.webhooks.model import Hook, Message, utcnow
from ckanext.webhooks.tests.factories import HookFactory
from ckanext.webhooks.tests.receiver import Answer
from ckanext.webhooks.tests.test_views import (
    Browser, _flashes, _html, _one, _text)

pytestmark = pytest.mark.usefixtures("webhooks", "forget_creation_rates")


def test_the_delivery_page_shows_what_each_attempt_sent_and_got(
        app, receiver, run_jobs):
    hook_id = HookFactory(receiver=receiver)["id"]
    receiver.answer("/hook", Answer(503, b"down", headers={
        "X-Trace": "t-42"}))
    ping_id = helpers.call_action("webhook_ping", id=hook_id)
    run_jobs()
    [got] = receiver.wait_for(1, "/hook")
    page = app.get("/webhooks/{}/deliveries/{}".format(hook_id, ping_id))
    [row] = _html(page).cssselect("tr.webhooks-attempt")
    sent = _one(row, "details#attempt-1-request pre").text_content()
    for name in ("webhook-id", "webhook-timestamp", "webhook-signature"):
        assert "{}: {}".format(name, got.headers[name]) in sent
    answered = _one(row, "details#attempt-1-response pre").text_content()
    assert answered.startswith("HTTP/1.0 503 Service Unavailable\n")
    assert "X-Trace: t-42" in answered
    assert _one(row, "details#attempt-1-body pre").text_content() == "down"


def test_the_hook_page_filters_and_pages_its_deliveries(app, receiver,
                                                         run_jobs):
    hook_id = HookFactory(receiver=receiver)["id"]
    receiver.answer("/hook", *[Answer(500)] * 3)
    for _ in range(25):
        helpers.call_action("webhook_ping", id=hook_id)
    run_jobs()
    model.Session.remove()
    start = utcnow() - datetime.timedelta(hours=1)
    for i, message in enumerate(model.Session.query(Message).filter(
            Message.hook_id == hook_id).order_by(Message.created)):
        message.created = start + datetime.timedelta(seconds=i)
    model.Session.commit()

    def rows(page):
        return _html(page).cssselect("tr.webhooks-delivery")

    first = app.get("/webhooks/" + hook_id)
    assert len(rows(first)) == 20
    older = _one(first, "nav.webhooks-pages a[rel=next]").get("href")
    second = app.get(older)
    assert len(rows(second)) == 5
    _one(second, "nav.webhooks-pages a[rel=prev]")
    # the filter form is a GET form; pending ones are the three 500s
    form = _one(first, "form#webhooks-delivery-filters")
    assert form.get("method") == "get"
    pending = app.get("/webhooks/" + hook_id,
                      query_string={"status": "pending"})
    assert len(rows(pending)) == 3
    assert all("Pending" in _text(r) for r in rows(pending))
    assert _one(pending, "#field-filter-status option[selected]").get(
        "value") == "pending"
    assert rows(app.get("/webhooks/" + hook_id, query_string={
        "type": "dataset/create"})) == []
    # a bad filter in the address is said, not a 500 or a 404
    bad = app.get("/webhooks/" + hook_id, query_string={"status": "gone"})
    assert bad.status_code == 200
    assert "Unknown status" in _text(_one(bad, ".webhooks-filter-error"))


def test_the_hook_page_shows_health(app, receiver, run_jobs):
    hook_id = HookFactory(receiver=receiver)["id"]
    receiver.answer("/hook", Answer(200), Answer(200), Answer(200),
                    Answer(400))
    for _ in range(4):
        helpers.call_action("webhook_ping", id=hook_id)
    run_jobs()
    receiver.wait_for(4, "/hook")
    health = _text(_one(app.get("/webhooks/" + hook_id), ".webhooks-health"))
    assert "Last 24 hours: 75% of 4 attempts succeeded; median" in health
    assert "95th percentile" in health
    assert "Last 7 days: 75% of 4 attempts succeeded" in health
    assert "Last failure: 20" in health and "Last success: 20" in health


@pytest.mark.ckan_config("ckanext.webhooks.verify_intent", "true")
def test_a_pending_hook_says_how_its_challenge_went_and_when_it_may_go_again(
        app, receiver, run_jobs):
    receiver.always("/hook", lambda got: Answer(404, b"no such page"))
    hook_id = HookFactory(receiver=receiver)["id"]
    run_jobs()
    browser = Browser(app)
    page = browser.get("/webhooks/" + hook_id)
    outcome = _text(_one(page, ".webhooks-challenge-outcome"))
    assert "your receiver answered 404" in outcome
    assert "It can be sent again from" in _text(_one(page,
                                                     ".webhooks-pending"))
    # sent a moment ago: pressing the button sends nothing, and says so
    page = browser.submit(page, "/webhooks/{}/ping".format(hook_id))
    flashes = _flashes(page)
    assert any("Nothing was sent" in f for f in flashes), flashes
    assert not any("is sent again instead" in f for f in flashes)
    assert _html(page).cssselect(".alert-error, .alert-danger")
    # ten minutes later it goes
    model.Session.query(Hook).filter(Hook.id == hook_id).update(
        {"last_challenge": utcnow() - datetime.timedelta(minutes=11)})
    model.Session.commit()
    page = browser.submit(browser.get("/webhooks/" + hook_id),
                          "/webhooks/{}/ping".format(hook_id))
    assert any("is sent again instead" in f for f in _flashes(page))


def test_titles_say_where_a_hook_sends_and_filters_their_names(app):
    org = factories.Organization(title="Environment Agency",
                                 name="environment-agency")
    hook = HookFactory(address="http://example.com/mirror",
                       topics=["dataset/*", "resource/create"],
                       organization="environment-agency")
    page = app.get("/webhooks/" + hook["id"])
    assert _text(_one(page, "h1")).startswith(
        "Webhook: example.com/mirror")
    [filter_line] = _html(page).cssselect(".webhooks-filter")
    assert "Environment Agency (environment-agency)" in _text(filter_line)
    assert org["id"] not in _text(filter_line)


def test_a_topic_and_its_wildcard_together_are_refused(app):
    browser = Browser(app)
    page = browser.submit(browser.get("/webhooks"), "/webhooks",
                          topics=["dataset/*", "dataset/create"],
                          address="http://example.com/twice")
    summary = _text(_one(page, ".webhooks-error-summary"))
    assert "dataset/create already covered by dataset/*" in summary
    assert model.Session.query(Hook).count() == 0


def test_an_empty_address_is_asked_for_not_judged(app):
    browser = Browser(app)
    page = browser.submit(browser.get("/webhooks"), "/webhooks",
                          topics=["dataset/create"], address="")
    error = _text(_one(page, ".form-group:has(#field-address) .error-block"))
    assert error.startswith("Enter the address of your receiver")
    assert "http://" not in error.split("e.g.")[0]


def test_the_admin_page_has_owners_search_and_a_sysadmins_pause(app):
    owner = factories.User(name="the-owner")
    sysadmin = factories.SysadminWithToken()
    mine = HookFactory(user=owner, address="http://receiver.example.org"
                       "/a/very/long/path/that/wraps?token=abc&x=1")["id"]
    other = HookFactory(address="http://other.example.org/x")["id"]
    admin = Browser(app, {"Authorization": sysadmin["token"]})
    page = admin.get("/ckan-admin/webhooks")
    row = _one(page, 'tr[data-hook-id="{}"]'.format(mine))
    assert _text(_one(row, "td.webhooks-owner")) == "the-owner"
    assert "nobody" in _text(_one(page, 'tr[data-hook-id="{}"] '
                                        'td.webhooks-owner'.format(other)))
    # the host is never split; the rest may wrap between its parts
    host = _one(row, "code.webhooks-address .webhooks-host")
    assert host.text_content() == "http://receiver.example.org"
    assert len(row.cssselect("code.webhooks-address wbr")) == 8

    found = admin.get("/ckan-admin/webhooks", query_string={"q": "the-owner"})
    assert [r.get("data-hook-id") for r in
            _html(found).cssselect("tr.webhooks-admin-hook")] == [mine]

    page = admin.submit(page, "/webhooks/{}/disable".format(mine))
    row = _one(page, 'tr[data-hook-id="{}"]'.format(mine))
    assert _text(_one(row, ".webhooks-status-reason")) == \
        "disabled by a sysadmin"
    hook_page = app.get("/webhooks/" + mine)
    assert "disabled by a sysadmin" in _text(_one(hook_page,
                                                  ".webhooks-disabled"))


def test_own_hooks_come_first_with_health_and_on_the_dashboard(
        app, receiver, run_jobs):
    user = factories.UserWithToken()
    hook_id = HookFactory(user=user, receiver=receiver)["id"]
    helpers.call_action("webhook_ping", id=hook_id)
    run_jobs()
    browser = Browser(app, {"Authorization": user["token"]})
    page = browser.get("/webhooks")
    intro = _text(_one(page, ".webhooks-intro"))
    assert "You need no account" not in intro
    headings = [_text(h2) for h2 in _html(page).cssselect("article h2")]
    assert headings.index("Your webhooks") < headings.index(
        "Create a webhook")
    health = _text(_one(page, ".webhooks-own-health"))
    assert health.startswith("100% of 1 succeeded")

    dashboard = browser.get("/dashboard/webhooks")
    assert dashboard.status_code == 200
    _one(dashboard, 'tr[data-hook-id="{}"]'.format(hook_id))
    tab = _one(dashboard, 'a[href="/dashboard/webhooks"]')
    assert "My Webhooks" in _text(tab)
    # not for visitors
    assert app.get("/dashboard/webhooks", follow_redirects=False) \
        .status_code == 302
    assert "You need no account" in _text(_one(app.get("/webhooks"),
                                                ".webhooks-intro"))


def test_an_open_error_is_shown_at_the_top(app):
    page = app.get("/webhooks/open")
    primary = _one(page, ".primary")
    _one(primary, "form#webhook-open-form .error-block")
    secondary = _html(page).cssselect(".secondary form#webhook-open-form")
    assert secondary == []


def test_recovering_says_when_it_works_again(app, receiver, run_jobs):
    receiver.always("/hook", lambda got: Answer(400))
    hook_id = HookFactory(receiver=receiver)["id"]
    helpers.call_action("webhook_ping", id=hook_id)
    run_jobs()
    browser = Browser(app)
    page = browser.get("/webhooks/" + hook_id)
    assert "Works once every 10 minutes" in _text(
        _one(page, "#webhook-recover-form"))
    page = browser.submit(page, "/webhooks/{}/recover".format(hook_id),
                          since="2020-01-01T00:00")
    later = _text(_one(page, ".webhooks-recover-later"))
    assert "once every 10 minutes, so again from" in later


def test_every_page_of_data_links_to_a_webhook_in_the_same_place(app):
    org = factories.Organization()
    group = factories.Group()
    dataset = factories.Dataset(owner_org=org["id"],
                                groups=[{"id": group["id"]}])
    resource = factories.Resource(package_id=dataset["id"])
    page = app.get("/dataset/{}/resource/{}".format(dataset["name"],
                                                    resource["id"]))
    link = _one(page, "a.webhooks-subscribe-link").get("href")
    assert link == "/webhooks?resource={}#create".format(resource["id"])
    # on organization and group pages: right after their info, before the
    # facets
    for url in ("/organization/" + org["name"], "/group/" + group["name"]):
        page = app.get(url)
        modules = _html(page).cssselect(
            ".secondary > *, .secondary .module, .secondary .filters")
        names = [("subscribe" if "webhooks-subscribe" in (m.get("class")
                                                          or "")
                  else "filters" if "filters" in (m.get("class") or "")
                  else None) for m in modules]
        names = [n for n in names if n]
        assert names[:2] == ["subscribe", "filters"], (url, names)
        assert page.status_code == 200
