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

import ckan.logic as logic
from ckan.tests import helpers

from ckanext.webhooks.tests.processes import (
    CKAN, free_port, start, stop, write_ini)
from ckanext.webhooks.tests.receiver import Answer

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
        "ckan.plugins": "webhooks webhooks_demo_nosolr",
        "ckan.site_url": url,
        "WTF_CSRF_ENABLED": "true",
        "ckanext.webhooks.verify_intent": "true",
        "ckanext.webhooks.sweep_interval": 1,
        "ckanext.webhooks.timeout": 5,
    })
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
            yield page
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


def _answer_the_challenge(got) -> Answer:
    message = got.json
    if message["type"] == "webhook/verify":
        return Answer(200, message["data"]["challenge"].encode())
    return Answer(204)


def _reload_until(page, selector: str, text: str, timeout: float = 30):
    deadline = time.monotonic() + timeout
    while True:
        if text in page.inner_text(selector):
            return
        if time.monotonic() > deadline:
            raise AssertionError("{!r} never showed in {}".format(
                text, selector))
        time.sleep(0.5)
        page.reload()


def _flash_text(page) -> str:
    return page.inner_text(".flash-messages")


def test_create_ping_and_delete_a_hook_in_a_browser(portal, browser_page,
                                                    receiver, tmp_path):
    page = browser_page
    shots = _screenshots(tmp_path)
    receiver.always("/hook", _answer_the_challenge)

    # the index: the form, filled in as a visitor would
    page.goto(portal + "/webhooks")
    assert page.title().startswith("Webhooks")
    assert page.locator("label[for=field-topic]").inner_text().endswith(
        "When")
    page.select_option("#field-topic", label="A dataset is created")
    page.fill("#field-address", receiver.url())
    _shoot(page, shots / "index.png")

    # a mistake first: shown beside its field, with what was typed kept
    page.fill("#field-address", "receiver.example")
    page.click("#webhook-create-form button[type=submit]")
    page.wait_for_load_state()
    address = page.locator(".form-group:has(#field-address)")
    assert address.locator(".error-block").is_visible()
    assert page.input_value("#field-address") == "receiver.example"
    assert page.input_value("#field-topic") == "dataset/create"
    _shoot(page, tmp_path / "index-with-errors.png")

    page.fill("#field-address", receiver.url())
    page.click("#webhook-create-form button[type=submit]")

    # the hook's page; the hook turns active once the receiver echoes the
    # challenge of its webhook/verify delivery
    page.wait_for_url(re.compile(r".*/webhooks/[A-Za-z0-9_-]{22,}$"))
    hook_id = page.url.rsplit("/", 1)[1]
    assert "Webhook created" in _flash_text(page)
    secret = page.input_value("#field-secret")
    assert secret.startswith("whsec_")
    assert page.input_value("#field-hook-id") == hook_id
    assert "A dataset is created" in page.inner_text("h1")

    verify = receiver.wait_for(1, path="/hook", timeout=30)
    assert verify, "the worker never sent the verification"
    assert verify[0].verify(secret)["type"] == "webhook/verify"
    _reload_until(page, ".webhooks-status", "Active")

    # the Copy button works with JavaScript (it is hidden without)
    page.context.grant_permissions(["clipboard-read", "clipboard-write"],
                                   origin=portal)
    copy = page.locator("button[data-webhooks-copy=field-secret]")
    assert copy.is_visible()
    copy.click()
    assert page.evaluate("navigator.clipboard.readText()") == secret

    # ping: a signed webhook/ping reaches the receiver
    page.click("#webhook-ping")
    page.wait_for_url(portal + "/webhooks/" + hook_id)
    assert "Ping queued" in _flash_text(page)
    deadline = time.monotonic() + 30
    pings = []
    while not pings and time.monotonic() < deadline:
        pings = [r for r in receiver.wait_for(2, path="/hook", timeout=1)
                 if json.loads(r.body)["type"] == "webhook/ping"]
    assert pings, "the ping never arrived"
    payload = pings[0].verify(secret)
    assert payload["type"] == "webhook/ping"
    assert payload["data"] == {}
    assert payload["hook_id"] == hook_id
    assert payload["site_url"] == portal
    _reload_until(page, ".webhooks-statistics", "2 succeeded")
    _shoot(page, shots / "hook.png")

    # delete: a confirmation first, then the index with a flash
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
