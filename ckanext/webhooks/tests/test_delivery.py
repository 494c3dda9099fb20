"""What reaches a receiver, and what CKAN does with the receiver's answer."""
import base64
import datetime
import json
import socket
import threading
import time

import pytest
from standardwebhooks import Webhook, WebhookVerificationError

import ckan.logic as logic
import ckan.model as model
import ckan.plugins.toolkit as tk
from ckan.tests import factories

import ckanext.webhooks
from ckanext.webhooks.model import Secret, utcnow
from ckanext.webhooks.tests.callers import call
from ckanext.webhooks.tests.factories import HookFactory
from ckanext.webhooks.tests.receiver import Answer

pytestmark = pytest.mark.usefixtures("webhooks")


def deliveries_of(hook: dict) -> list[dict]:
    return call("webhook_delivery_list", id=hook["id"])


def hook_is_gone(hook: dict) -> bool:
    try:
        call("webhook_show", id=hook["id"])
    except logic.NotFound:
        return True
    return False


# --- the request -------------------------------------------------------------

def test_request_is_a_signed_standard_webhooks_post(receiver, run_jobs):
    hook = HookFactory(receiver=receiver, path="/in")
    dataset = factories.Dataset(resources=[{"url": "http://example.com/a"},
                                           {"url": "http://example.com/b"}])
    run_jobs()
    got = receiver.wait_for(1, "/in")
    assert len(got) == 1
    request = got[0]
    headers = request.headers

    assert headers["content-type"] == "application/json"
    assert headers["user-agent"] == \
        "ckanext-webhooks/" + ckanext.webhooks.__version__

    message_id = headers["webhook-id"]
    assert message_id and "." not in message_id
    timestamp = headers["webhook-timestamp"]
    assert timestamp.isdigit()
    assert abs(int(timestamp) - time.time()) < 30

    assert headers["webhook-signature"].startswith("v1,")
    payload = Webhook(hook["secret"]).verify(request.body, headers)
    assert payload == json.loads(request.body)

    assert set(payload) == {"id", "type", "timestamp", "hook_id", "site_url",
                            "data"}
    assert payload["id"] == message_id
    assert payload["type"] == "dataset/create"
    assert payload["hook_id"] == hook["id"]
    assert payload["site_url"] == tk.config.get("ckan.site_url")
    assert payload["timestamp"].endswith("Z")

    shown = call("package_show", id=dataset["id"])
    data = payload["data"]
    for key in ("id", "name", "title", "notes", "state", "private"):
        assert data[key] == shown[key], key
    assert [r["id"] for r in data["resources"]] == \
        [r["id"] for r in shown["resources"]]


def test_signature_does_not_verify_with_another_secret(receiver, run_jobs):
    HookFactory(receiver=receiver, path="/in")
    other = HookFactory(receiver=receiver, path="/other-hook",
                        topic="dataset/update")
    factories.Dataset()
    run_jobs()
    request = receiver.wait_for(1, "/in")[0]
    with pytest.raises(WebhookVerificationError):
        Webhook(other["secret"]).verify(request.body, request.headers)


def test_tampered_body_does_not_verify(receiver, run_jobs):
    hook = HookFactory(receiver=receiver, path="/in")
    factories.Dataset()
    run_jobs()
    request = receiver.wait_for(1, "/in")[0]
    tampered = request.body.replace(b'"dataset/create"', b'"dataset/delete"')
    assert tampered != request.body
    with pytest.raises(WebhookVerificationError):
        Webhook(hook["secret"]).verify(tampered, request.headers)


# --- redirects and timeouts --------------------------------------------------

@pytest.mark.ckan_config("ckanext.webhooks.retry_schedule", "")
def test_redirects_are_not_followed(receiver, run_jobs):
    hook = HookFactory(receiver=receiver, path="/moved")
    receiver.always("/moved", lambda got: Answer(
        302, headers={"Location": receiver.url("/elsewhere")}))
    factories.Dataset()
    run_jobs()
    assert len(receiver.wait_for(1, "/moved")) == 1
    assert receiver.wait_for(1, "/elsewhere", timeout=1,
                             arrived=True) == []
    [message] = deliveries_of(hook)
    assert message["status"] != "succeeded"
    assert message["response_status"] == 302


