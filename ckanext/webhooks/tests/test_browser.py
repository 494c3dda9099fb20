"""End to end in a real browser: headless Chromium against a real CKAN server,
a real `ckan webhooks worker` and the loopback receiver.

Needs Debian's chromium (`apt-get install chromium`) and the Python package
playwright; the test is skipped, saying which is missing, without them.
Screenshots of the pages go to $WEBHOOKS_SCREENSHOTS when it is set (the docs
use docs/screenshots), else to the test's temporary directory.
"""
from __future__ import annotations

import json
import os
import re
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest
import sqlalchemy as sa

import ckan.logic as logic
import ckan.model as model
from ckan.tests import helpers

from ckanext.webhooks.tests.processes import (
    CKAN, free_port, start, stop, write_ini)
from ckanext.webhooks.tests.receiver import Answer, echo_challenge

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless=new", "--no-sandbox", "--disable-gpu",
                 "--disable-quic", "--no-first-run",
                 "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]

try:
    from playwright.sync_api import sync_playwright
except ImportError:  # pragma: no cover - depends on the machine
    sync_playwright = None

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not os.path.exists(CHROMIUM), reason=(
        "no {} (apt-get install chromium chromium-driver)".format(CHROMIUM))),
    pytest.mark.skipif(sync_playwright is None, reason=(
        "the Python package playwright is not installed (pip install "
        "playwright; no browser download needed)")),
]


def _wait_until_serving(url: str, process: subprocess.Popen,
                        timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            break
        try:
            with urllib.request.urlopen(url, timeout=2) as answer:
                if answer.status == 200:
                    return
        except OSError:
            time.sleep(0.2)
    raise RuntimeError("CKAN did not start:\n" +
                       process.log_path.read_text()[-3000:])


@pytest.fixture
def portal(request, tmp_path, webhooks, forget_creation_rates):
    """A CKAN server and a delivery worker of their own, CSRF enforced."""
    test_ini = os.path.abspath(request.config.getoption("ckan_ini"))
    port = free_port()
    url = "http://127.0.0.1:{}".format(port)
    ini = write_ini(test_ini, tmp_path / "server.ini", **{
        "ckan.plugins": "webhooks",
        "ckan.site_url": url,
        "WTF_CSRF_ENABLED": "true",
        "ckanext.webhooks.verify_intent": "true",
        "ckanext.webhooks.sweep_interval": 1,
        "ckanext.webhooks.timeout": 5,
    })
    # workers that earlier tests killed leave their heartbeats behind
    model.Session.execute(sa.text("DELETE FROM webhooks_worker"))
    model.Session.commit()
    server = start([CKAN, "-c", str(ini), "run", "--host", "127.0.0.1",
                     "--port", str(port), "--disable-reloader", "--threaded"],
                    tmp_path / "server.log")
    worker = start([CKAN, "-c", str(ini), "webhooks", "worker"],
                    tmp_path / "worker.log")
    try:
        _wait_until_serving(url + "/api/3/action/status_show", server)
        yield url
    finally:
        stop(worker)
        stop(server)


@pytest.fixture
def browser_page(tmp_path):
    with sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            str(tmp_path / "chromium-profile"), executable_path=CHROMIUM,
            headless=True, args=CHROMIUM_ARGS,
            viewport={"width": 1280, "height": 900})
        try:
            page = context.pages[0] if context.pages else context.new_page()
            page.set_default_timeout(20000)
            errors: list[str] = []
            page.on("pageerror", lambda error: errors.append(str(error)))
            yield page
            # the pages' scripts never fail
            assert errors == []
        finally:
            context.close()


def _screenshots(tmp_path: Path) -> Path:
    where = Path(os.environ.get("WEBHOOKS_SCREENSHOTS") or tmp_path)
    where.mkdir(parents=True, exist_ok=True)
    return where


def _shoot(page, path: Path) -> None:
    """The whole page, without blank space below a short one."""
    height = page.evaluate("document.body.scrollHeight")
    width = page.viewport_size["width"]
    page.screenshot(path=str(path), full_page=True,
                    clip={"x": 0, "y": 0, "width": width, "height": height})


PHONE = {"width": 390, "height": 844}
DESKTOP = {"width": 1280, "height": 900}


