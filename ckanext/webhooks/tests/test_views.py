"""The pages under /webhooks, as a browser without JavaScript uses them.

Forms are read from the pages and submitted with the CSRF token they carry,
in one cookie session, the way a browser does.
"""
from __future__ import annotations

import datetime
import html
import json
import re
import types
from pathlib import Path
from typing import Optional

import lxml.html
import pytest
import sqlalchemy as sa
from babel.messages.extract import extract_from_file
from babel.messages.pofile import read_po
from standardwebhooks import Webhook

import ckan.model as model
from ckan.tests import factories, helpers

from ckanext.webhooks.model import Message
from ckanext.webhooks.tests.factories import ADDRESS, HookFactory, hook_ids
from ckanext.webhooks.tests.receiver import Answer


# --- a tiny browser ----------------------------------------------------------

def _html(page) -> lxml.html.HtmlElement:
    """The page as a browser parses it."""
    return lxml.html.document_fromstring(page.body)


def _form_fields(form: lxml.html.FormElement) -> dict:
    """What the form sends when submitted, as a browser fills it in."""
    fields: dict = {}
    for element in form.inputs:
        name = element.get("name")
        if not name:
            continue
        if element.tag == "input" and element.get("type") == "checkbox":
            checked = fields.setdefault(name, [])
            if element.checked:
                checked.append(element.get("value") or "on")
        elif element.tag in ("select", "textarea"):
            # a select without a selected option sends its first
            fields[name] = element.value or ""
        else:
            fields[name] = element.get("value") or ""
    return fields


def _csrf_token(page) -> str:
    """The CSRF token the page's forms carry."""
    tokens = {i.get("value") for i in
              _html(page).cssselect('input[name="_csrf_token"]')}
    assert len(tokens) == 1 and all(tokens), tokens
    return tokens.pop()


class Browser:
    """One cookie session against the test app; ``headers`` log a user in."""

    def __init__(self, app, headers: Optional[dict] = None,
                 address: str = "192.0.2.10") -> None:
        self.client = app.test_client()
        self.headers = headers or {}
        # the client address, as a WSGI server would set it
        self.environ = {"REMOTE_ADDR": address}

    def get(self, url: str, **kwargs):
        return self.client.get(url, headers=self.headers,
                               environ_overrides=self.environ, **kwargs)

    def post(self, url: str, data: dict, **kwargs):
        return self.client.post(url, data=data, headers=self.headers,
                                environ_overrides=self.environ, **kwargs)

    def submit(self, page, action_ends: str, **values):
        """Fill the form whose action ends with ``action_ends``, submit it."""
        forms = [f for f in _html(page).forms
                 if (f.get("action") or "").endswith(action_ends)]
        assert forms, "no form posting to {} on the page".format(action_ends)
        form = forms[0]
        assert form.method == "POST"
        fields = _form_fields(form)
        assert fields.get("_csrf_token"), "the form has no CSRF token"
        return self.post(form.get("action"), dict(fields, **values))


# --- reading a page ----------------------------------------------------------

def _text(element: lxml.html.HtmlElement) -> str:
    """An element's text, one space between its parts."""
    return " ".join(" ".join(element.itertext()).split())


def _markup(element: lxml.html.HtmlElement) -> str:
    """An element as HTML, attributes and all."""
    return lxml.html.tostring(element, encoding="unicode")


def _one(page_or_element, selector: str) -> lxml.html.HtmlElement:
    """The only element ``selector`` finds."""
    root = page_or_element if isinstance(
        page_or_element, lxml.html.HtmlElement) else _html(page_or_element)
    found = root.cssselect(selector)
    assert len(found) == 1, "{} elements {}".format(len(found), selector)
    return found[0]


def _flashes(page) -> list[str]:
    area = _one(page, "div.flash-messages")
    return [_text(alert) for alert in area.cssselect("div.alert")]


def _field_group(page, field_id: str) -> lxml.html.HtmlElement:
    """The form-group of one field: its label, input, errors and help."""
    label = _one(page, 'label[for="{}"]'.format(field_id))
    groups = [e for e in label.iterancestors("div")
              if "form-group" in e.classes]
    assert groups, "{} is in no form-group".format(field_id)
    return groups[0]


def _errors_in(element: lxml.html.HtmlElement) -> list[str]:
    return [_text(e) for e in element.cssselect(".error-block")]


def _topics_fieldset(page) -> lxml.html.HtmlElement:
    return _one(page, "fieldset#field-topics")


def _checked_topics(page) -> list[str]:
    return [i.get("value") for i in
            _topics_fieldset(page).cssselect('input[name="topics"]')
            if i.checked]


def _error_summary(page) -> list[str]:
    """The lines of the error summary at the top of a form."""
    summary = _one(page, "div.error-explanation")
    return [_text(li) for li in summary.cssselect("li")]


def _input_value(page, field_id: str) -> str:
    value = _one(page, "input#" + field_id).get("value")
    assert value is not None, "input {} has no value".format(field_id)
    return value


def _hook_id_from(page) -> str:
    path = page.request.path
    assert re.fullmatch(r"/webhooks/[A-Za-z0-9_-]{22,}", path), path
    return path.rsplit("/", 1)[1]


pytestmark = pytest.mark.usefixtures("webhooks", "forget_creation_rates")


# --- /webhooks ---------------------------------------------------------------

def test_index_explains_and_offers_the_create_form(app):
    page = app.get("/webhooks")
    assert page.status_code == 200
    body = page.body
    assert "A webhook tells your own service" in body
    form = _one(page, "form#webhook-create-form")
    assert form.method == "POST"
    assert form.cssselect('input[name="_csrf_token"]')
    for field_id, label in (("field-address", "Send to"),
                            ("field-dataset", "Dataset"),
                            ("field-organization", "Organization"),
                            ("field-group", "Group"),
                            ("field-resource", "Resource"),
                            ("field-description", "Description")):
        assert label in _text(_one(form, 'label.form-label[for="{}"]'.format(
            field_id))), label
    # the events are checkboxes, each with its label
    topics = _topics_fieldset(page)
    assert "Events" in _text(_one(topics, "legend"))
    labels = {box.get("value"): _text(_one(
        topics, 'label.form-check-label[for="{}"]'.format(box.get("id"))))
        for box in topics.cssselect('input[type="checkbox"][name="topics"]')}
    assert labels["dataset/create"] == "A dataset is created"
    assert labels["dataset/update"] == "A dataset is updated"
    assert labels["dataset/delete"] == "A dataset is deleted"
    assert labels["dataset/*"] == "Anything happens to a dataset"
    assert labels["resource/create"] == "A resource is created"
    assert labels["resource/*"] == "Anything happens to a resource"
    assert _checked_topics(page) == []
    # the filters are folded away until they are needed
    assert _one(page, "details.webhooks-filters").get("open") is None
    # open-by-id, with a label
    _one(page, 'form[action="/webhooks/open"]')
    _one(page, 'label.form-label[for="field-open-id"]')
    # nobody is logged in: nothing is listed
    assert "Your webhooks" not in body


