"""One delivery attempt: the signed body, the HTTP POST, its outcome.

Nothing here touches the database; ``jobs`` decides what to send and records
what happened.
"""
from __future__ import annotations

import base64
import hashlib
import heapq
import hmac
import json
import socket
import threading
import time
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from typing import Any, Optional

import requests
import requests.adapters
import urllib3

import ckan.plugins.toolkit as tk

from ckanext.webhooks import __version__, addresses

USER_AGENT = "ckanext-webhooks/" + __version__

_local = threading.local()


class _Watch:
    """One attempt: the vetted IP and name its connection must use, and the
    connection itself, so the watchdog can cut it off."""

    def __init__(self, pinned: "addresses.Pinned"):
        self.pinned = pinned
        self.conn = None
        self.expired = False
        self.done = False

    def cut(self) -> None:
        if self.done:
            return
        self.expired = True
        sock = getattr(self.conn, "sock", None)
        if sock is not None:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


class _Watchdog:
    """One thread that cuts off attempts past their deadline (cheaper than
    a timer thread per attempt)."""

    def __init__(self):
        self._cond = threading.Condition()
        self._heap: list = []
        self._count = 0
        self._thread: Optional[threading.Thread] = None

    def watch(self, seconds: float, watch: "_Watch") -> None:
        with self._cond:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(
                    target=self._run, name="webhooks-watchdog", daemon=True)
                self._thread.start()
            self._count += 1
            heapq.heappush(self._heap,
                           (time.monotonic() + seconds, self._count, watch))
            self._cond.notify()

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._heap:
                    self._cond.wait()
                deadline, _, watch = self._heap[0]
                wait = deadline - time.monotonic()
                if wait > 0:
                    self._cond.wait(wait)
                    continue
                heapq.heappop(self._heap)
            watch.cut()


_watchdog = _Watchdog()


class _PinnedPool:
    """Connects to the attempt's vetted IP, and verifies TLS for its name.

    The URL keeps the receiver's name (so the pool, the Host header and the
    certificate check are about that name); only the socket goes to the IP
    that was vetted for this attempt (urllib3's ``_dns_host``).
    """

    def _get_conn(self, timeout=None):
        conn = super()._get_conn(timeout)
        watch = getattr(_local, "watch", None)
        if watch is not None:
            watch.conn = conn
            conn._dns_host = watch.pinned.ip
            if hasattr(conn, "server_hostname"):  # https
                conn.server_hostname = watch.pinned.hostname
                conn.assert_hostname = watch.pinned.hostname
        return conn


class _PinnedHTTPPool(_PinnedPool, urllib3.HTTPConnectionPool):
    pass


class _PinnedHTTPSPool(_PinnedPool, urllib3.HTTPSConnectionPool):
    pass


class _PinnedAdapter(requests.adapters.HTTPAdapter):
    def init_poolmanager(self, *args, **kwargs):
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = {
            "http": _PinnedHTTPPool, "https": _PinnedHTTPSPool}


def _http_session() -> requests.Session:
    """One pooled session per thread: connections to a receiver are reused."""
    session = getattr(_local, "session", None)
    if session is None:
        session = requests.Session()
        session.trust_env = False  # no proxies or netrc from the environment
        adapter = _PinnedAdapter(pool_connections=32, pool_maxsize=4)
        session.mount("http://", adapter)
        session.mount("https://", adapter)
        _local.session = session
    return session


def message_body(message_id: str, type_: str, timestamp: str, hook_id: str,
                 data: dict[str, Any]) -> str:
    return json.dumps({
        "id": message_id,
        "type": type_,
        "timestamp": timestamp,
        "hook_id": hook_id,
        "site_url": tk.config.get("ckan.site_url"),
        "data": data,
    }, separators=(",", ":"), default=str)


def sign(message_id: str, timestamp: int, body: str,
         secrets: list[str]) -> str:
    """The ``webhook-signature`` header: one ``v1,`` signature per secret."""
    content = f"{message_id}.{timestamp}.{body}".encode()
    signatures = []
    for secret in secrets:
        key = base64.b64decode(secret.removeprefix("whsec_"))
        digest = hmac.new(key, content, hashlib.sha256).digest()
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
                 secrets: list[str]) -> Outcome:
    """POST one signed message to ``address`` and say what happened."""
    timeout = tk.config.get("ckanext.webhooks.timeout")
    max_bytes = tk.config.get("ckanext.webhooks.max_response_bytes")
    started = time.monotonic()

    def elapsed() -> int:
        return int((time.monotonic() - started) * 1000)

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
    # requests' timeouts bound each socket operation; a receiver trickling
    # bytes could stretch one attempt far beyond them. The watch cuts the
    # connection when the whole attempt is over time.
    watch = _Watch(pinned)
    _local.watch = watch
    _watchdog.watch(timeout, watch)
    try:
        with _http_session().post(
                address, data=body.encode(), headers=headers,
                timeout=(timeout, timeout), allow_redirects=False,
                stream=True) as response:
            received = bytearray()
            try:
                for chunk in response.iter_content(4096):
                    received.extend(chunk)
                    if len(received) >= max_bytes or watch.expired:
                        break
            except requests.RequestException:
                if not watch.expired:
                    raise
            if watch.expired and len(received) < max_bytes:
                # cut off mid-answer: headers or body came too slowly
                return Outcome(None, "timeout after {}s".format(timeout),
                               elapsed())
            return Outcome(
                response.status_code, None, elapsed(),
                retry_after=_retry_after(response.headers.get("Retry-After")),
                response_body=bytes(received[:max_bytes]))
    except requests.RequestException as e:
        if watch.expired or isinstance(e, requests.Timeout):
            return Outcome(None, "timeout after {}s".format(timeout),
                           elapsed())
        if isinstance(e, requests.ConnectionError):
            return Outcome(None, "connection error: " + _short(e), elapsed())
        return Outcome(None, "request error: " + _short(e), elapsed())
    finally:
        watch.done = True
        _local.watch = None


def _short(error: Exception) -> str:
    return str(error)[:300]