def _no_sideways_scrolling(page, where: str) -> None:
    width = page.evaluate("document.documentElement.scrollWidth")
    assert width <= page.viewport_size["width"], (
        "{} is {} px wide at {} px".format(where, width,
                                           page.viewport_size["width"]))


def _mark_the_document(page) -> None:
    """A marker that a reload or a navigation would lose."""
    page.evaluate("window.webhooksTestMarker = 'still here'")


def _not_reloaded(page) -> bool:
    return page.evaluate("window.webhooksTestMarker") == "still here"


def _flash_text(page) -> str:
    return page.inner_text(".flash-messages")


def _wait_for_text(page, selector: str, text: str, timeout: float = 30):
    try:
        page.wait_for_function(
            "([selector, text]) => { const e = document.querySelector("
            "selector); return e && e.innerText.includes(text); }",
            arg=[selector, text], timeout=timeout * 1000)
    except Exception:
        shown = page.evaluate(
            "s => (document.querySelector(s) || {}).innerText", selector)
        raise AssertionError("{!r} never showed in {}, which says {!r}"
                             .format(text, selector, shown))


def test_create_ping_and_delete_a_hook_in_a_browser(portal, browser_page,
                                                    receiver, tmp_path):
    page = browser_page
    shots = _screenshots(tmp_path)
    receiver.always("/hook", echo_challenge)

    # the index: the form, filled in as a visitor would
    page.goto(portal + "/webhooks")
    assert page.title().startswith("Webhooks")
    page.check("#field-topic-dataset-create")
    page.fill("#field-address", receiver.url())
    _shoot(page, shots / "index.png")

    # mistakes first: all of them in one round, beside their fields and on
    # top, with what was typed kept
    page.uncheck("#field-topic-dataset-create")
    page.fill("#field-address", "receiver.example")
    page.click("#webhook-create-form button[type=submit]")
    page.wait_for_load_state()
    summary = page.locator(".webhooks-error-summary")
    assert summary.is_visible()
    lines = summary.locator("li").all_inner_texts()
    assert lines[0] == "Events: Choose an event"
    assert lines[1].startswith("Send to:")
    assert page.locator("#field-topics .error-block").inner_text() == \
        "Choose an event"
    address = page.locator(".form-group:has(#field-address)")
    assert address.locator(".error-block").is_visible()
    assert page.input_value("#field-address") == "receiver.example"
    # the summary's links lead to the fields
    summary.locator("a[href='#field-address']").click()
    assert page.url.endswith("#field-address")
    _shoot(page, shots / "index-with-errors.png")

    page.check("#field-topic-dataset-create")
    page.fill("#field-address", receiver.url())
    page.click("#webhook-create-form button[type=submit]")

    # the hook's page; it turns active once the receiver echoes the
    # challenge of its webhook/verify delivery, without a reload
    page.wait_for_url(re.compile(r".*/webhooks/[A-Za-z0-9_-]{22,}$"))
    hook_id = page.url.rsplit("/", 1)[1]
    _mark_the_document(page)
    assert "Webhook created" in _flash_text(page)
    assert page.input_value("#field-hook-id") == hook_id
    # the title says where it sends; its topics are beside
    assert page.inner_text("h1").startswith(
        "Webhook: " + receiver.url().split("://")[1])
    assert page.inner_text(".webhooks-topic-line") == "dataset/create"
    _wait_for_text(page, ".webhooks-status", "Active")
    _wait_for_text(page, ".webhooks-deliveries", "Succeeded")
    assert _not_reloaded(page)
    verify = receiver.wait_for(1, path="/hook", timeout=30)
    # once active, the buttons that need an active hook are there
    _wait_for_text(page, ".webhooks-actions", "Send a ping")

    # the secret is hidden until revealed, then copied with a button
    secret_input = page.locator("#field-secret")
    assert not secret_input.is_visible()
    page.click("#webhooks-secret summary")
    assert secret_input.is_visible()
    secret = page.input_value("#field-secret")
    assert secret.startswith("whsec_")
    assert verify[0].verify(secret)["type"] == "webhook/verify"
    page.context.grant_permissions(["clipboard-read", "clipboard-write"],
                                   origin=portal)
    copy = page.locator("button[data-webhooks-copy=field-secret]")
    assert copy.is_visible()
    copy.click()
    assert page.evaluate("navigator.clipboard.readText()") == secret

    # ping: queued in the background, its outcome shows without a reload
    page.click("#webhook-ping")
    _wait_for_text(page, ".flash-messages", "Ping queued")
    _wait_for_text(page, ".webhooks-statistics", "2 succeeded")
    row = page.locator("tr.webhooks-delivery", has_text="webhook/ping")
    _wait_for_text(page, ".webhooks-deliveries", "webhook/ping")
    assert "Succeeded" in row.inner_text()
    assert _not_reloaded(page)
    deadline = time.monotonic() + 30
    pings = []
    while not pings and time.monotonic() < deadline:
        pings = [r for r in receiver.wait_for(2, path="/hook", timeout=1)
                 if json.loads(r.body)["type"] == "webhook/ping"]
    assert pings, "the ping never arrived"
    payload = pings[0].verify(secret)
    assert payload["data"] == {}
    assert payload["hook_id"] == hook_id
    assert payload["site_url"] == portal

    # a message id is shortened; its copy button copies the whole id
    message_id = row.get_attribute("data-message-id")
    assert row.locator("code.webhooks-id").inner_text() == \
        message_id[:12] + "…"
    row.locator("button.webhooks-copy-id").click()
    assert page.evaluate("navigator.clipboard.readText()") == message_id
    page.evaluate("document.querySelector('#webhooks-secret').open = false")
    _shoot(page, shots / "hook.png")

    # a phone: nothing scrolls sideways, the content comes before the
    # buttons
    page.set_viewport_size(PHONE)
    for url in ("/webhooks", "/webhooks/" + hook_id,
                "/webhooks/{}/delete".format(hook_id)):
        page.goto(portal + url)
        _no_sideways_scrolling(page, url)
    page.goto(portal + "/webhooks/" + hook_id)
    content = page.locator(".webhooks-deliveries").bounding_box()
    buttons = page.locator(".webhooks-actions").bounding_box()
    assert content["y"] + content["height"] <= buttons["y"]
    _shoot(page, shots / "hook-phone.png")
    page.set_viewport_size(DESKTOP)

    # delete: a confirmation first, then the index with a flash
    page.goto(portal + "/webhooks/" + hook_id)
    page.click("#webhook-delete")
    page.wait_for_url(portal + "/webhooks/" + hook_id + "/delete")
    assert "Delete this webhook?" in page.inner_text("h1")
    assert helpers.call_action("webhook_show", id=hook_id)["id"] == hook_id
    _shoot(page, shots / "delete.png")
    page.click("#webhook-delete-form button[name=delete]")
    page.wait_for_url(portal + "/webhooks")
    assert "The webhook was deleted" in _flash_text(page)
    with pytest.raises(logic.NotFound):
        helpers.call_action("webhook_show", id=hook_id)
    response = page.goto(portal + "/webhooks/" + hook_id)
    assert response.status == 404
    # the 404 page leads back
    page.click("text=Back to Webhooks")
    page.wait_for_url(portal + "/webhooks")


