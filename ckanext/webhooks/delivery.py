"""One delivery attempt: the signed body, the HTTP POST, its outcome.

Nothing here touches the database; ``jobs`` decides what to send and records
what happened.
"""
from __future__ import annotations

import base64
import functools
import hmac
import http.client
import json
import select
import socket
import ssl
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from typing import Any, Optional

import ckan.plugins.toolkit as tk

from ckanext.webhooks import __version__, addresses

USER_AGENT = "ckanext-webhooks/" + __version__

# keep-alive connections one sender thread keeps, to as many receivers
CONNECTIONS_PER_THREAD = 64

_local = threading.local()
_tls: Optional[ssl.SSLContext] = None


def tls_context() -> ssl.SSLContext:
    """Certificates are verified against the CA bundle requests uses
    (certifi), for the receiver's name, as a browser would."""
    global _tls
    if _tls is None:
        import certifi
        _tls = ssl.create_default_context(cafile=certifi.where())
    return _tls


class _Watch:
    """One attempt's connection, so the watchdog can cut it off."""

    __slots__ = ("conn", "deadline", "expired", "done", "lock")

    def __init__(self, conn: http.client.HTTPConnection, seconds: float):
        self.conn = conn
        self.deadline = time.monotonic() + seconds
        self.expired = False
        self.done = False
        self.lock = threading.Lock()

    def cut(self) -> None:
        with self.lock:
            if self.done:
                return
            self.expired = True
            sock = self.conn.sock
            if sock is not None:
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def finish(self) -> None:
        with self.lock:
            self.done = True


class _Watchdog:
    """One thread that cuts off attempts past their deadline.

    Socket timeouts bound each read; a receiver trickling bytes could still
    stretch one attempt far beyond them. Attempts register without waking
    anyone; the thread looks every ``TICK`` seconds.
    """

    TICK = 0.1

    def __init__(self):
        self._active: dict[int, _Watch] = {}
        self._lock = threading.Lock()
        self._thread: Optional[threading.Thread] = None

    def watch(self, watch: _Watch) -> None:
        self._active[id(watch)] = watch
        if self._thread is None or not self._thread.is_alive():
            with self._lock:
                if self._thread is None or not self._thread.is_alive():
                    self._thread = threading.Thread(
                        target=self._run, name="webhooks-watchdog",
                        daemon=True)
                    self._thread.start()

    def unwatch(self, watch: _Watch) -> None:
        watch.finish()
        self._active.pop(id(watch), None)

    def _run(self) -> None:
        while True:
            time.sleep(self.TICK)
            now = time.monotonic()
            for key, watch in list(self._active.items()):
                if watch.deadline <= now:
                    self._active.pop(key, None)
                    watch.cut()


_watchdog = _Watchdog()


class _Headers:
    """A response's header fields, looked up without case (what the email
    parser behind ``http.client`` builds, at a fraction of its cost)."""

    __slots__ = ("_fields",)

    def __init__(self, lines: list[bytes]):
        fields: dict[str, list[str]] = {}
        last: Optional[list[str]] = None
        for raw in lines:
            line = raw.decode("iso-8859-1").rstrip("\r\n")
            if not line:
                continue
            if line[0] in " \t" and last is not None:  # obsolete folding
                last[-1] += " " + line.strip()
                continue
            name, colon, value = line.partition(":")
            if not colon:
                continue
            last = fields.setdefault(name.strip().lower(), [])
            last.append(value.strip())
        self._fields = fields

    def get(self, name: str, default: Any = None) -> Any:
        values = self._fields.get(name.lower())
        return values[0] if values else default

    def get_all(self, name: str, failobj: Any = None) -> Any:
        return list(self._fields.get(name.lower(), ())) or failobj

    def items(self) -> list[tuple[str, str]]:
        return [(k, v) for k, vs in self._fields.items() for v in vs]


def _header_lines(fp) -> list[bytes]:
    """Header lines up to the blank one, with http.client's limits."""
    lines = []
    while True:
        line = fp.readline(_MAX_LINE + 1)
        if len(line) > _MAX_LINE:
            raise http.client.LineTooLong("header line")
        if line in (b"\r\n", b"\n", b""):
            return lines
        lines.append(line)
        if len(lines) > _MAX_HEADERS:
            raise http.client.HTTPException(
                "got more than {} headers".format(_MAX_HEADERS))


_MAX_LINE = 65536
_MAX_HEADERS = 100


