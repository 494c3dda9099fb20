"""Abuse resistance: SSRF guard, rebinding, response limits, rate limits,
the address cap, property-based input tests and the receiver examples."""
from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

import ckan.model as model
import ckan.plugins.toolkit as tk
from ckan.tests import factories, helpers

from ckanext.webhooks.tests.callers import anonymous
from ckanext.webhooks.tests.factories import HookFactory, hook_count

EXAMPLES = os.path.join(os.path.dirname(__file__), "..", "..", "..", "docs",
                        "examples")

pytestmark = pytest.mark.usefixtures("webhooks")

PRIVATE_SPELLINGS = [
    "http://127.0.0.1/hook", "http://127.1/hook", "http://2130706433/hook",
    "http://0x7f000001/hook", "http://0177.0.0.1/hook",
    "http://localhost/hook", "http://LOCALHOST./hook",
    "http://foo.localhost/hook", "http://[::1]/hook",
    "http://[::ffff:127.0.0.1]/hook", "http://[::ffff:7f00:1]/hook",
    "http://10.0.0.1/hook", "http://172.16.5.4/hook",
    "http://192.168.1.1/hook", "http://169.254.169.254/latest/meta-data",
    "http://100.64.0.1/hook", "http://0.0.0.0/hook", "http://0/hook",
    "http://224.0.0.1/hook", "http://239.255.255.250/hook",
    "http://[fc00::1]/hook", "http://[fd12:3456::1]/hook",
    "http://[fe80::1]/hook", "http://192.0.2.1/hook",
    "http://198.51.100.7/hook", "http://203.0.113.9/hook",
    "http://[2001:db8::1]/hook", "http://240.0.0.1/hook",
    "http://255.255.255.255/hook", "https://127.0.0.1:8443/hook",
]


@pytest.mark.ckan_config("ckanext.webhooks.allow_private_addresses", "false")
@pytest.mark.parametrize("address", PRIVATE_SPELLINGS)
def test_private_address_in_any_spelling_is_refused(address):
    with pytest.raises(tk.ValidationError) as e:
        helpers.call_action("webhook_create", context=anonymous(),
                            topic="dataset/create", address=address)
    assert "private" in e.value.error_dict["address"][0]
    assert hook_count() == 0


@pytest.mark.ckan_config("ckanext.webhooks.allow_private_addresses", "false")
@pytest.mark.parametrize("address", ["http://8.8.8.8/hook",
                                     "https://[2606:4700::1111]/x",
                                     "http://example.com/callback"])
def test_public_or_unresolvable_address_is_accepted(address):
    assert helpers.call_action("webhook_create", context=anonymous(),
                               topic="dataset/create", address=address)


@pytest.fixture
def fake_dns(monkeypatch):
    """Names that resolve to the IPs the test says, in order."""
    answers: dict[str, list[str]] = {}
    real = socket.getaddrinfo

    def getaddrinfo(host, port, *args, **kwargs):
        if host in answers:
            ip = answers[host].pop(0) if len(answers[host]) > 1 \
                else answers[host][0]
            return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (ip, port))]
        return real(host, port, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    return answers


def test_rebinding_name_is_refused_at_delivery(fake_dns, receiver,
                                               run_jobs, monkeypatch):
    port = receiver.server.server_port
    fake_dns["rebind.example"] = ["93.184.216.34", "127.0.0.1"]
    monkeypatch.setitem(tk.config,
                        "ckanext.webhooks.allow_private_addresses", False)
    hook_id = HookFactory(
        address="http://rebind.example:{}/hook".format(port))["id"]
    factories.Dataset()
    run_jobs()
    assert receiver.arrived == []
    [row] = helpers.call_action("webhook_delivery_list", id=hook_id)
    assert row["status"] == "pending" and "private" in row["error"]


def test_attempt_connects_to_the_resolved_ip_and_keeps_the_host_name(
        fake_dns, receiver, run_jobs):
    port = receiver.server.server_port
    fake_dns["receiver.example"] = ["127.0.0.1"]
    HookFactory(address="http://receiver.example:{}/hook".format(port))
    factories.Dataset()
    run_jobs()
    [got] = receiver.requests
    assert got.headers["host"] == "receiver.example:{}".format(port)
    assert "x-webhooks-tls-name" not in got.headers


def test_address_turned_private_is_refused_at_delivery(receiver, run_jobs,
                                                      monkeypatch):
    hook_id = HookFactory(receiver=receiver)["id"]
    monkeypatch.setitem(tk.config,
                        "ckanext.webhooks.allow_private_addresses", False)
    factories.Dataset()
    run_jobs()
    assert receiver.arrived == []
    [row] = helpers.call_action("webhook_delivery_list", id=hook_id)
    assert row["error"].startswith("refused")


class _EndlessServer:
    """Answers 200, then sends body bytes forever (or very slowly)."""

    def __init__(self, pause: float):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.pause = pause
        self.stop = threading.Event()
        threading.Thread(target=self._serve, daemon=True).start()

    def url(self):
        return "http://127.0.0.1:{}/".format(self.sock.getsockname()[1])

    def _serve(self):
        while not self.stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._drip, args=(conn,),
                             daemon=True).start()

    def _drip(self, conn):
        try:
            conn.recv(65536)
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n"
                         b"Transfer-Encoding: chunked\r\n\r\n")
            while not self.stop.is_set():
                conn.sendall(b"4000\r\n" + b"x" * 0x4000 + b"\r\n")
                if self.pause:
                    time.sleep(self.pause)
        except OSError:
            pass
        finally:
            conn.close()

    def close(self):
        self.stop.set()
        self.sock.close()