def test_creating_a_hook_leads_to_its_page_with_a_flash(app, receiver):
    browser = Browser(app)
    page = browser.submit(browser.get("/webhooks"), "/webhooks",
                          topics=["dataset/*"], address=receiver.url())
    assert page.status_code == 200
    hook_id = _hook_id_from(page)
    assert any("Webhook created" in f for f in _flashes(page))
    hook = helpers.call_action("webhook_show", id=hook_id)
    assert hook["topic"] == "dataset/*"
    assert hook["address"] == receiver.url()
    assert _input_value(page, "field-secret") == hook["secret"]
    assert _input_value(page, "field-hook-id") == hook_id
    assert "Anything happens to a dataset" in page.body


def test_creating_with_filters_by_name(app):
    org = factories.Organization()
    group = factories.Group()
    dataset = factories.Dataset(owner_org=org["id"])
    browser = Browser(app)
    page = browser.submit(browser.get("/webhooks"), "/webhooks",
                          topics=["resource/update"], address=ADDRESS,
                          dataset=dataset["name"], organization=org["name"],
                          group=group["name"])
    hook = helpers.call_action("webhook_show", id=_hook_id_from(page))
    assert hook["filters"]["dataset"] == dataset["id"]
    assert hook["filters"]["organization"] == org["id"]
    assert hook["filters"]["group"] == group["id"]
    for entity in (dataset, org, group):
        assert entity["id"] in page.body


@pytest.mark.parametrize("kind", ["dataset", "organization", "group"])
def test_a_link_with_a_filter_opens_the_form_with_it_filled_in(app, kind):
    page = app.get("/webhooks", query_string={kind: "some-" + kind})
    assert page.status_code == 200
    assert _input_value(page, "field-" + kind) == "some-" + kind
    # the filters are unfolded, so the visitor sees what is filled in
    assert _one(page, "details.webhooks-filters").get("open") is not None
    others = {"dataset", "organization", "group", "resource"} - {kind}
    for other in others:
        assert _input_value(page, "field-" + other) == ""


def test_every_mistake_is_shown_in_one_round_beside_its_field_and_on_top(app):
    browser = Browser(app)
    before = hook_ids()
    page = browser.submit(browser.get("/webhooks"), "/webhooks",
                          address="ftp://example.com/x", dataset="  ")
    assert page.status_code == 200
    assert hook_ids() == before
    topics = _topics_fieldset(page)
    assert {"form-group", "webhooks-topics", "error"} <= set(topics.classes)
    assert "Choose an event" in [e.text for e in
                                 topics.cssselect("span.error-block")]
    address = _field_group(page, "field-address")
    assert "error" in address.classes
    assert _errors_in(address)
    assert _input_value(page, "field-address") == "ftp://example.com/x"
    assert not _errors_in(_field_group(page, "field-dataset"))
    # the summary on top names both, in the order of the form, as links
    summary = _error_summary(page)
    assert len(summary) == 2
    assert summary[0] == "Events: Choose an event"
    assert summary[1].startswith("Send to: ")
    links = [a.get("href") for a in
             _one(page, "div.error-explanation").cssselect("a")]
    assert links == ["#field-topics", "#field-address"]
    # the form can be sent again as it is: it still has its CSRF token
    assert _csrf_token(page)


def test_an_unknown_filter_is_shown_with_the_other_mistakes(app):
    browser = Browser(app)
    page = browser.submit(browser.get("/webhooks"), "/webhooks", topics=[],
                          address="ftp://example.com/x",
                          dataset="no-such-dataset", group="no-such-group")
    assert _error_summary(page) == [
        "Events: Choose an event",
        "Send to: " + _errors_in(_field_group(page, "field-address"))[0],
        "Dataset: Dataset not found", "Group: Group not found"]
    assert _errors_in(_field_group(page, "field-dataset")) == [
        "Dataset not found"]
    assert _errors_in(_field_group(page, "field-group")) == [
        "Group not found"]


def test_unknown_filters_are_shown_beside_their_fields(app):
    browser = Browser(app)
    page = browser.submit(browser.get("/webhooks"), "/webhooks",
                          topics=["dataset/update"], address=ADDRESS,
                          dataset="no-such-dataset",
                          organization="no-such-org")
    dataset = _field_group(page, "field-dataset")
    assert "Dataset not found" in _text(dataset)
    organization = _field_group(page, "field-organization")
    assert "Organization not found" in _text(organization)
    assert _input_value(page, "field-dataset") == "no-such-dataset"
    assert _input_value(page, "field-organization") == "no-such-org"
    assert _input_value(page, "field-address") == ADDRESS
    assert _checked_topics(page) == ["dataset/update"]
    assert "Dataset not found" not in _text(_topics_fieldset(page))
    assert _error_summary(page) == ["Dataset: Dataset not found",
                                    "Organization: Organization not found"]


@pytest.mark.ckan_config("ckanext.webhooks.anonymous_create_limit", 1)
def test_an_error_without_a_field_is_shown_above_the_form(app):
    browser = Browser(app)
    first = browser.submit(browser.get("/webhooks"), "/webhooks",
                           topics=["dataset/create"], address=ADDRESS)
    _hook_id_from(first)
    page = browser.submit(browser.get("/webhooks"), "/webhooks",
                          topics=["dataset/create"], address=ADDRESS)
    assert "Too many webhooks" in _text(_one(page, "div.error-explanation"))
    assert _input_value(page, "field-address") == ADDRESS


@pytest.mark.ckan_config("ckanext.webhooks.allow_anonymous", False)
def test_where_login_is_required_anonymous_visitors_are_told(app):
    browser = Browser(app)
    page = browser.get("/webhooks")
    assert "you need to log in to create a webhook" in page.body
    assert 'id="webhook-create-form"' not in page.body
    refused = browser.post("/webhooks", {
        "_csrf_token": _csrf_token(page), "topics": ["dataset/create"],
        "address": ADDRESS})
    assert refused.status_code == 403
    assert hook_ids() == set()


# --- CSRF --------------------------------------------------------------------

@pytest.mark.ckan_config("WTF_CSRF_ENABLED", True)
@pytest.mark.ckan_config("ckan.csrf_protection.ignore_extensions", True)
def test_a_post_without_the_csrf_token_is_refused(app):
    """CKAN exempts extension blueprints by default; these pages are not."""
    hook_id = HookFactory()["id"]
    browser = Browser(app)
    browser.get("/webhooks")  # the session exists, but the token is not sent
    created = browser.post("/webhooks", {"topics": "dataset/create",
                                         "address": "http://example.org/a"})
    assert created.status_code == 400
    assert hook_ids() == {hook_id}
    for action in ("ping", "test", "rotate", "delete", "edit", "disable",
                   "enable", "recover"):
        response = browser.post("/webhooks/{}/{}".format(hook_id, action), {
            "topic": "dataset/create", "since": "2026-01-01T00:00",
            "address": "http://example.org/b", "topics": "dataset/update"})
        assert response.status_code == 400, action
    forged = browser.post("/webhooks/{}/delete".format(hook_id),
                          {"_csrf_token": "forged"})
    assert forged.status_code == 400
    hook = helpers.call_action("webhook_show", id=hook_id)
    assert helpers.call_action("webhook_delivery_list", id=hook_id) == []
    assert hook["previous_secret_expires"] is None
    assert (hook["address"], hook["topic"], hook["status"]) == (
        ADDRESS, "dataset/create", "active")