@pytest.mark.ckan_config("ckanext.webhooks.timeout", "1")
@pytest.mark.ckan_config("ckanext.webhooks.retry_schedule", "")
def test_slow_receiver_times_out(receiver, run_jobs):
    hook = HookFactory(receiver=receiver, path="/slow")
    receiver.answer("/slow", Answer(204, delay=3))
    factories.Dataset()
    started = time.monotonic()
    run_jobs()
    assert time.monotonic() - started < 3
    [message] = deliveries_of(hook)
    assert message["status"] == "failed"
    assert message["attempts"] == 1
    assert message["response_status"] is None
    assert "timeout" in message["error"].lower()


@pytest.mark.ckan_config("ckanext.webhooks.retry_schedule", "")
def test_unreachable_receiver_fails_with_a_connection_error(receiver,
                                                            run_jobs):
    hook = HookFactory(receiver=receiver, path="/gone-away")
    receiver.close()
    factories.Dataset()
    run_jobs()
    [message] = deliveries_of(hook)
    assert message["status"] == "failed"
    assert message["response_status"] is None
    assert message["error"]


# --- retries -----------------------------------------------------------------

@pytest.mark.ckan_config("ckanext.webhooks.retry_schedule", "0 0")
def test_server_error_is_retried_with_the_same_message_id(receiver, run_jobs):
    hook = HookFactory(receiver=receiver, path="/flaky")
    receiver.answer("/flaky", Answer(500), Answer(204))
    factories.Dataset()
    run_jobs()
    got = receiver.wait_for(2, "/flaky")
    assert len(got) == 2
    ids = [r.headers["webhook-id"] for r in got]
    assert ids[0] == ids[1]
    assert [r.verify(hook["secret"])["id"] for r in got] == ids
    [message] = deliveries_of(hook)
    assert message["id"] == ids[0]
    assert message["status"] == "succeeded"
    assert message["attempts"] == 2
    assert message["response_status"] == 204


@pytest.mark.ckan_config("ckanext.webhooks.retry_schedule", "0 0")
def test_retries_end_in_failed_when_the_schedule_is_used_up(receiver,
                                                            run_jobs):
    hook = HookFactory(receiver=receiver, path="/down")
    receiver.always("/down", lambda got: Answer(503))
    factories.Dataset()
    run_jobs()
    assert len(receiver.wait_for(3, "/down")) == 3
    [message] = deliveries_of(hook)
    assert message["status"] == "failed"
    assert message["attempts"] == 3
    assert message["response_status"] == 503
    assert not hook_is_gone(hook), "server errors do not delete a hook"


@pytest.mark.ckan_config("ckanext.webhooks.retry_schedule", "0 0")
def test_too_many_requests_is_retried(receiver, run_jobs):
    hook = HookFactory(receiver=receiver, path="/busy")
    receiver.answer("/busy", Answer(429, headers={"Retry-After": "0"}),
                    Answer(200))
    factories.Dataset()
    run_jobs()
    assert len(receiver.wait_for(2, "/busy")) == 2
    [message] = deliveries_of(hook)
    assert message["status"] == "succeeded"
    assert message["attempts"] == 2


@pytest.mark.ckan_config("ckanext.webhooks.retry_schedule", "3600")
def test_pending_retry_shows_its_next_attempt(receiver, run_jobs):
    hook = HookFactory(receiver=receiver, path="/later")
    receiver.answer("/later", Answer(500))
    factories.Dataset()
    run_jobs()
    [message] = deliveries_of(hook)
    assert message["status"] == "pending"
    assert message["attempts"] == 1
    assert message["response_status"] == 500
    assert message["next_attempt"]


# --- stale hooks -------------------------------------------------------------

def test_gone_deletes_the_hook_at_once(receiver, run_jobs):
    hook = HookFactory(receiver=receiver, path="/gone")
    receiver.answer("/gone", Answer(410))
    factories.Dataset()
    run_jobs()
    assert len(receiver.wait_for(1, "/gone")) == 1
    assert hook_is_gone(hook)
    factories.Dataset()
    run_jobs()
    assert len(receiver.wait_for(2, "/gone", timeout=1)) == 1


@pytest.mark.ckan_config("ckanext.webhooks.max_client_errors", "2")
def test_consecutive_client_errors_delete_the_hook(receiver, run_jobs):
    hook = HookFactory(receiver=receiver, path="/stale")
    receiver.always("/stale", lambda got: Answer(404))
    factories.Dataset()
    run_jobs()
    assert not hook_is_gone(hook), "one 404 is not enough"
    factories.Dataset()
    run_jobs()
    assert len(receiver.wait_for(2, "/stale")) == 2
    assert hook_is_gone(hook)