class _Response(http.client.HTTPResponse):
    """``http.client``'s response, reading the header block with
    ``_Headers``; the rest (status line, chunked and sized bodies, keep-alive
    rules) is http.client's own."""

    def begin(self) -> None:
        if self.headers is not None:
            return
        while True:  # skip interim 1xx answers
            version, status, reason = self._read_status()
            if not 100 <= status < 200:
                break
            _header_lines(self.fp)
        self.code = self.status = status
        self.reason = reason.strip()
        if version in ("HTTP/1.0", "HTTP/0.9"):
            self.version = 10
        elif version.startswith("HTTP/1."):
            self.version = 11
        else:
            raise http.client.UnknownProtocol(version)
        self.headers = self.msg = _Headers(_header_lines(self.fp))
        encoding = self.headers.get("transfer-encoding")
        self.chunked = bool(encoding) and encoding.lower() == "chunked"
        self.chunk_left = None
        self.will_close = self._check_close()
        self.length = None
        length = self.headers.get("content-length")
        if length and not self.chunked:
            try:
                self.length = int(length)
            except ValueError:
                self.length = None
            else:
                if self.length < 0:
                    self.length = None
        if status in (204, 304) or self._method == "HEAD":
            self.length = 0
        if not self.will_close and not self.chunked and self.length is None:
            self.will_close = True


class _HTTP(http.client.HTTPConnection):
    response_class = _Response


class _PinnedHTTPS(http.client.HTTPSConnection):
    """Connects to the vetted IP; verifies the certificate for the name."""

    response_class = _Response

    def __init__(self, pinned: "addresses.Pinned", timeout: float):
        super().__init__(pinned.ip, pinned.port, timeout=timeout,
                         context=tls_context())
        self._server_name = pinned.hostname

    def connect(self) -> None:
        http.client.HTTPConnection.connect(self)
        self.sock = self._context.wrap_socket(
            self.sock, server_hostname=self._server_name)


def _new_connection(pinned: "addresses.Pinned",
                    timeout: float) -> http.client.HTTPConnection:
    if pinned.scheme == "https":
        return _PinnedHTTPS(pinned, timeout)
    return _HTTP(pinned.ip, pinned.port, timeout=timeout)


def _dropped(conn: http.client.HTTPConnection) -> bool:
    """True when an idle kept-alive connection was closed by the receiver
    (readable while idle means EOF or garbage: either way, not reusable)."""
    if conn.sock is None:
        return True
    try:
        poller = select.poll()
        poller.register(conn.sock, select.POLLIN)
        return bool(poller.poll(0))
    except (OSError, ValueError):
        return True


def _connections() -> "OrderedDict[tuple, http.client.HTTPConnection]":
    conns = getattr(_local, "connections", None)
    if conns is None:
        conns = _local.connections = OrderedDict()
    return conns


def close_connections() -> None:
    """Close this thread's kept-alive connections."""
    conns = _connections()
    while conns:
        conns.popitem()[1].close()


def to_json(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), default=str)


def compose_body(message_id: str, type_: str, timestamp: str, hook_id: str,
                 data_json: str, changes_json: Optional[str] = None) -> str:
    """The body around ``data`` (and an update's ``changes``) already in
    JSON (``to_json``): one event's data is serialised once for all its
    messages. The same text as ``to_json`` of the whole body would give."""
    body = '{"id":%s,"type":%s,"timestamp":%s,"hook_id":%s,"site_url":%s,' \
        '"data":%s' % (to_json(message_id), to_json(type_),
                       to_json(timestamp), to_json(hook_id),
                       _site_url_json(), data_json)
    if changes_json is not None:
        body += ',"changes":' + changes_json
    return body + "}"


def _site_url_json() -> str:
    return to_json(tk.config.get("ckan.site_url"))


@functools.lru_cache(maxsize=4096)
def _key(secret: str) -> bytes:
    return base64.b64decode(secret.removeprefix("whsec_"))


def sign(message_id: str, timestamp: int, body: str,
         secrets: list[str]) -> str:
    """The ``webhook-signature`` header: one ``v1,`` signature per secret."""
    content = f"{message_id}.{timestamp}.{body}".encode()
    signatures = []
    for secret in secrets:
        digest = hmac.digest(_key(secret), content, "sha256")
        signatures.append("v1," + base64.b64encode(digest).decode())
    return " ".join(signatures)


@dataclass
class Outcome:
    status: Optional[int]
    error: Optional[str]
    duration_ms: int
    retry_after: Optional[float] = None
    response_body: bytes = b""

    @property
    def succeeded(self) -> bool:
        return self.status is not None and 200 <= self.status < 300

    @property
    def gone(self) -> bool:
        return self.status == 410

    @property
    def retryable(self) -> bool:
        return self.status is None or self.status >= 500 \
            or self.status in (408, 429)

    @property
    def redirect(self) -> bool:
        """Redirects are not followed: a misconfigured address, not retried."""
        return self.status is not None and 300 <= self.status < 400

    @property
    def client_error(self) -> bool:
        return self.status is not None and 400 <= self.status < 500 \
            and not self.retryable