@pytest.mark.ckan_config("WTF_CSRF_ENABLED", True)
def test_a_user_logged_in_with_a_cookie_needs_the_token_too(app):
    user = factories.User(password="correct123")
    browser = Browser(app)
    login = browser.get("/user/login")
    browser.post("/user/login", {"_csrf_token": _csrf_token(login),
                                 "login": user["name"],
                                 "password": "correct123"},
                 follow_redirects=False)
    assert "Your webhooks" in browser.get("/webhooks").body  # logged in
    refused = browser.post("/webhooks", {"topics": "dataset/create",
                                         "address": ADDRESS})
    assert refused.status_code == 400
    assert hook_ids() == set()
    page = browser.submit(browser.get("/webhooks"), "/webhooks",
                          topics=["dataset/create"], address=ADDRESS)
    hook_id = _hook_id_from(page)
    mine = helpers.call_action("webhook_list", context={"user": user["name"]})
    assert [h["id"] for h in mine] == [hook_id]


def test_every_form_has_the_csrf_token_and_every_input_a_label(
        app, receiver, run_jobs):
    receiver.answer("/hook", Answer(status=500))
    hook_id = HookFactory(receiver=receiver)["id"]
    message_id = helpers.call_action("webhook_ping", id=hook_id)
    run_jobs()
    admin = factories.SysadminWithToken()
    as_admin = Browser(app, {"Authorization": admin["token"]})
    for url in ("/webhooks", "/webhooks/" + hook_id,
                "/webhooks/{}/delete".format(hook_id),
                "/webhooks/{}/edit".format(hook_id),
                "/webhooks/{}/deliveries/{}".format(hook_id, message_id),
                "/ckan-admin/webhooks"):
        page = as_admin.get(url)
        assert page.status_code == 200, url
        document = _html(page)
        posting = [f for f in document.forms if f.method == "POST"]
        assert posting, url
        for form in posting:
            assert _form_fields(form).get("_csrf_token"), (
                url, form.get("action"))
        inputs = [e.get("id") for e in document.iter(
            "input", "select", "textarea") if e.get("type") != "hidden"]
        assert inputs, url
        labelled = {label.get("for") for label in document.iter("label")}
        unlabelled = [i for i in inputs if i not in labelled]
        assert not unlabelled, (url, unlabelled)


def test_copy_buttons_stay_hidden_without_javascript(app):
    hook_id = HookFactory()["id"]
    message_id = helpers.call_action("webhook_ping", id=hook_id)
    page = _html(app.get("/webhooks/" + hook_id))
    buttons = page.cssselect("button[data-webhooks-copy]")
    assert len(buttons) == 2
    id_buttons = page.cssselect("button[data-webhooks-copy-text]")
    assert len(id_buttons) == 1
    assert message_id in id_buttons[0].get("data-webhooks-copy-text")
    assert all(b.get("hidden") is not None for b in buttons + id_buttons)
    scripts = [s.get("src") for s in page.cssselect("script[src]")]
    for script in ("copy.js", "live.js"):
        assert any(re.search(r"/ckanext-webhooks/{}\?v=".format(
            re.escape(script)), src) for src in scripts), script
    assert any(re.search(r"/ckanext-webhooks/webhooks\.css\?v=",
                         link.get("href"))
               for link in page.cssselect('link[rel="stylesheet"]'))


def test_the_secret_is_hidden_until_revealed(app):
    """A <details> hides it without JavaScript; the receiver snippet,
    which holds it too, is folded away as well."""
    hook_id = HookFactory()["id"]
    secret = helpers.call_action("webhook_show", id=hook_id)["secret"]
    page = app.get("/webhooks/" + hook_id)
    for details in ("webhooks-secret", "webhooks-receiver"):
        block = _one(page, "details#" + details)
        assert block.get("open") is None, details
        assert block.cssselect("summary"), details
    assert _one(page, "details#webhooks-secret").cssselect(
        'button[data-webhooks-copy="field-secret"]')
    outside = _html(page)
    for block in outside.cssselect("details"):
        block.drop_tree()
    assert secret not in html.unescape(_markup(outside))


# --- /webhooks/<id> ----------------------------------------------------------

def _delivery_row(page, message_id: str) -> list[str]:
    """The cells of one row of the deliveries table, as text."""
    rows = _html(page).cssselect('tr[data-message-id="{}"]'.format(
        message_id))
    assert rows, "{} is not in the deliveries table".format(message_id)
    return [_text(cell) for cell in rows[0].cssselect("td")]


def test_hook_page_shows_details_secret_and_deliveries(app, receiver,
                                                       run_jobs):
    hook_id = HookFactory(receiver=receiver, topic="dataset/delete")["id"]
    ping_id = helpers.call_action("webhook_ping", id=hook_id)
    run_jobs()
    hook = helpers.call_action("webhook_show", id=hook_id)

    page = app.get("/webhooks/" + hook_id)
    assert page.status_code == 200
    assert "A dataset is deleted" in page.body
    assert "dataset/delete" in page.body
    assert _one(page, ".webhooks-details code.webhooks-address") \
        .text_content() == receiver.url()
    assert _one(page, "input#field-secret").get("readonly") is not None
    assert _input_value(page, "field-secret") == hook["secret"]
    _one(page, 'label.form-label[for="field-secret"]')
    assert 'data-webhooks-copy="field-secret"' in page.body
    assert "1 succeeded, 0 failed, 0 pending" in page.body

    cells = _delivery_row(page, ping_id)
    # the message id is shortened, in full on hover and on its own page
    assert cells[0].startswith(ping_id[:12] + "…")
    assert 'title="{}"'.format(ping_id) in page.body
    assert 'href="/webhooks/{}/deliveries/{}"'.format(hook_id, ping_id) \
        in page.body
    assert cells[1] == "webhook/ping"
    assert cells[2].startswith("Succeeded")
    assert re.fullmatch(r"204 \(\d+ ms\) 1 attempt", cells[3]), cells[3]
    assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC", cells[4]), cells[4]
    assert cells[5] == "Deliver again"
    # the buttons
    for action in ("ping", "disable"):
        assert 'action="/webhooks/{}/{}"'.format(hook_id, action) in page.body
    for link in ("delete", "edit", "rotate"):
        assert 'href="/webhooks/{}/{}"'.format(hook_id, link) in page.body
    # the page holds a secret: no cache may keep it
    assert "no-store" in page.headers["Cache-Control"]