@pytest.mark.ckan_config("ckanext.webhooks.timeout", "2")
@pytest.mark.parametrize("pause", [0, 0.5], ids=["endless", "slow"])
def test_endless_or_slow_answer_cannot_pin_a_worker(run_jobs, pause):
    server = _EndlessServer(pause)
    try:
        hook_id = HookFactory(address=server.url())["id"]
        factories.Dataset()
        started = time.monotonic()
        run_jobs()
        elapsed = time.monotonic() - started
    finally:
        server.close()
    [row] = helpers.call_action("webhook_delivery_list", id=hook_id)
    assert row["status"] == "succeeded"  # the status line was 200
    assert elapsed < 10, elapsed


@pytest.mark.ckan_config("ckanext.webhooks.anonymous_create_limit", "2")
def test_anonymous_creation_is_rate_limited_per_client_address(app, reset_redis):
    reset_redis()
    url = "/api/3/action/webhook_create"
    data = {"topic": "dataset/create", "address": "http://example.com/a"}
    for _ in range(2):
        assert app.post(url, json=data,
                        environ_base={"REMOTE_ADDR": "203.0.113.5"}
                        ).status_code == 200
    before = hook_count()
    response = app.post(url, json=data,
                        environ_base={"REMOTE_ADDR": "203.0.113.5"})
    assert response.status_code == 409
    assert "rate_limit" in response.json["error"]
    assert hook_count() == before
    # another client is not affected
    assert app.post(url, json=data,
                    environ_base={"REMOTE_ADDR": "203.0.113.6"}
                    ).status_code == 200


@pytest.mark.ckan_config("ckanext.webhooks.max_hooks_per_address", "2")
def test_hooks_per_address_are_capped():
    for _ in range(2):
        helpers.call_action("webhook_create", topic="dataset/create",
                            address="http://example.com/victim")
    with pytest.raises(tk.ValidationError) as e:
        helpers.call_action("webhook_create", topic="dataset/update",
                            address="http://example.com/victim")
    assert "maximum" in e.value.error_dict["address"][0]
    assert hook_count() == 2


# --- property-based: no input makes a 500, a failure stores nothing -------

# strings as JSON can carry them: lone surrogates ("\ud800") included,
# which Python's JSON parser lets through and PostgreSQL cannot store
_texts = st.text(max_size=30) | st.text(
    st.characters(categories=["Cs", "Ll", "Nd", "Zs", "Cc"]),
    min_size=1, max_size=8)

_json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False)
    | _texts
    # beyond a bigint (PostgreSQL's OFFSET and LIMIT)
    | st.integers(min_value=2 ** 63 - 2, max_value=2 ** 70),
    lambda children: st.lists(children, max_size=3)
    | st.dictionaries(_texts, children, max_size=3),
    max_leaves=6)

_fields = st.sampled_from(["topic", "topics", "address", "dataset",
                           "organization", "group", "resource",
                           "description", "enabled", "since", "id", "limit",
                           "offset", "mine", "delivery_id", "extra"])


def _spoilt(good: st.SearchStrategy) -> st.SearchStrategy:
    """A good value, sometimes with a lone surrogate in it."""
    return good | good.map(lambda value: value + "\ud800")


_good = {"topic": _spoilt(st.sampled_from(["dataset/create", "resource/*",
                                           "dataset/nope"])),
         "topics": st.lists(_spoilt(st.sampled_from(
             ["dataset/create", "resource/*", "dataset/nope"])),
             max_size=3),
         "address": _spoilt(st.sampled_from([
             "http://example.com/h", "ftp://x", "http://",
             "http://a.b/" + "x" * 2100])),
         "since": _spoilt(st.sampled_from(["2026-01-01T00:00:00Z",
                                           "0001-01-01T00:00:00+01:00",
                                           "9999-12-31T23:59:59-01:00"])),
         "id": _spoilt(st.just("no-such-hook")),
         "delivery_id": _spoilt(st.just("msg_x")),
         "description": _spoilt(st.sampled_from(["about", " "]))}


@st.composite
def _inputs(draw):
    data = draw(st.dictionaries(_fields, _json_values, max_size=5))
    for key, strategy in _good.items():
        if draw(st.booleans()):
            data[key] = draw(strategy)
    return data