def _retry_after(value: Optional[str]) -> Optional[float]:
    if not value:
        return None
    try:
        return max(0.0, float(int(value.strip())))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
        return max(0.0, when.timestamp() - time.time())
    except (TypeError, ValueError):
        return None


def post_message(address: str, message_id: str, body: str,
                 secrets: list[str],
                 pinned: Optional["addresses.Pinned"] = None) -> Outcome:
    """POST one signed message to ``address`` and say what happened.

    ``pinned`` is where ``address`` was vetted to connect (``addresses.pin``);
    without it the address is resolved and vetted here.
    """
    timeout = tk.config.get("ckanext.webhooks.timeout")
    max_bytes = tk.config.get("ckanext.webhooks.max_response_bytes")
    started = time.monotonic()

    def elapsed() -> int:
        return int((time.monotonic() - started) * 1000)

    if pinned is None:
        try:
            pinned = addresses.pin(address)
        except addresses.AddressRefused as e:
            return Outcome(None, "refused: " + str(e), elapsed())

    timestamp = int(time.time())
    headers = {
        "Host": pinned.host_header,
        "Content-Type": "application/json",
        "User-Agent": USER_AGENT,
        "webhook-id": message_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": sign(message_id, timestamp, body, secrets),
    }
    payload = body.encode()
    conns = _connections()
    key = (pinned.scheme, pinned.ip, pinned.port, pinned.hostname)
    conn = conns.pop(key, None)
    if conn is not None and _dropped(conn):
        conn.close()
        conn = None
    for reused in ((True, False) if conn is not None else (False,)):
        if not reused:
            conn = _new_connection(pinned, timeout)
        outcome, keep = _attempt(conn, pinned, payload, headers, timeout,
                                 max_bytes, elapsed, reused)
        if outcome is not None:
            break
        # a kept-alive connection the receiver had just closed: once more
        # on a new one (nothing was answered on the old one)
        conn.close()
    assert outcome is not None
    if keep:
        conns[key] = conn
        while len(conns) > CONNECTIONS_PER_THREAD:
            conns.popitem(last=False)[1].close()
    else:
        conn.close()
    return outcome


def _attempt(conn: http.client.HTTPConnection, pinned: "addresses.Pinned",
             payload: bytes, headers: dict[str, str], timeout: float,
             max_bytes: int, elapsed, reused: bool
             ) -> tuple[Optional[Outcome], bool]:
    """One request on ``conn``: (outcome, keep the connection). The outcome
    is None when a reused connection turned out closed before any answer."""
    watch = _Watch(conn, timeout)
    _watchdog.watch(watch)
    answered = False
    try:
        if conn.sock is not None:
            conn.sock.settimeout(timeout)
        conn.request("POST", pinned.target, body=payload, headers=headers)
        response = conn.getresponse()
        answered = True
        retry_after = _retry_after(response.getheader("Retry-After"))
        received = b""
        try:
            received = response.read(max_bytes)
        except (OSError, http.client.HTTPException):
            if not watch.expired:
                raise
        if watch.expired and len(received) < max_bytes:
            # cut off mid-answer: headers or body came too slowly
            return Outcome(None, "timeout after {}s".format(timeout),
                           elapsed()), False
        keep = response.isclosed() and not response.will_close \
            and not watch.expired
        return Outcome(response.status, None, elapsed(),
                       retry_after=retry_after,
                       response_body=received[:max_bytes]), keep
    except (OSError, http.client.HTTPException) as e:
        if watch.expired or isinstance(e, TimeoutError):
            return Outcome(None, "timeout after {}s".format(timeout),
                           elapsed()), False
        if reused and not answered and isinstance(e, (
                http.client.RemoteDisconnected, ConnectionResetError,
                BrokenPipeError)):
            return None, False
        if isinstance(e, ssl.SSLError):
            return Outcome(None, "TLS error: " + _short(e), elapsed()), False
        if isinstance(e, http.client.HTTPException):
            return Outcome(None, "bad answer: " + _short(e),
                           elapsed()), False
        return Outcome(None, "connection error: " + _short(e), elapsed()), \
            False
    finally:
        _watchdog.unwatch(watch)


def _short(error: Exception) -> str:
    return (str(error) or type(error).__name__)[:300]