def _answer_until_told(failing: dict):
    """Answers the challenge; 503 to anything else while failing["now"]."""
    def answer(got) -> Answer:
        message = got.json
        if message["type"] == "webhook/verify":
            return Answer(200, message["data"]["challenge"].encode())
        if failing["now"]:
            return Answer(503, b"down for maintenance")
        return Answer(200, b'{"received": true}')
    return answer


def _active_hook(portal: str, receiver, **data) -> str:
    """A hook created through the API whose receiver answered."""
    import requests
    data.setdefault("topics", ["dataset/*"])
    hook_id = requests.post(portal + "/api/3/action/webhook_create", json=dict(
        data, address=receiver.url()), timeout=10).json()["result"]
    deadline = time.monotonic() + 30
    while helpers.call_action("webhook_show", id=hook_id)["status"] \
            != "active":
        assert time.monotonic() < deadline, "the hook was never verified"
        time.sleep(0.3)
    return hook_id


def test_edit_test_events_retry_and_delivery_pages_in_a_browser(
        portal, browser_page, receiver, tmp_path):
    page = browser_page
    shots = _screenshots(tmp_path)
    failing = {"now": True}
    receiver.always("/hook", _answer_until_told(failing))
    hook_id = _active_hook(portal, receiver, description="Search index")
    hook_page = portal + "/webhooks/" + hook_id

    # edit: the form shows the hook; a second event and a description
    page.goto(hook_page)
    page.click("#webhook-edit")
    page.wait_for_url(hook_page + "/edit")
    assert page.is_checked("#field-topic-dataset-all")
    assert page.input_value("#field-description") == "Search index"
    page.check("#field-topic-resource-create")
    page.fill("#field-description", "Search index and the resource checker")
    _shoot(page, shots / "edit.png")
    page.click("#webhook-edit-form button[name=save]")
    page.wait_for_url(hook_page)
    assert "Saved." in _flash_text(page)
    assert "Search index and the resource checker" in page.inner_text("h1")
    assert page.inner_text(".webhooks-topic-line").split() == [
        "dataset/*", "resource/create"]
    hook = helpers.call_action("webhook_show", id=hook_id)
    assert hook["topics"] == ["dataset/*", "resource/create"]

    # a test event: the receiver is down, the delivery waits for a retry;
    # all of it shows without a reload
    _mark_the_document(page)
    page.select_option("#field-test-topic", "resource/create")
    page.click("#webhook-test")
    _wait_for_text(page, ".flash-messages", "Test event resource/create")
    _wait_for_text(page, ".webhooks-deliveries", "503")
    row = page.locator("tr.webhooks-delivery", has_text="resource/create")
    assert "Test" in row.inner_text() and "Pending" in row.inner_text()
    assert "Retry now" in row.inner_text()

    # the receiver is back: "Retry now" delivers at once, without a reload
    failing["now"] = False
    row.locator("button.webhooks-retry").click()
    _wait_for_text(page, ".flash-messages", "will be delivered again now")
    page.wait_for_function(
        "() => [...document.querySelectorAll('tr.webhooks-delivery')]"
        ".some(r => r.innerText.includes('resource/create')"
        " && r.innerText.includes('Succeeded'))", timeout=30000)
    assert _not_reloaded(page)
    tested = [r for r in receiver.on("/hook")
              if r.json["type"] == "resource/create"]
    assert len(tested) == 2 and tested[-1].json["test"] is True
    _shoot(page, tmp_path / "hook-after-retry.png")

    # the delivery's own page: the payload as sent and both attempts
    message_id = row.get_attribute("data-message-id")
    row.locator("a").first.click()
    page.wait_for_url("{}/deliveries/{}".format(hook_page, message_id))
    assert page.inner_text("code.webhooks-id-full") == message_id
    attempts = page.locator("tr.webhooks-attempt")
    assert attempts.count() == 2
    assert "503" in attempts.nth(0).inner_text()
    assert "200" in attempts.nth(1).inner_text()
    attempts.nth(0).locator("#attempt-1-body summary").click()
    assert "down for maintenance" in attempts.nth(0).inner_text()
    attempts.nth(0).locator("#attempt-1-request summary").click()
    assert "webhook-signature: v1," in attempts.nth(0).inner_text()
    attempts.nth(0).locator("#attempt-1-response summary").click()
    assert "HTTP/1.0 503 Service Unavailable" in \
        attempts.nth(0).inner_text()
    payload = json.loads(page.inner_text(".webhooks-payload"))
    assert payload == tested[-1].json
    _shoot(page, shots / "delivery.png")
    page.set_viewport_size(PHONE)
    _no_sideways_scrolling(page, "the delivery page")
    page.set_viewport_size(DESKTOP)

    # disable and enable, in place
    page.goto(hook_page)
    _mark_the_document(page)
    page.click("#webhook-disable")
    _wait_for_text(page, ".webhooks-status", "Disabled")
    assert "disabled by its owner" in page.inner_text(".webhooks-disabled")
    assert page.locator("#webhook-ping").count() == 0
    page.click("#webhook-enable")
    _wait_for_text(page, ".webhooks-status", "Active")
    assert page.locator("#webhook-ping").count() == 1
    assert _not_reloaded(page)