_ACTIONS = ["webhook_create", "webhook_show", "webhook_update",
            "webhook_delete", "webhook_list", "webhook_ping",
            "webhook_delivery_list", "webhook_delivery_show",
            "webhook_redeliver", "webhook_recover", "webhook_rotate_secret"]


def _post_json(app, action: str, data: dict, headers=None):
    # json.dumps writes a lone surrogate as "\ud800", as clients do
    return app.post("/api/3/action/" + action, data=json.dumps(data),
                    content_type="application/json", headers=headers or {})


def _answered_properly(response) -> None:
    assert response.status_code in (200, 403, 404, 409), response.body
    if response.status_code == 409:
        assert response.json["error"]["__type"] == "Validation Error"


@settings(max_examples=60, deadline=None, suppress_health_check=[
    HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(data=_inputs(), action=st.sampled_from(_ACTIONS))
def test_no_input_makes_a_server_error_or_stores_anything(app, data, action):
    before = hook_count()
    response = _post_json(app, action, data)
    _answered_properly(response)
    if response.status_code != 200 or action != "webhook_create":
        assert hook_count() == before


@pytest.fixture
def fuzzed_hook(webhooks):
    """A hook to aim input at, and a logged-in user (for webhook_list)."""
    user = factories.UserWithToken()
    hook_id = HookFactory(user=user,
                          address="http://example.com/fuzzed")["id"]
    return hook_id, {"Authorization": user["token"]}


def _hook_state(hook_id: str) -> dict:
    model.Session.remove()
    shown = helpers.call_action("webhook_show", id=hook_id)
    return {key: shown[key] for key in ("topics", "address", "filters",
                                        "description", "status", "secret")}


@settings(max_examples=60, deadline=None, suppress_health_check=[
    HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(data=_inputs(), action=st.sampled_from(_ACTIONS))
def test_no_input_aimed_at_a_real_hook_makes_a_server_error(
        app, fuzzed_hook, data, action):
    hook_id, headers = fuzzed_hook
    if action != "webhook_delete":
        data["id"] = hook_id
    before = _hook_state(hook_id)
    response = _post_json(app, action, data, headers)
    _answered_properly(response)
    if response.status_code != 200:
        # a refusal changes nothing
        assert _hook_state(hook_id) == before


# --- the receiver guide's examples verify real deliveries ----------------

@pytest.mark.parametrize("command", [
    [sys.executable, "receive_standardwebhooks.py"],
    [sys.executable, "receive_hmac.py"],
    ["node", "receive.js"]], ids=["standardwebhooks", "hmac", "node"])
def test_receiver_guide_examples_verify_a_real_delivery(
        command, receiver, run_jobs):
    if shutil.which(command[0]) is None:
        pytest.skip(command[0] + " is not installed")
    hook_id = HookFactory(receiver=receiver)["id"]
    helpers.call_action("webhook_rotate_secret", id=hook_id)
    secret = helpers.call_action("webhook_show", id=hook_id)["secret"]
    factories.Dataset()
    run_jobs()
    [got] = receiver.requests
    assert len(got.headers["webhook-signature"].split(" ")) == 2
    request = json.dumps({"headers": got.headers,
                          "body": got.body.decode()})

    def run(secret_):
        return subprocess.run(command + [secret_], input=request, text=True,
                              capture_output=True, cwd=EXAMPLES, timeout=60)

    ok = run(secret)
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout.startswith("OK dataset/create msg_")
    wrong = run("whsec_" + "A" * 43 + "=")
    assert wrong.returncode != 0


# --- TLS: connect to the vetted IP, verify the certificate for the name ---

@pytest.fixture
def tls_receiver(tmp_path, monkeypatch):
    """An HTTPS receiver on 127.0.0.1 whose certificate names
    receiver.example, signed by a CA the sender is told to trust."""
    trustme = pytest.importorskip("trustme")
    import ssl
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
    from ckanext.webhooks.pipeline import sending

    ca = trustme.CA()
    ca_path = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_path))
    # the sender trusts this CA instead of certifi's bundle
    monkeypatch.setattr(sending, "_tls",
                        ssl.create_default_context(cafile=str(ca_path)))
    got = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):
            self.rfile.read(int(self.headers["Content-Length"]))
            got.append(self.headers["Host"])
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ca.issue_cert("receiver.example").configure_cert(context)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server.server_address[1], got
    server.shutdown()


@pytest.mark.parametrize("name, delivered", [("receiver.example", True),
                                             ("impostor.example", False)])
def test_tls_certificate_is_verified_for_the_name_not_the_ip(
        fake_dns, tls_receiver, run_jobs, name, delivered):
    port, got = tls_receiver
    fake_dns[name] = ["127.0.0.1"]
    hook_id = HookFactory(
        address="https://{}:{}/hook".format(name, port))["id"]
    factories.Dataset()
    run_jobs()
    [row] = helpers.call_action("webhook_delivery_list", id=hook_id)
    if delivered:
        assert row["status"] == "succeeded", row["error"]
        assert got == ["receiver.example:{}".format(port)]
    else:
        assert row["status"] == "pending" and row["response_status"] is None
        assert got == []