@pytest.mark.ckan_config("ckanext.webhooks.max_client_errors", "2")
def test_a_success_resets_the_client_error_count(receiver, run_jobs):
    hook = HookFactory(receiver=receiver, path="/sometimes")
    receiver.answer("/sometimes", Answer(404), Answer(204), Answer(404),
                    Answer(404))
    for expected_gone in (False, False, False, True):
        factories.Dataset()
        run_jobs()
        assert hook_is_gone(hook) is expected_gone
    assert len(receiver.wait_for(4, "/sometimes")) == 4


# --- ping, rotation, delivery log, redelivery --------------------------------

def test_ping_delivers_webhook_ping_with_empty_data(receiver, run_jobs):
    hook = HookFactory(receiver=receiver, path="/ping")
    message_id = call("webhook_ping", id=hook["id"])
    run_jobs()
    [request] = receiver.wait_for(1, "/ping")
    payload = request.verify(hook["secret"])
    assert payload["type"] == "webhook/ping"
    assert payload["data"] == {}
    assert payload["id"] == message_id == request.headers["webhook-id"]
    assert payload["hook_id"] == hook["id"]
    [message] = deliveries_of(hook)
    assert (message["id"], message["type"], message["status"]) == (
        message_id, "webhook/ping", "succeeded")


def _single(headers: dict, signature: str) -> dict:
    return dict(headers, **{"webhook-signature": signature})


def test_rotated_secret_signs_beside_the_old_one(receiver, run_jobs):
    hook = HookFactory(receiver=receiver, path="/rotate")
    old = hook["secret"]
    new = call("webhook_rotate_secret", id=hook["id"])
    assert new != old
    assert new.startswith("whsec_")
    assert len(base64.b64decode(new[len("whsec_"):])) == 32
    assert call("webhook_show", id=hook["id"])["secret"] == new

    factories.Dataset()
    run_jobs()
    [request] = receiver.wait_for(1, "/rotate")
    signatures = request.headers["webhook-signature"].split(" ")
    assert len(signatures) == 2
    # each secret verifies exactly one of the two signatures
    for secret in (old, new):
        verified = []
        for signature in signatures:
            try:
                Webhook(secret).verify(request.body,
                                       _single(request.headers, signature))
                verified.append(signature)
            except WebhookVerificationError:
                pass
        assert len(verified) == 1, secret
    assert request.verify(old) == request.verify(new)


def test_delivery_list_is_newest_first_with_its_fields(receiver, run_jobs):
    hook = HookFactory(receiver=receiver, path="/log", topic="dataset/*")
    receiver.answer("/log", Answer(204), Answer(404))
    first = call("webhook_ping", id=hook["id"])
    run_jobs()
    receiver.wait_for(1, "/log")
    time.sleep(0.01)
    dataset = factories.Dataset()
    run_jobs()
    receiver.wait_for(2, "/log")
    listed = deliveries_of(hook)
    assert [m["type"] for m in listed] == ["dataset/create", "webhook/ping"]
    assert listed[1]["id"] == first
    for message in listed:
        for key in ("id", "type", "status", "attempts", "response_status",
                    "created", "next_attempt"):
            assert key in message, key
    newest, oldest = listed
    assert newest["created"] >= oldest["created"]
    assert (oldest["status"], oldest["attempts"],
            oldest["response_status"]) == ("succeeded", 1, 204)
    assert (newest["status"], newest["attempts"],
            newest["response_status"]) == ("failed", 1, 404)
    assert receiver.on("/log")[1].json["data"]["id"] == dataset["id"]
    assert len(call("webhook_delivery_list", id=hook["id"], limit=1)) == 1


def test_redeliver_sends_the_same_message_again(receiver, run_jobs):
    hook = HookFactory(receiver=receiver, path="/again")
    receiver.answer("/again", Answer(404), Answer(204))
    factories.Dataset()
    run_jobs()
    [message] = deliveries_of(hook)
    assert message["status"] == "failed"
    assert call("webhook_redeliver", id=hook["id"],
                delivery_id=message["id"]) == message["id"]
    run_jobs()
    first, second = receiver.wait_for(2, "/again")
    assert first.headers["webhook-id"] == second.headers["webhook-id"] == \
        message["id"]
    assert first.verify(hook["secret"]) == second.verify(hook["secret"])
    [again] = deliveries_of(hook)
    assert again["id"] == message["id"]
    assert again["status"] == "succeeded"


def test_redeliver_of_another_hooks_message_is_not_found(receiver, run_jobs):
    mine = HookFactory(receiver=receiver, path="/mine")
    theirs = HookFactory(receiver=receiver, path="/theirs")
    message_id = call("webhook_ping", id=theirs["id"])
    run_jobs()
    with pytest.raises(logic.NotFound):
        call("webhook_redeliver", id=mine["id"], delivery_id=message_id)