def test_recover_and_the_admin_page_in_a_browser(portal, browser_page,
                                                 receiver, tmp_path):
    page = browser_page
    shots = _screenshots(tmp_path)
    receiver.always("/hook", lambda got: Answer(
        200, got.json["data"]["challenge"].encode())
        if got.json["type"] == "webhook/verify" else Answer(400))
    hook_id = _active_hook(portal, receiver, topics=["dataset/create"])
    import requests
    for _ in range(2):
        requests.post(portal + "/api/3/action/webhook_ping",
                      json={"id": hook_id}, timeout=10)
    deadline = time.monotonic() + 30
    while helpers.call_action("webhook_show", id=hook_id)[
            "deliveries"]["failed"] < 2:
        assert time.monotonic() < deadline, "the pings never failed"
        time.sleep(0.3)

    # recover: from "failing since", the two failed pings go again
    receiver.always("/hook", lambda got: Answer(204))
    page.goto(portal + "/webhooks/" + hook_id)
    assert page.input_value("#field-recover-since")
    page.click("#webhook-recover")
    _wait_for_text(page, ".flash-messages",
                   "2 failed deliveries will be delivered again")
    _wait_for_text(page, ".webhooks-statistics", "3 succeeded, 0 failed")

    # the admin page: a sysadmin logs in
    from ckan.tests import factories
    factories.Sysadmin(name="pagesadmin", password="correct-horse-1")
    page.goto(portal + "/user/login")
    page.fill("#field-login", "pagesadmin")
    page.fill("#field-password", "correct-horse-1")
    page.click("form:has(#field-login) button[type=submit]")
    page.wait_for_load_state()
    page.goto(portal + "/ckan-admin")
    page.click("a[href='/ckan-admin/webhooks']")
    page.wait_for_url(portal + "/ckan-admin/webhooks")
    row = page.locator("tr.webhooks-admin-hook[data-hook-id='{}']".format(
        hook_id))
    assert "3 succeeded, 0 failed, 0 pending" in row.inner_text()
    queue = page.inner_text(".webhooks-queue")
    assert "Pending messages" in queue
    # the portal's own worker, from its heartbeat
    workers = page.inner_text("#webhooks-queue-workers")
    assert workers.startswith("1 running\n") and " s ago" in workers
    _shoot(page, shots / "admin.png")
    row.locator("button", has_text="Disable").click()
    page.wait_for_url(portal + "/ckan-admin/webhooks")
    assert helpers.call_action("webhook_show", id=hook_id)["status"] \
        == "disabled"
    page.set_viewport_size(PHONE)
    page.reload()
    _no_sideways_scrolling(page, "the admin page")
    page.set_viewport_size(DESKTOP)