def test_every_time_on_the_pages_has_one_format(app, receiver, run_jobs):
    receiver.answer("/hook", Answer(status=503))
    hook_id = HookFactory(receiver=receiver)["id"]
    helpers.call_action("webhook_ping", id=hook_id)
    run_jobs()
    helpers.call_action("webhook_rotate_secret", id=hook_id)
    user = factories.UserWithToken()
    HookFactory(user=user)
    pages = [app.get("/webhooks/" + hook_id).body,
             Browser(app, {"Authorization": user["token"]})
             .get("/webhooks").body]
    times = [(t.get("datetime"), t.text_content()) for body in pages
             for t in lxml.html.document_fromstring(body).cssselect(
                 "time[datetime]")]
    # created, last attempt, next attempt, the old secret's end; the list
    assert len(times) >= 5
    for moment, text in times:
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT[\d:.]+Z", moment), moment
        assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC", text), text
        assert text[:10] == moment[:10]
    for body in pages:
        # no time in CKAN's other formats ("December 1, 2026, 21:48 (UTC)")
        assert not re.search(r"(January|February|March|April|May|June|July|"
                             r"August|September|October|November|December)"
                             r" \d", body)


def test_unknown_ids_are_404_with_the_way_back(app):
    hook_id = HookFactory()["id"]
    for url in ("/webhooks/no-such-hook", "/webhooks/no-such-hook/delete",
                "/webhooks/no-such-hook/edit",
                "/webhooks/no-such-hook/deliveries/msg_1",
                "/webhooks/" + "x" * 500):
        response = app.get(url)
        assert response.status_code == 404, url
        assert "Webhook not found" in response.body
        assert "Back to Webhooks" in [a.text_content() for a in _html(
            response).cssselect('a[href="/webhooks"]')], url
    response = app.get("/webhooks/{}/deliveries/msg_none".format(hook_id))
    assert response.status_code == 404
    assert "Delivery not found" in response.body
    assert 'href="/webhooks"' in response.body
    helpers.call_action("webhook_delete", id=hook_id)
    assert app.get("/webhooks/" + hook_id).status_code == 404


def test_buttons_of_an_unknown_hook_are_404(app):
    browser = Browser(app)
    page = browser.get("/webhooks")
    for action in ("ping", "test", "rotate", "delete", "edit", "disable",
                   "enable", "recover", "deliveries/msg_1/redeliver"):
        response = browser.post("/webhooks/no-such-hook/" + action, {
            "_csrf_token": _csrf_token(page), "topic": "dataset/create",
            "since": "2026-01-01T00:00"})
        assert response.status_code == 404, action


@pytest.mark.ckan_config("ckanext.webhooks.verify_intent", True)
def test_pending_hook_explains_the_challenge(app, receiver):
    hook_id = HookFactory(receiver=receiver)["id"]
    assert helpers.call_action("webhook_show", id=hook_id)["status"] \
        == "pending"
    page = app.get("/webhooks/" + hook_id)
    assert "Waiting for verification" in page.body
    explanation = _text(_one(page, "div.alert.alert-warning.webhooks-pending"))
    assert "webhook/verify" in explanation
    assert "exactly the token" in explanation
    assert '{"challenge": "TOKEN"}' in explanation
    # what it says to press is on the page: the ping button sends the
    # challenge again, and so does the challenge's own "Retry now";
    # nothing offers to redeliver while it is pending
    assert "Send the challenge again" in explanation
    button = _one(page, "button#webhook-ping")
    assert button.text_content() == "Send the challenge again"
    assert "Deliver again" not in page.body
    [retry] = _html(page).cssselect("tr.webhooks-delivery button.webhooks-retry")
    assert retry.getparent().get("action") == \
        "/webhooks/{}/ping".format(hook_id)
    # the page refreshes itself until the receiver has answered
    assert 'data-webhooks-busy="true"' in page.body


def test_receiver_snippet_on_the_page_verifies_and_answers(app, receiver,
                                                           run_jobs):
    hook_id = HookFactory(receiver=receiver, path="/incoming/ckan")["id"]
    helpers.call_action("webhook_ping", id=hook_id)
    run_jobs()
    ping = receiver.wait_for(1)[0]
    secret = helpers.call_action("webhook_show", id=hook_id)["secret"]

    page = app.get("/webhooks/" + hook_id)
    code = _one(page, "pre.webhooks-snippet > code").text_content()
    assert secret in code
    assert "from standardwebhooks import Webhook" in code
    module = types.ModuleType("receiver_snippet")
    exec(compile(code, "receiver_snippet", "exec"), module.__dict__)
    client = module.app.test_client()

    signed = {k: v for k, v in ping.headers.items()
              if k.startswith("webhook-")}
    answer = client.post("/incoming/ckan", data=ping.body, headers=signed)
    assert answer.status_code == 204
    forged = client.post("/incoming/ckan", data=ping.body.replace(
        b"{}", b'{"x": 1}'), headers=signed)
    assert forged.status_code == 400

    # a verification message, signed as the portal signs it
    body = ('{"id": "msg_1", "type": "webhook/verify", "timestamp": "x", '
            '"hook_id": "h", "data": {"challenge": "the-token"}}')
    now = datetime.datetime.now(datetime.timezone.utc)
    signature = Webhook(secret).sign("msg_1", now, body)
    answer = client.post("/incoming/ckan", data=body, headers={
        "webhook-id": "msg_1", "webhook-timestamp": str(int(now.timestamp())),
        "webhook-signature": signature})
    assert answer.status_code == 200
    assert answer.get_data(as_text=True) == "the-token"


# --- open by id --------------------------------------------------------------

def test_open_by_id_goes_to_the_hook_page(app):
    hook_id = HookFactory()["id"]
    page = app.get("/webhooks/open", query_string={"id": " " + hook_id + " "})
    assert page.status_code == 200
    assert page.request.path == "/webhooks/" + hook_id
    assert page.history[0].status_code == 302

    browser = Browser(app)
    posted = browser.submit(browser.get("/webhooks"), "/webhooks",
                            topics=["dataset/create"], address=ADDRESS)
    assert posted.status_code == 200
    by_post = browser.post("/webhooks/open", {
        "id": hook_id, "_csrf_token": _csrf_token(posted)})
    assert by_post.request.path == "/webhooks/" + hook_id


def test_open_an_unknown_id_is_404_and_a_blank_one_an_error(app):
    unknown = app.get("/webhooks/open", query_string={"id": "no-such-hook"})
    assert unknown.status_code == 404
    assert "Webhook not found" in unknown.body
    blank = app.get("/webhooks/open", query_string={"id": " "})
    assert blank.status_code == 200
    assert _errors_in(_field_group(blank, "field-open-id")) == [
        "Enter the id of a webhook"]


# --- ping, rotate, redeliver, delete ----------------------------------------

def test_ping_button_sends_a_signed_ping(app, receiver, run_jobs):
    hook_id = HookFactory(receiver=receiver)["id"]
    browser = Browser(app)
    page = browser.submit(browser.get("/webhooks/" + hook_id),
                          "/webhooks/{}/ping".format(hook_id))
    assert page.request.path == "/webhooks/" + hook_id
    assert any("Ping queued" in f for f in _flashes(page))
    run_jobs()
    got = receiver.wait_for(1)
    secret = _input_value(browser.get("/webhooks/" + hook_id), "field-secret")
    payload = got[0].verify(secret)
    assert payload["type"] == "webhook/ping"
    assert payload["data"] == {}
    assert payload["hook_id"] == hook_id
    # a flash is shown once
    assert _flashes(browser.get("/webhooks/" + hook_id)) == []


