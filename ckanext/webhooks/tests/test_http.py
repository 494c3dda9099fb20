"""The HTTP transport of a delivery attempt, against a raw loopback socket
server that answers exactly the bytes each test scripts: keep-alive, chunked
and unsized answers, interim 1xx answers, folded headers, garbage, other
protocols' banners, and receivers that close a kept-alive connection.
"""
from __future__ import annotations

import asyncio
import socket
import threading

import pytest

import ckan.plugins.toolkit as tk

from ckanext.webhooks.model import new_secret
from ckanext.webhooks.pipeline import bodies, sending


class RawReceiver:
    """Answers the n-th request with the n-th scripted answer: (bytes, close
    the connection afterwards)."""

    def __init__(self, answers: list[tuple[bytes, bool]],
                 host: str = "127.0.0.1"):
        self.answers = list(answers)
        self.connections = 0
        self.requests: list[bytes] = []
        self.host = host
        self.sock = socket.socket(
            socket.AF_INET6 if ":" in host else socket.AF_INET)
        self.sock.bind((host, 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self._lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def url(self, path: str = "/hook") -> str:
        host = "[{}]".format(self.host) if ":" in self.host else self.host
        return "http://{}:{}{}".format(host, self.port, path)

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with self._lock:
                self.connections += 1
            threading.Thread(target=self._serve, args=(conn,),
                             daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        reader = conn.makefile("rb")
        try:
            while True:
                head = b""
                while not head.endswith(b"\r\n\r\n"):
                    line = reader.readline()
                    if not line:
                        return
                    head += line
                length = 0
                for line in head.split(b"\r\n"):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":", 1)[1])
                body = reader.read(length)
                with self._lock:
                    self.requests.append(head + body)
                    answer, close = self.answers.pop(0)
                conn.sendall(answer)
                if close:
                    return
        finally:
            reader.close()
            conn.close()

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def raw():
    made = []

    def make(*answers, host="127.0.0.1"):
        server = RawReceiver(list(answers), host)
        made.append(server)
        return server
    yield make
    for server in made:
        server.close()


_transport: dict = {}


@pytest.fixture(autouse=True)
def transport():
    """One transport (and its kept-alive connections) per test."""
    loop = asyncio.new_event_loop()
    _transport["loop"] = loop
    _transport["it"] = sending.Transport(
        tk.config.get("ckanext.webhooks.timeout"),
        tk.config.get("ckanext.webhooks.max_response_bytes"))
    yield
    loop.run_until_complete(_transport["it"].close())
    loop.close()


def _post(url: str, n: int = 0) -> sending.Outcome:
    return _transport["loop"].run_until_complete(_transport["it"].post(
        url, "msg_{}".format(n), '{"n":%d}' % n, [new_secret()]))


NO_CONTENT = b"HTTP/1.1 204 No Content\r\n\r\n"


def test_kept_alive_connection_is_reused(raw):
    server = raw((NO_CONTENT, False), (NO_CONTENT, False),
                 (NO_CONTENT, False))
    outcomes = [_post(server.url("/a/{}".format(n)), n) for n in range(3)]
    assert [o.status for o in outcomes] == [204, 204, 204]
    assert server.connections == 1
    # path, Host and the signed headers are on the wire
    first = server.requests[0].decode()
    assert first.startswith("POST /a/0 HTTP/1.1\r\n")
    assert "Host: 127.0.0.1:{}\r\n".format(server.port) in first
    assert "webhook-id: msg_0\r\n" in first


def test_ipv6_receiver(raw):
    try:
        server = raw((NO_CONTENT, False), host="::1")
    except OSError:
        pytest.skip("no IPv6 loopback here")
    assert _post(server.url("/v6?x=1")).status == 204
    first = server.requests[0].decode()
    assert first.startswith("POST /v6?x=1 HTTP/1.1\r\n")
    assert "Host: [::1]:{}\r\n".format(server.port) in first


def test_path_outside_ascii_is_percent_encoded(raw):
    server = raw((NO_CONTENT, False))
    assert _post(server.url("/caf\u00e9 x?q=\u00e9&r=%41")).status == 204
    assert server.requests[0].startswith(
        b"POST /caf%C3%A9%20x?q=%C3%A9&r=%41 HTTP/1.1\r\n")


def test_chunked_answer_is_read_and_the_connection_kept(raw):
    chunked = (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
               b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n")
    server = raw((chunked, False), (NO_CONTENT, False))
    first = _post(server.url())
    assert (first.status, first.response_body) == (200, b"hello world")
    assert _post(server.url(), 1).status == 204
    assert server.connections == 1


def test_unsized_answer_is_read_to_the_end_and_not_reused(raw):
    server = raw((b"HTTP/1.0 200 OK\r\n\r\nall of it", True),
                 (NO_CONTENT, False))
    first = _post(server.url())
    assert (first.status, first.response_body) == (200, b"all of it")
    assert _post(server.url(), 1).status == 204
    assert server.connections == 2


def test_interim_answers_are_skipped(raw):
    server = raw((b"HTTP/1.1 100 Continue\r\n\r\n"
                  b"HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n"
                  + NO_CONTENT, False))
    assert _post(server.url()).status == 204


def test_headers_are_read_without_case_and_with_folding(raw):
    server = raw((b"HTTP/1.1 503 Busy\r\nrEtRy-AfTeR:\r\n  7\r\n"
                  b"Content-Length: 0\r\n\r\n", False))
    outcome = _post(server.url())
    assert outcome.status == 503
    assert outcome.retry_after == 7.0


def test_connection_closed_by_the_receiver_after_an_answer(raw):
    """An answer without ``Connection: close`` whose connection the
    receiver closes anyway: the next message goes on a new one."""
    answer = b"HTTP/1.1 204 No Content\r\n\r\n"
    server = raw((answer, True), (answer, True), (answer, False))
    assert [_post(server.url(), n).status for n in range(3)] == \
        [204, 204, 204]
    assert server.connections == 3


def test_another_protocols_banner_is_not_an_http_answer(raw):
    server = raw((b"SSH-2.0-OpenSSH_9.2p1 Debian-2+deb12u3\r\n", True))
    outcome = _post(server.url())
    assert outcome.status is None
    # said in our words: never the bytes the other end sent
    assert outcome.error == "not an HTTP answer"
    assert outcome.retryable


def test_garbage_is_an_error_that_is_retried(raw):
    server = raw((b"\x00\x01\xff garbage\r\n\r\n", True))
    outcome = _post(server.url())
    assert outcome.status is None
    assert outcome.error == "not an HTTP answer"
    assert outcome.retryable


def test_an_overlong_header_is_an_error_in_our_words(raw):
    line = b"X-Long: " + b"a" * 20000 + b"\r\n"
    server = raw((b"HTTP/1.1 200 OK\r\n" + line + b"\r\n", True))
    outcome = _post(server.url())
    assert outcome.status is None
    assert outcome.error.startswith("bad answer")
    assert "aaaa" not in outcome.error


def test_answer_body_is_capped(raw):
    _transport["it"].max_response_bytes = 10
    body = b"x" * 1000000
    server = raw((b"HTTP/1.1 200 OK\r\nContent-Length: 1000000\r\n\r\n"
                  + body, False), (NO_CONTENT, False))
    outcome = _post(server.url())
    assert (outcome.status, outcome.response_body) == (200, b"x" * 10)
    # the rest is not read; the next attempt is not confused by it
    assert _post(server.url(), 1).status == 204


def test_composed_body_is_the_json_of_the_whole():
    import json
    data = {"name": "caf\u00e9 \"quoted\" \\ </script>", "n": [1, 2.5, None],
            "nested": {"ok": True}}
    body = bodies.compose_body("msg_1", "dataset/update",
                               "2026-11-30T00:00:00Z", "hook-id",
                               bodies.to_json(data))
    assert body == json.dumps({
        "id": "msg_1", "type": "dataset/update",
        "timestamp": "2026-11-30T00:00:00Z", "hook_id": "hook-id",
        "site_url": tk.config.get("ckan.site_url"), "data": data},
        separators=(",", ":"))


def test_composed_test_delivery_and_changes_are_the_json_of_the_whole():
    import json
    body = bodies.compose_body("msg_2", "dataset/update",
                               "2026-11-30T00:00:00Z", "hook-id",
                               bodies.to_json({"id": "x"}), test=True,
                               changes_json=bodies.to_json(
                                   {"notes": {"from": "old"}}))
    assert json.loads(body) == {
        "id": "msg_2", "type": "dataset/update",
        "timestamp": "2026-11-30T00:00:00Z", "hook_id": "hook-id",
        "site_url": tk.config.get("ckan.site_url"), "test": True,
        "data": {"id": "x"}, "changes": {"notes": {"from": "old"}}}