def _cards_hold(page, table: str) -> None:
    """On a phone each row of ``table`` is a card whose values sit beside
    their labels, each one block that fits: nothing cut at the card's edge,
    no badge clipped, a cell's lines one below the other."""
    problems = page.evaluate("""(table) => {
        const found = [];
        for (const td of document.querySelectorAll(table + " td[data-label]")) {
            const box = td.getBoundingClientRect();
            const value = td.firstElementChild;
            if (!value) { continue; }
            if (td.children.length !== 1) {
                found.push(td.dataset.label + ": several blocks"); }
            const inner = value.getBoundingClientRect();
            if (inner.right > box.right + 1) {
                found.push(td.dataset.label + ": cut at the edge"); }
            if (value.scrollWidth > value.clientWidth + 1) {
                found.push(td.dataset.label + ": wider than its box"); }
            for (const badge of td.querySelectorAll(".badge")) {
                if (badge.scrollWidth > badge.clientWidth + 1 ||
                    badge.getBoundingClientRect().right > box.right + 1) {
                    found.push(td.dataset.label + ": badge clipped"); }
            }
        }
        return found;
    }""", table)
    assert problems == [], problems


def test_debugging_pages_in_a_browser_and_on_a_phone(portal, browser_page,
                                                     receiver, tmp_path):
    """Issue 30: headers per attempt, an opened body that stays open while
    the page refreshes, cards that hold on a phone, addresses that wrap
    between their parts, the open form's error near the top, the event
    catalogue."""
    import requests
    page = browser_page
    shots = _screenshots(tmp_path)
    from ckan.tests import factories
    factories.Sysadmin(name="debugadmin", password="correct-horse-1")
    failing = {"now": True}
    receiver.always("/hook", _answer_until_told(failing))
    hook_id = _active_hook(portal, receiver, topics=["dataset/*"],
                           description="Search index feeder")
    hook_page = portal + "/webhooks/" + hook_id

    # a ping that fails and waits for its retry: the delivery page keeps
    # refreshing itself, and what was opened stays open
    ping = requests.post(portal + "/api/3/action/webhook_ping",
                         json={"id": hook_id}, timeout=10).json()["result"]
    page.goto(hook_page)
    _wait_for_text(page, ".webhooks-deliveries", "503")
    page.goto("{}/deliveries/{}".format(hook_page, ping))
    _wait_for_text(page, ".webhooks-attempts", "503")
    assert page.get_attribute("[data-webhooks-live=delivery]",
                              "data-webhooks-busy") == "true"
    for part in ("request", "response", "body"):
        page.click("#attempt-1-{} summary".format(part))
    page.wait_for_timeout(3500)  # two refreshes at least
    for part in ("request", "response", "body"):
        assert page.evaluate(
            "document.getElementById('attempt-1-{}').open".format(part)), part
    assert "webhook-id: " + ping in page.inner_text("#attempt-1-request")
    _shoot(page, shots / "delivery-headers.png")

    # the hook's page: health, the deliveries' filters
    failing["now"] = False
    page.goto(hook_page)
    health = page.inner_text(".webhooks-health")
    assert "Last 24 hours:" in health and "median" in health
    page.select_option("#field-filter-type", "webhook/ping")
    page.click("#webhooks-delivery-filters button[type=submit]")
    page.wait_for_url(re.compile(r".*type=webhook%2Fping.*"))
    assert page.locator("tr.webhooks-delivery").count() >= 1
    assert "dataset/" not in page.inner_text(".webhooks-deliveries")

    # the event catalogue, from the hook's page
    page.goto(hook_page)
    page.click(".webhooks-details a[href='/webhooks/events#kind-dataset']")
    page.wait_for_url(portal + "/webhooks/events#kind-dataset")
    page.click("#example-dataset-update summary")
    body = json.loads(page.inner_text("#example-dataset-update pre"))
    assert body["type"] == "dataset/update" and "changes" in body
    _shoot(page, shots / "events.png")
    schema = requests.get(portal + "/webhooks/events/dataset/update.json",
                          timeout=10).json()
    assert schema["properties"]["type"] == {"const": "dataset/update"}

    # a sysadmin, on a phone: their own hooks and the admin page hold
    page.goto(portal + "/user/login")
    page.fill("#field-login", "debugadmin")
    page.fill("#field-password", "correct-horse-1")
    page.click("form:has(#field-login) button[type=submit]")
    page.wait_for_load_state()
    page.goto(portal + "/webhooks")
    page.fill("#field-address", "http://receiver.example.org/deliveries/"
              "search-index/v2/with-a-long-path?token=abc&format=json")
    page.check("#field-topic-dataset-all")
    page.fill("#field-description", "A webhook with a long address and a "
              "description long enough to wrap on a phone")
    page.click("#webhook-create-form button[type=submit]")
    page.wait_for_url(re.compile(r".*/webhooks/[A-Za-z0-9_-]{22,}$"))
    page.set_viewport_size(PHONE)
    page.goto(portal + "/dashboard/webhooks")
    _no_sideways_scrolling(page, "the dashboard's webhooks")
    _cards_hold(page, "table.webhooks-list")
    _shoot(page, shots / "dashboard-phone.png")
    page.goto(portal + "/ckan-admin/webhooks")
    _no_sideways_scrolling(page, "the admin page")
    _cards_hold(page, "table.webhooks-admin-hooks")
    # addresses wrap between their parts, never inside the host
    hosts = page.evaluate("""() => [...document.querySelectorAll(
        '.webhooks-admin-hooks .webhooks-host')].map(
        e => e.getClientRects().length)""")
    assert hosts and set(hosts) == {1}, hosts
    status = page.locator(".webhooks-admin-hooks .webhooks-status").first
    assert status.inner_text() in ("Active", "Waiting for verification")
    _shoot(page, shots / "admin-phone.png")

    # the open form's error is near the top, not below everything
    page.goto(portal + "/webhooks")
    page.fill("#field-open-id", "")
    page.click("#webhook-open-form button[type=submit]")
    page.wait_for_load_state()
    error = page.locator("#webhook-open-form .error-block").bounding_box()
    assert error["y"] < PHONE["height"], error

    # with a real Solr the organization page lists its datasets (the
    # demo's stand-in, DEMO_SOLR=none, says why it lists none instead)
    org = factories.Organization()
    listed = factories.Dataset(owner_org=org["id"], title="Listed here")
    page.goto(portal + "/organization/" + org["name"])
    assert listed["title"] in page.inner_text("body")
    page.set_viewport_size(DESKTOP)