def test_rotate_button_replaces_the_secret(app):
    hook_id = HookFactory()["id"]
    old = helpers.call_action("webhook_show", id=hook_id)["secret"]
    browser = Browser(app)
    # the button asks first; the question changes nothing
    page = browser.get("/webhooks/" + hook_id)
    assert _one(page, "a#webhook-rotate").get("href") == \
        "/webhooks/{}/rotate".format(hook_id)
    confirm = browser.get("/webhooks/{}/rotate".format(hook_id))
    assert "Replace the secret of this webhook?" in _text(_one(confirm,
                                                               "h1"))
    assert helpers.call_action("webhook_show", id=hook_id)["secret"] == old
    page = browser.submit(confirm, "/webhooks/{}/rotate".format(hook_id))
    assert page.request.path == "/webhooks/" + hook_id
    assert any("The secret was replaced" in f for f in _flashes(page))
    new = helpers.call_action("webhook_show", id=hook_id)["secret"]
    assert new != old
    assert _input_value(page, "field-secret") == new
    assert "Secrets replaced in the last 24 hours also sign deliveries " \
        "until" in page.body


def test_rotate_button_says_why_a_third_rotation_is_refused(app):
    hook_id = HookFactory()["id"]
    for _ in range(2):
        helpers.call_action("webhook_rotate_secret", id=hook_id)
    kept = helpers.call_action("webhook_show", id=hook_id)["secret"]
    browser = Browser(app)
    page = browser.submit(browser.get("/webhooks/{}/rotate".format(hook_id)),
                          "/webhooks/{}/rotate".format(hook_id))
    assert page.request.path == "/webhooks/" + hook_id
    assert any("rotated twice in the last 24 hours" in f
               for f in _flashes(page))
    assert not any("The secret was replaced" in f for f in _flashes(page))
    assert helpers.call_action("webhook_show", id=hook_id)["secret"] == kept


def test_deliver_again_button(app, receiver, run_jobs):
    receiver.answer("/hook", Answer(status=400))
    hook_id = HookFactory(receiver=receiver)["id"]
    message_id = helpers.call_action("webhook_ping", id=hook_id)
    run_jobs()
    browser = Browser(app)
    page = browser.get("/webhooks/" + hook_id)
    assert "Failed" in page.body
    page = browser.submit(page, "/deliveries/{}/redeliver".format(message_id))
    assert any("will be delivered again" in f for f in _flashes(page))
    run_jobs()
    got = receiver.wait_for(2)
    assert [r.headers["webhook-id"] for r in got] == [message_id] * 2
    [delivery] = helpers.call_action("webhook_delivery_list", id=hook_id)
    assert delivery["status"] == "succeeded"


def test_delete_asks_first_and_deletes_on_confirmation(app):
    hook_id = HookFactory()["id"]
    browser = Browser(app)
    confirm = browser.get("/webhooks/{}/delete".format(hook_id))
    assert confirm.status_code == 200
    assert "Delete this webhook?" in confirm.body
    assert _one(confirm, "code.webhooks-address").text_content() == ADDRESS
    # looking at the confirmation deletes nothing
    assert helpers.call_action("webhook_show", id=hook_id)["id"] == hook_id

    page = browser.submit(confirm, "/webhooks/{}/delete".format(hook_id))
    assert page.request.path == "/webhooks"
    assert any("The webhook was deleted" in f for f in _flashes(page))
    assert hook_id not in hook_ids()
    assert app.get("/webhooks/" + hook_id).status_code == 404


def test_a_get_never_changes_anything(app):
    hook_id = HookFactory()["id"]
    before = helpers.call_action("webhook_show", id=hook_id)
    for action in ("ping", "test", "disable", "enable", "recover",
                   "deliveries/msg_1/redeliver"):
        response = app.get("/webhooks/{}/{}".format(hook_id, action),
                           query_string={"topic": "dataset/create",
                                         "since": "2026-01-01T00:00"})
        assert response.status_code in (404, 405), action
    for page in ("edit", "delete", "rotate"):
        assert app.get("/webhooks/{}/{}".format(hook_id, page),
                       query_string={"address": "http://example.org/x",
                                     "topics": "dataset/update"}) \
            .status_code == 200
    after = helpers.call_action("webhook_show", id=hook_id)
    assert after == before
    assert helpers.call_action("webhook_delivery_list", id=hook_id) == []


# --- edit, disable, enable ---------------------------------------------------

def test_edit_shows_the_hook_and_saves_what_changed(app, receiver):
    org = factories.Organization()
    dataset = factories.Dataset(owner_org=org["id"])
    hook_id = HookFactory(topic="dataset/update", dataset=dataset["id"])["id"]
    browser = Browser(app)
    form = browser.get("/webhooks/{}/edit".format(hook_id))
    assert form.status_code == 200
    assert _checked_topics(form) == ["dataset/update"]
    assert _input_value(form, "field-address") == ADDRESS
    assert _input_value(form, "field-dataset") == dataset["id"]
    assert _one(form, "details.webhooks-filters").get("open") is not None

    page = browser.submit(form, "/webhooks/{}/edit".format(hook_id),
                          topics=["dataset/update", "resource/*"],
                          dataset="", organization=org["name"],
                          description="  mirror for the search index ")
    assert page.request.path == "/webhooks/" + hook_id
    assert any(f == "Saved." for f in _flashes(page))
    hook = helpers.call_action("webhook_show", id=hook_id)
    assert hook["topics"] == ["dataset/update", "resource/*"]
    assert hook["filters"]["dataset"] is None
    assert hook["filters"]["organization"] == org["id"]
    assert hook["description"] == "mirror for the search index"
    assert hook["address"] == ADDRESS and hook["status"] == "active"
    assert "mirror for the search index" in page.body
    # the title is the description; the events are listed beside
    assert "mirror for the search index" in _text(
        _html(page).cssselect("h1")[0])
    assert _text(_one(page, ".webhooks-topic-line")).split() == [
        "dataset/update", "resource/*"]


@pytest.mark.ckan_config("ckanext.webhooks.verify_intent", True)
def test_a_new_address_is_verified_again(app, receiver, run_jobs):
    receiver.always("/old", lambda got: Answer(
        200, got.json["data"].get("challenge", "").encode()))
    hook_id = HookFactory(receiver=receiver, path="/old")["id"]
    run_jobs()
    assert helpers.call_action("webhook_show", id=hook_id)["status"] \
        == "active"
    browser = Browser(app)
    page = browser.submit(browser.get("/webhooks/{}/edit".format(hook_id)),
                          "/webhooks/{}/edit".format(hook_id),
                          address=receiver.url("/new"))
    assert any("verification challenge" in f for f in _flashes(page))
    assert "Waiting for verification" in page.body
    run_jobs()
    [challenge] = receiver.on("/new")
    assert challenge.json["type"] == "webhook/verify"