def test_old_secret_stops_signing_when_the_overlap_ends(receiver, run_jobs):
    hook = HookFactory(receiver=receiver, path="/rotated")
    old = hook["secret"]
    new = call("webhook_rotate_secret", id=hook["id"])
    # the 24 hours are over
    model.Session.query(Secret).filter(Secret.hook_id == hook["id"]).update(
        {"expires": utcnow() - datetime.timedelta(seconds=1)})
    model.Session.commit()
    call("webhook_ping", id=hook["id"])
    run_jobs()
    [request] = receiver.wait_for(1, "/rotated")
    assert len(request.headers["webhook-signature"].split(" ")) == 1
    request.verify(new)
    with pytest.raises(WebhookVerificationError):
        request.verify(old)


@pytest.mark.ckan_config("ckanext.webhooks.retry_schedule", "0 0")
def test_retry_after_is_honoured(receiver, run_jobs):
    hook = HookFactory(receiver=receiver, path="/wait")
    receiver.answer("/wait", Answer(503, headers={"Retry-After": "3600"}))
    factories.Dataset()
    run_jobs()
    assert len(receiver.wait_for(1, "/wait")) == 1
    [message] = deliveries_of(hook)
    assert message["status"] == "pending"
    assert message["attempts"] == 1
    next_attempt = datetime.datetime.fromisoformat(message["next_attempt"])
    last_attempt = datetime.datetime.fromisoformat(message["last_attempt"])
    # never earlier than asked; jitter only adds, at most a fifth
    assert 3599 < (next_attempt - last_attempt).total_seconds() < 3600 * 1.2 + 60


@pytest.mark.ckan_config("ckanext.webhooks.retry_schedule", "0 0")
def test_a_redirect_is_not_retried(receiver, run_jobs):
    hook = HookFactory(receiver=receiver, path="/moved-for-good")
    receiver.always("/moved-for-good", lambda got: Answer(
        301, headers={"Location": "http://example.com/"}))
    factories.Dataset()
    run_jobs()
    assert len(receiver.wait_for(1, "/moved-for-good")) >= 1
    [message] = deliveries_of(hook)
    assert message["attempts"] == 1
    assert message["status"] == "failed"


class TricklingServer:
    """A loopback HTTP server that sends its answer's headers a byte at a
    time, each byte well within the timeout, the whole far beyond it.

    ``held`` says, per connection, how long the client stayed: until it hung
    up, or until the whole answer was sent.
    """

    def __init__(self, interval: float, total: float):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(5)
        self.interval, self.total = interval, total
        self.held: list[float] = []
        threading.Thread(target=self._serve, daemon=True).start()

    def url(self) -> str:
        return "http://127.0.0.1:{}/trickle".format(
            self.sock.getsockname()[1])

    def _serve(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._trickle, args=(conn,),
                             daemon=True).start()

    def _trickle(self, conn):
        accepted = time.monotonic()
        try:
            conn.recv(65536)
            conn.sendall(b"HTTP/1.1 204 No Content\r\nX-Slow: ")
            end = accepted + self.total
            while time.monotonic() < end:
                conn.sendall(b"a")
                time.sleep(self.interval)
            conn.sendall(b"\r\nContent-Length: 0\r\n\r\n")
        except OSError:
            pass  # the client hung up
        finally:
            self.held.append(time.monotonic() - accepted)
            conn.close()

    def wait_done(self, count: int, timeout: float) -> list[float]:
        deadline = time.monotonic() + timeout
        while len(self.held) < count and time.monotonic() < deadline:
            time.sleep(0.05)
        return self.held

    def close(self):
        self.sock.close()


@pytest.mark.ckan_config("ckanext.webhooks.timeout", "1")
@pytest.mark.ckan_config("ckanext.webhooks.retry_schedule", "")
def test_timeout_bounds_the_whole_attempt_even_for_a_trickling_receiver(
        run_jobs):
    server = TricklingServer(interval=0.2, total=4)
    try:
        hook_id = HookFactory(address=server.url())["id"]
        factories.Dataset()
        run_jobs()
        [held] = server.wait_done(1, timeout=5)
    finally:
        server.close()
    # a 1 s attempt, plus the moment the server needs to notice the hang-up
    assert held < 2.5, "the attempt lasted {:.1f}s with a 1s timeout".format(
        held)
    [message] = call("webhook_delivery_list", id=hook_id)
    assert message["status"] == "failed"
    assert "timeout" in message["error"].lower()