def test_edit_shows_every_mistake_and_changes_nothing(app):
    hook_id = HookFactory()["id"]
    before = helpers.call_action("webhook_show", id=hook_id)
    browser = Browser(app)
    page = browser.submit(browser.get("/webhooks/{}/edit".format(hook_id)),
                          "/webhooks/{}/edit".format(hook_id), topics=[],
                          address="ftp://example.com/x",
                          group="no-such-group", description="x" * 201)
    assert page.status_code == 200
    assert page.request.path == "/webhooks/{}/edit".format(hook_id)
    summary = _error_summary(page)
    assert [line.split(":")[0] for line in summary] == [
        "Events", "Send to", "Group", "Description"]
    assert summary[0] == "Events: Choose an event"
    assert _errors_in(_field_group(page, "field-group")) == [
        "Group not found"]
    assert _errors_in(_field_group(page, "field-description"))
    # what was typed is kept
    assert _input_value(page, "field-address") == "ftp://example.com/x"
    assert _input_value(page, "field-group") == "no-such-group"
    assert helpers.call_action("webhook_show", id=hook_id) == before


def test_disable_and_enable_buttons(app):
    hook_id = HookFactory()["id"]
    browser = Browser(app)
    page = browser.submit(browser.get("/webhooks/" + hook_id),
                          "/webhooks/{}/disable".format(hook_id))
    assert page.request.path == "/webhooks/" + hook_id
    assert any("The webhook is disabled" in f for f in _flashes(page))
    hook = helpers.call_action("webhook_show", id=hook_id)
    assert hook["status"] == "disabled"
    # paused on purpose: no danger, and one Enable button, in the alert
    alert = _text(_one(page, "div.alert.alert-secondary.webhooks-disabled"))
    assert "disabled by its owner" in alert
    assert not _html(page).cssselect(".alert-danger")
    [enable] = _html(page).cssselect(
        'form[action="/webhooks/{}/enable"]'.format(hook_id))
    assert enable.getparent().get("class").startswith("alert")
    # a hook its owner paused gets no pings: the button is gone
    assert 'id="webhook-ping"' not in page.body
    assert 'action="/webhooks/{}/disable"'.format(hook_id) not in page.body

    page = browser.submit(page, "/webhooks/{}/enable".format(hook_id))
    assert any("The webhook is enabled again" in f for f in _flashes(page))
    assert helpers.call_action("webhook_show", id=hook_id)["status"] \
        == "active"
    assert "webhooks-disabled" not in page.body


def test_the_admin_page_disables_and_enables(app):
    hook_id = HookFactory()["id"]
    admin = factories.SysadminWithToken()
    browser = Browser(app, {"Authorization": admin["token"]})
    page = browser.submit(browser.get("/ckan-admin/webhooks"),
                          "/webhooks/{}/disable".format(hook_id))
    assert page.request.path == "/ckan-admin/webhooks"
    assert helpers.call_action("webhook_show", id=hook_id)["status"] \
        == "disabled"
    page = browser.submit(page, "/webhooks/{}/enable".format(hook_id))
    assert page.request.path == "/ckan-admin/webhooks"
    assert helpers.call_action("webhook_show", id=hook_id)["status"] \
        == "active"


# --- test events, retry now, recover ----------------------------------------

def test_send_a_test_event_of_a_chosen_type(app, receiver, run_jobs):
    hook_id = HookFactory(receiver=receiver, topic="dataset/*")["id"]
    browser = Browser(app)
    page = browser.get("/webhooks/" + hook_id)
    offered = [option.get("value") for option in
               _one(page, "select#field-test-topic").cssselect("option")]
    assert offered == ["dataset/create", "dataset/update", "dataset/delete"]
    page = browser.submit(page, "/webhooks/{}/test".format(hook_id),
                          topic="dataset/update")
    assert any("Test event dataset/update queued" in f
               for f in _flashes(page))
    run_jobs()
    [got] = receiver.wait_for(1)
    secret = helpers.call_action("webhook_show", id=hook_id)["secret"]
    payload = got.verify(secret)
    assert payload["type"] == "dataset/update" and payload["test"] is True
    page = browser.get("/webhooks/" + hook_id)
    cells = _delivery_row(page, got.headers["webhook-id"])
    assert cells[1] == "dataset/update Test"


def test_a_test_event_the_hook_does_not_get_is_a_message(app):
    hook_id = HookFactory(topic="dataset/create")["id"]
    browser = Browser(app)
    page = browser.submit(browser.get("/webhooks/" + hook_id),
                          "/webhooks/{}/test".format(hook_id),
                          topic="resource/delete")
    assert page.request.path == "/webhooks/" + hook_id
    [flash] = _flashes(page)
    assert "dataset/create" in flash  # the types it does get
    assert helpers.call_action("webhook_delivery_list", id=hook_id) == []


def test_retry_now_attempts_a_pending_delivery_at_once(app, receiver,
                                                       run_jobs):
    receiver.answer("/hook", Answer(status=503))
    hook_id = HookFactory(receiver=receiver)["id"]
    message_id = helpers.call_action("webhook_ping", id=hook_id)
    run_jobs()
    [pending] = helpers.call_action("webhook_delivery_list", id=hook_id)
    assert pending["status"] == "pending" and pending["next_attempt"]
    browser = Browser(app)
    page = browser.get("/webhooks/" + hook_id)
    cells = _delivery_row(page, message_id)
    assert cells[2].startswith("Pending") and "Next attempt" in cells[2]
    assert cells[5] == "Retry now"
    # the page keeps itself up to date while a delivery is pending
    assert 'data-webhooks-busy="true"' in page.body
    page = browser.submit(page, "/deliveries/{}/redeliver".format(message_id))
    assert any("will be delivered again now" in f for f in _flashes(page))
    run_jobs()
    got = receiver.wait_for(2)
    assert [r.headers["webhook-id"] for r in got] == [message_id] * 2
    page = browser.get("/webhooks/" + hook_id)
    assert _delivery_row(page, message_id)[2].startswith("Succeeded")
    assert 'data-webhooks-busy="false"' in page.body


def test_recover_failed_deliveries_since_a_time(app, receiver, run_jobs):
    hook_id = HookFactory(receiver=receiver)["id"]
    receiver.answer("/hook", Answer(status=400), Answer(status=400))
    failed = [helpers.call_action("webhook_ping", id=hook_id)
              for _ in range(2)]
    run_jobs()
    assert {d["status"] for d in helpers.call_action(
        "webhook_delivery_list", id=hook_id)} == {"failed"}
    browser = Browser(app)
    page = browser.get("/webhooks/" + hook_id)
    since = _input_value(page, "field-recover-since")
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d", since)
    assert "Recover failed deliveries since (UTC)" in page.body
    page = browser.submit(page, "/webhooks/{}/recover".format(hook_id))
    assert any("2 failed deliveries will be delivered again" in f
               for f in _flashes(page))
    run_jobs()
    again = [r.headers["webhook-id"] for r in receiver.wait_for(4)][2:]
    assert sorted(again) == sorted(failed)
    # asked again at once: the action's limit, as a message
    page = browser.post("/webhooks/{}/recover".format(hook_id), {
        "_csrf_token": _csrf_token(page), "since": "2000-01-01T00:00"})
    [flash] = _flashes(page)
    assert "try again in" in flash


@pytest.mark.ckan_config("ckan.display_timezone", "America/New_York")
def test_recover_reads_its_time_in_the_display_time_zone(app, receiver,
                                                         run_jobs):
    hook_id = HookFactory(receiver=receiver)["id"]
    receiver.answer("/hook", Answer(status=400), Answer(status=400))
    early, late = [helpers.call_action("webhook_ping", id=hook_id)
                   for _ in range(2)]
    run_jobs()
    for message_id, created in ((early, "2026-01-01 04:30"),
                                (late, "2026-01-01 05:30")):
        model.Session.query(Message).filter(Message.id == message_id) \
            .update({"created": datetime.datetime.fromisoformat(created)})
    model.Session.commit()
    browser = Browser(app)
    page = browser.get("/webhooks/" + hook_id)
    assert re.search(r"Recover failed deliveries since \(E[SD]T\)",
                     _text(_html(page)))
    # midnight in New York is 05:00 UTC: only the later one is recovered
    page = browser.submit(page, "/webhooks/{}/recover".format(hook_id),
                          since="2026-01-01T00:00")
    assert any("1 failed delivery will be delivered again" in f
               for f in _flashes(page))
    run_jobs()
    assert [r.headers["webhook-id"] for r in receiver.wait_for(3)][2:] \
        == [late]


def test_recover_needs_a_time(app, receiver, run_jobs):
    hook_id = HookFactory(receiver=receiver)["id"]
    receiver.answer("/hook", Answer(status=400))
    helpers.call_action("webhook_ping", id=hook_id)
    run_jobs()
    browser = Browser(app)
    page = browser.submit(browser.get("/webhooks/" + hook_id),
                          "/webhooks/{}/recover".format(hook_id), since="")
    assert _flashes(page) == ["Enter a date and time to recover from"]


# --- /webhooks/<id>/deliveries/<id> ------------------------------------------

def test_a_delivery_page_shows_the_payload_and_every_attempt(app, receiver,
                                                             run_jobs):
    receiver.answer("/hook", Answer(status=500, body=b"receiver broke"),
                    Answer(status=200, body=b'{"ok": true}'))
    hook_id = HookFactory(receiver=receiver)["id"]
    message_id = helpers.call_action("webhook_ping", id=hook_id)
    run_jobs()
    helpers.call_action("webhook_redeliver", id=hook_id,
                        delivery_id=message_id)
    run_jobs()
    browser = Browser(app)
    hook_page = browser.get("/webhooks/" + hook_id)
    link = "/webhooks/{}/deliveries/{}".format(hook_id, message_id)
    assert 'href="{}"'.format(link) in hook_page.body
    page = browser.get(link)
    assert page.status_code == 200
    assert "no-store" in page.headers["Cache-Control"]
    assert "Delivery of webhook/ping" in page.body
    assert message_id in [code.text_content() for code in
                          _html(page).cssselect("code.webhooks-id-full")]
    payload = _one(page, "pre.webhooks-body.webhooks-payload > code")
    sent = receiver.wait_for(2)[-1].json
    assert json.loads(payload.text_content()) == sent
    rows = [[_text(cell) for cell in row.cssselect("td")]
            for row in _html(page).cssselect("tr.webhooks-attempt")]
    assert len(rows) == 2
    assert rows[0][0] == "1" and rows[0][3] == "500"
    assert "receiver broke" in rows[0][5]
    assert rows[1][3] == "200" and '{"ok": true}' in rows[1][5]
    for row in rows:
        assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC", row[1])
        assert re.fullmatch(r"\d+ ms", row[2])
    # deliver it again from its own page, and come back to it
    page = browser.submit(page, link + "/redeliver")
    assert page.request.path == link
    assert any("will be delivered again" in f for f in _flashes(page))


def test_a_delivery_of_another_hook_is_not_found(app):
    mine = HookFactory()["id"]
    other = HookFactory(address="http://example.org/other")["id"]
    message_id = helpers.call_action("webhook_ping", id=other)
    response = app.get("/webhooks/{}/deliveries/{}".format(mine, message_id))
    assert response.status_code == 404
    assert "Delivery not found" in response.body


# --- whose hooks are listed --------------------------------------------------

def test_logged_in_users_see_only_their_own_hooks(app):
    alice = factories.UserWithToken()
    bob = factories.UserWithToken()
    as_alice = Browser(app, {"Authorization": alice["token"]})
    as_bob = Browser(app, {"Authorization": bob["token"]})
    alices = _hook_id_from(as_alice.submit(
        as_alice.get("/webhooks"), "/webhooks", topics=["dataset/create"],
        address="http://example.com/alice"))
    bobs = _hook_id_from(as_bob.submit(
        as_bob.get("/webhooks"), "/webhooks", topics=["resource/*"],
        address="http://example.com/bob"))
    anonymous = HookFactory(address="http://example.com/anyone")["id"]

    page = as_alice.get("/webhooks")
    assert "Your webhooks" in page.body
    listed = _markup(_one(page, "table.webhooks-list"))
    assert alices in listed and "http://example.com/alice" in _one(
        page, "table.webhooks-list").text_content()
    assert "A dataset is created" in listed
    for other in (bobs, anonymous, "example.com/bob", "example.com/anyone"):
        assert other not in page.body

    page = as_bob.get("/webhooks")
    assert bobs in page.body and alices not in page.body

    stranger = factories.UserWithToken()
    page = Browser(app, {"Authorization": stranger["token"]}).get("/webhooks")
    assert "You have no webhooks yet" in page.body
    for hook_id in (alices, bobs, anonymous):
        assert hook_id not in page.body


def test_sysadmins_too_see_only_their_own_hooks(app):
    admin = factories.SysadminWithToken()
    user = factories.User()
    theirs = HookFactory(user=user)["id"]
    mine = HookFactory(user=admin, topic="dataset/update")["id"]
    page = Browser(app, {"Authorization": admin["token"]}).get("/webhooks")
    assert mine in page.body
    assert theirs not in page.body


def test_the_anonymous_page_never_lists_hooks(app):
    user = factories.User()
    ids = [HookFactory()["id"], HookFactory(user=user)["id"]]
    browser = Browser(app)
    created = _hook_id_from(browser.submit(
        browser.get("/webhooks"), "/webhooks", topics=["dataset/create"],
        address=ADDRESS))
    page = browser.get("/webhooks")
    assert "Your webhooks" not in page.body
    for hook_id in ids + [created]:
        assert hook_id not in page.body


# --- subscribe where the data is ---------------------------------------------

def test_dataset_organization_and_group_pages_link_to_a_webhook(app):
    org = factories.Organization()
    group = factories.Group()
    dataset = factories.Dataset(owner_org=org["id"],
                                groups=[{"id": group["id"]}])
    for url, kind, name in (
            ("/dataset/" + dataset["name"], "dataset", dataset["name"]),
            ("/organization/" + org["name"], "organization", org["name"]),
            ("/organization/about/" + org["name"], "organization",
             org["name"]),
            ("/group/" + group["name"], "group", group["name"]),
            ("/group/about/" + group["name"], "group", group["name"])):
        page = app.get(url)
        assert page.status_code == 200, url
        links = _html(page).cssselect('a[href^="/webhooks?"]')
        assert links, url
        link = links[0].get("href")
        assert link == "/webhooks?{}={}#create".format(kind, name), url
        # it leads to the form with the filter filled in
        form = app.get(link.split("#")[0])
        assert _input_value(form, "field-" + kind) == name


def test_the_dashboard_leads_to_ones_own_webhooks(app):
    user = factories.UserWithToken()
    page = Browser(app, {"Authorization": user["token"]}).get(
        "/dashboard/datasets")
    assert page.status_code == 200
    tabs = _html(page).cssselect('a[href="/dashboard/webhooks"]')
    assert tabs and "My Webhooks" in _text(tabs[0])


# --- /ckan-admin/webhooks ----------------------------------------------------

def test_the_admin_page_is_for_sysadmins_only(app):
    user = factories.UserWithToken()
    assert app.get("/ckan-admin/webhooks").status_code == 403
    assert Browser(app, {"Authorization": user["token"]}).get(
        "/ckan-admin/webhooks").status_code == 403
    admin = factories.SysadminWithToken()
    page = Browser(app, {"Authorization": admin["token"]}).get("/ckan-admin")
    # a tab among CKAN's own admin pages
    assert _html(page).cssselect('a[href="/ckan-admin/webhooks"]')


def test_the_admin_page_lists_every_hook_with_its_health(app, receiver,
                                                         run_jobs):
    user = factories.User()
    receiver.answer("/failing", *[Answer(status=500)] * 3)
    failing = HookFactory(user=user, topic="resource/*", receiver=receiver,
                          path="/failing")["id"]
    anonymous = HookFactory(receiver=receiver, path="/fine")["id"]
    for hook_id in (failing, anonymous):
        helpers.call_action("webhook_ping", id=hook_id)
    run_jobs()
    admin = factories.SysadminWithToken()
    page = Browser(app, {"Authorization": admin["token"]}).get(
        "/ckan-admin/webhooks")
    assert page.status_code == 200
    # it lists hook ids: like every webhooks page, no cache keeps it
    assert "no-store" in page.headers["Cache-Control"]
    assert page.headers["X-Frame-Options"] == "DENY"
    rows = {row.get("data-hook-id"): _text(row) for row in
            _html(page).cssselect("tr.webhooks-admin-hook[data-hook-id]")}
    assert set(rows) == {failing, anonymous}
    assert "0 succeeded, 0 failed, 1 pending" in rows[failing]
    assert "Failing since" in rows[failing]
    assert "Anything happens to a resource" in rows[failing]
    assert "1 succeeded, 0 failed, 0 pending" in rows[anonymous]
    assert "Active" in rows[anonymous]
    for hook_id in (failing, anonymous):
        assert 'href="/webhooks/{}"'.format(hook_id) in page.body
        assert 'action="/webhooks/{}/disable"'.format(hook_id) in page.body
        assert 'href="/webhooks/{}/delete?next=admin"'.format(hook_id) \
            in page.body
    # the queue: the failing ping waits for its retry
    queue = _text(_one(page, "dl.row.webhooks-queue"))
    assert re.search(r"Pending messages 1 \(the oldest created \d+ s ago, "
                     r"0 being attempted now\)", queue), queue
    assert "Due now, not yet taken 0" in queue
    assert "Retries scheduled 1 (the next at " in queue
    assert "Events waiting for fan-out 0" in queue
    assert "1 failing, 0 with an open circuit" in queue
    # no worker runs in this test, and nothing is due: not stuck
    assert "None seen. Nothing is delivered until a worker runs" in queue
    assert "Delivery is stuck" not in page.body


def test_the_admin_page_shows_the_workers_heartbeats_and_when_it_is_stuck(
        app):
    from ckanext.webhooks.pipeline import heartbeat
    admin = factories.SysadminWithToken()
    browser = Browser(app, {"Authorization": admin["token"]})
    worker = heartbeat.Identity()
    heartbeat.beat(worker, listening=True, in_flight=3, last_sweep=None)
    gone = heartbeat.Identity()
    heartbeat.beat(gone, listening=True, in_flight=0, last_sweep=None)
    model.Session.execute(sa.text(
        "UPDATE webhooks_worker SET last_seen = last_seen - interval "
        "'1 hour' WHERE id = :id"), {"id": gone.id})
    model.Session.commit()
    page = browser.get("/ckan-admin/webhooks")
    workers = _text(_one(page, "dd#webhooks-queue-workers"))
    assert workers.startswith("1 running ")
    assert "{} pid {}: seen".format(worker.hostname, worker.pid) in workers
    assert "3 attempts in flight" in workers
    assert "1 more worker stopped reporting" in workers
    assert "Delivery is stuck" not in page.body

    # work is due and no worker runs: stuck, and the page says why
    heartbeat.leave(worker)
    HookFactory()
    due = HookFactory(address="http://example.org/due")
    helpers.call_action("webhook_ping", id=due["id"])
    page = browser.get("/ckan-admin/webhooks")
    stuck = _one(page, "div.alert.alert-danger.webhooks-stuck")
    assert "no worker was seen" in _text(stuck)


def test_deleting_from_the_admin_page_returns_to_it(app):
    hook_id = HookFactory()["id"]
    admin = factories.SysadminWithToken()
    browser = Browser(app, {"Authorization": admin["token"]})
    confirm = browser.get("/webhooks/{}/delete?next=admin".format(hook_id))
    assert 'href="/ckan-admin/webhooks"' in confirm.body  # Cancel
    page = browser.submit(confirm, "/webhooks/{}/delete".format(hook_id))
    assert page.request.path == "/ckan-admin/webhooks"
    assert any("The webhook was deleted" in f for f in _flashes(page))
    assert hook_id not in hook_ids()


# --- translations ------------------------------------------------------------

def test_the_catalog_template_holds_every_message_of_the_pages():
    """Regenerate ckanext-webhooks.pot (see babel.cfg) when this fails."""
    package = Path(__file__).resolve().parent.parent
    with open(package / "i18n" / "ckanext-webhooks.pot", "rb") as f:
        catalog = {m.id for m in read_po(f) if m.id}
    sources = [("python", package / name) for name in (
        "views.py", "helpers.py")] + [
        ("ckan.lib.extract.extract_ckan", template)
        for template in sorted((package / "templates").rglob("*.html"))]
    messages = {message for method, path in sources
                for _line, message, _comments, _context
                in extract_from_file(method, str(path))}
    assert messages, "nothing was extracted"
    missing = messages - catalog
    assert not missing, "not in the .pot: {}".format(sorted(missing, key=str))
