"""The HTTP transport: one signed POST per attempt, on aiohttp.

aiohttp does the HTTP (keep-alive, chunked and unsized answers, interim 1xx
answers, limits on header lines and counts). Two things no library does are
kept here:

- **The pin.** Every attempt resolves and vets the address first
  (``addresses.pin``; a name in a thread pool of its own so a slow DNS server
  delays only its own hooks, an IP literal at once), then connects to
  exactly the vetted IP: aiohttp asks ``_VettedResolver``, which answers
  with that IP and never with DNS. The URL keeps the host name, so TLS
  verifies the certificate for the name, and a name that resolves to a
  public IP at the check and a private one a moment later (DNS rebinding)
  cannot slip through.
- **One deadline around the whole attempt**: vetting, connecting, sending,
  headers trickled byte by byte and the body all end at ``timeout``.

Nothing here touches the database.
"""
from __future__ import annotations

import asyncio
import errno
import functools
import ipaddress
import socket
import ssl
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from typing import Any, Optional
from urllib.parse import urlsplit

import aiohttp
from aiohttp.abc import AbstractResolver
from yarl import URL as _URL

from ckanext.webhooks import __version__, addresses
from ckanext.webhooks.pipeline import bodies

USER_AGENT = "ckanext-webhooks/" + __version__

_tls: Optional[ssl.SSLContext] = None


def tls_context() -> ssl.SSLContext:
    """Certificates are verified against certifi's CA bundle, for the
    receiver's name, as a browser would."""
    global _tls
    if _tls is None:
        import certifi
        _tls = ssl.create_default_context(cafile=certifi.where())
    return _tls


@dataclass
class Outcome:
    status: Optional[int]
    error: Optional[str]
    duration_ms: int
    retry_after: Optional[float] = None
    response_body: bytes = b""
    # for the attempt log: the headers as sent (None: nothing was sent),
    # the answer's status line and its header lines as received (decoded
    # and bounded when recorded, not here)
    request_headers: Optional[dict[str, str]] = None
    status_line: Optional[str] = None
    raw_headers: tuple = ()

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


def retry_after_seconds(value: Optional[str]) -> Optional[float]:
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


def host_key(address: str) -> tuple[str, str, int]:
    """The receiver an address belongs to: scheme, host and port."""
    from urllib.parse import urlsplit
    try:
        parts = urlsplit(address)
        scheme = parts.scheme.lower()
        port = parts.port or (443 if scheme == "https" else 80)
        return scheme, (parts.hostname or "").lower(), port
    except ValueError:
        return "", address, 0


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
        return True
    except ValueError:
        return False


@functools.lru_cache(maxsize=4096)
def _names_an_ip(address: str) -> bool:
    """Whether the address's host is an IP literal: vetting it resolves
    nothing (no DNS server to wait for), so it needs no thread."""
    try:
        host = urlsplit(address).hostname or ""
    except ValueError:
        return False
    return "%" not in host and _is_ip(host)


# one deadline around the whole attempt, in the attempt's own task
# (``asyncio.timeout``, Python 3.11+) rather than in a task of its own
_deadline = getattr(asyncio, "timeout", None)


class _VettedResolver(AbstractResolver):
    """Answers aiohttp with the IP an attempt vetted a moment ago, never
    with DNS. Every IP it holds passed the vetting."""

    def __init__(self) -> None:
        self.ips: dict[str, str] = {}

    async def resolve(self, host: str, port: int = 0,
                      family: socket.AddressFamily = socket.AF_INET
                      ) -> list[Any]:
        ip = self.ips.get(host.lower())
        if ip is None:
            raise OSError("the address was not vetted")
        return [{"hostname": host, "host": ip, "port": port,
                 "family": socket.AF_INET6 if ":" in ip else socket.AF_INET,
                 "proto": 0, "flags": socket.AI_NUMERICHOST}]

    async def close(self) -> None:
        pass


def _short(error: BaseException) -> str:
    return (str(error) or type(error).__name__)[:300]


def _describe(error: BaseException) -> str:
    """What went wrong, in words of our own: never bytes the receiver sent
    (a banner of another protocol, for instance)."""
    if isinstance(error, (aiohttp.ClientConnectorCertificateError,
                          aiohttp.ClientSSLError, ssl.SSLError)):
        return "TLS error: " + _short(getattr(error, "certificate_error",
                                              None) or error)
    if isinstance(error, aiohttp.ClientConnectorError):
        os_error = error.os_error
        return "connection error: " + (
            os_error.strerror or _short(os_error)
            if isinstance(os_error, OSError) else _short(os_error))
    if isinstance(error, aiohttp.ServerDisconnectedError):
        return "connection error: the receiver closed the connection"
    if isinstance(error, aiohttp.ClientResponseError):
        cause = str(getattr(error.__cause__, "message", "") or "").lower()
        # aiohttp's words for a first line that is not an HTTP status line
        if "status line" in cause or "expected http/" in cause:
            return "not an HTTP answer"
        if "too many headers" in cause.lower():
            return "bad answer: too many headers"
        return "bad answer: the response could not be read"
    if isinstance(error, aiohttp.ClientPayloadError):
        return "bad answer: the body could not be read"
    if isinstance(error, OSError):
        return "connection error: " + (error.strerror or _short(error))
    return "connection error: " + type(error).__name__


def _closed_under_us(error: BaseException) -> bool:
    """Whether an attempt failed because the receiver had closed the
    connection it went out on (not because no connection could be made)."""
    if isinstance(error, aiohttp.ServerDisconnectedError):
        return True
    return not isinstance(error, aiohttp.ClientConnectorError) and \
        getattr(error, "errno", None) in (errno.ECONNRESET, errno.EPIPE)


def _status_line(response: aiohttp.ClientResponse) -> str:
    version = response.version
    return "HTTP/{} {} {}".format(
        "{0.major}.{0.minor}".format(version) if version else "1.1",
        response.status, response.reason or "").rstrip()


class Transport:
    """Sends attempts; one per event loop. Connections are kept alive per
    receiver and reused by later attempts."""

    def __init__(self, timeout: float, max_response_bytes: int,
                 dns_threads: int = 8):
        self.timeout = float(timeout)
        self.max_response_bytes = int(max_response_bytes)
        self._resolver = _VettedResolver()
        self._dns = ThreadPoolExecutor(dns_threads,
                                       thread_name_prefix="webhooks-dns")
        self._session: Optional[aiohttp.ClientSession] = None
        self._literals: dict[str, tuple[addresses.Pinned, str]] = {}
        # the headers of attempts in flight, by message id, for an attempt
        # that ends without an answer (timed out, connection lost)
        self._sending: dict[str, dict[str, str]] = {}

    def open(self) -> aiohttp.ClientSession:
        """The session (made on first use, inside the running loop)."""
        if self._session is None:
            connector = aiohttp.TCPConnector(
                resolver=self._resolver, use_dns_cache=False, limit=0,
                limit_per_host=0, ssl=tls_context(), keepalive_timeout=15)
            self._session = aiohttp.ClientSession(
                connector=connector, trust_env=False,
                cookie_jar=aiohttp.DummyCookieJar(),
                timeout=aiohttp.ClientTimeout(total=None),
                skip_auto_headers=("Accept-Encoding",),
                auto_decompress=False)
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
        self._dns.shutdown(wait=False)

    async def post(self, address: str, message_id: str, body: str,
                   secrets: list[str], deadline: bool = True) -> Outcome:
        """POST one signed message and say what happened; never raises
        (but for cancellation).

        ``deadline=False``: no deadline of its own; the caller cancels the
        attempt when its time is up (the engine watches all its attempts
        with one timer instead of one each)."""
        started = time.monotonic()

        def elapsed() -> int:
            return int((time.monotonic() - started) * 1000)

        try:
            if not deadline:
                return await self._post(address, message_id, body, secrets,
                                        elapsed)
            if _deadline is None:  # Python 3.10
                return await asyncio.wait_for(
                    self._post(address, message_id, body, secrets, elapsed),
                    self.timeout)
            async with _deadline(self.timeout):
                return await self._post(address, message_id, body, secrets,
                                        elapsed)
        except asyncio.TimeoutError:
            return self.timed_out(elapsed(), message_id)
        except asyncio.CancelledError:
            # the headers stay for timed_out(), which the canceller calls
            raise
        except Exception as e:
            return Outcome(None, _describe(e), elapsed(),
                           request_headers=self._sending.pop(message_id,
                                                             None))

    def timed_out(self, duration_ms: int,
                  message_id: Optional[str] = None) -> Outcome:
        return Outcome(None, "timeout after {:g}s".format(self.timeout),
                       duration_ms, request_headers=self._sending.pop(
                           message_id, None) if message_id else None)

    def _target(self, address: str) -> tuple[addresses.Pinned, str]:
        """The vetted address and the URL aiohttp is given (raises
        AddressRefused). A name is resolved and vetted again for every
        attempt (in a thread: see ``_post``); an IP literal's verdict
        cannot change while the worker runs, so it is kept."""
        kept = self._literals.get(address)
        if kept is not None:
            return kept
        pinned = addresses.pin(address)
        host = "[{}]".format(pinned.hostname) if ":" in pinned.hostname \
            else pinned.hostname
        target = (pinned, "{}://{}:{}{}".format(
            pinned.scheme, host, pinned.port, pinned.target))
        if _names_an_ip(address):
            if len(self._literals) >= 10000:
                self._literals.clear()
            self._literals[address] = target
        return target

    async def _post(self, address: str, message_id: str, body: str,
                    secrets: list[str], elapsed) -> Outcome:
        try:
            if _names_an_ip(address):
                pinned, url = self._target(address)
            else:
                pinned, url = await asyncio.get_running_loop(
                ).run_in_executor(self._dns, self._target, address)
                self._resolver.ips[pinned.hostname.lower()] = pinned.ip
        except addresses.AddressRefused as e:
            return Outcome(None, "refused: " + str(e), elapsed())
        timestamp = int(time.time())
        headers = {
            "Host": pinned.host_header,
            "Content-Type": "application/json",
            "User-Agent": USER_AGENT,
            "webhook-id": message_id,
            "webhook-timestamp": str(timestamp),
            "webhook-signature": bodies.sign(message_id, timestamp, body,
                                             secrets),
        }
        payload = body.encode()
        session = self.open()
        if len(self._sending) >= 10000:  # cancelled and never asked for
            self._sending.clear()
        self._sending[message_id] = headers
        for last_try in (False, True):
            try:
                outcome = await self._exchange(session, url, payload,
                                               headers, elapsed)
                self._sending.pop(message_id, None)
                return outcome
            except (aiohttp.ServerDisconnectedError,
                    aiohttp.ClientOSError) as e:
                # a kept-alive connection the receiver had just closed
                # (seen as a disconnect, or as a reset or broken pipe when
                # the request went out first): once more, on a new one
                if last_try or not _closed_under_us(e):
                    raise
        raise AssertionError("unreachable")

    async def _exchange(self, session: aiohttp.ClientSession, url: str,
                        payload: bytes, headers: dict[str, str],
                        elapsed) -> Outcome:
        async with session.post(_URL(url, encoded=True), data=payload,
                                headers=headers,
                                allow_redirects=False) as response:
            retry_after = retry_after_seconds(
                response.headers.get("Retry-After"))
            received = bytearray()
            limit = self.max_response_bytes
            while len(received) < limit:
                chunk = await response.content.read(limit - len(received))
                if not chunk:
                    break
                received += chunk
            if len(received) >= limit:
                response.close()  # the rest is not read: not reusable
            return Outcome(response.status, None, elapsed(),
                           retry_after=retry_after,
                           response_body=bytes(received[:limit]),
                           # as aiohttp sent them (with its own Accept and
                           # Content-Length)
                           request_headers=dict(
                               response.request_info.headers),
                           status_line=_status_line(response),
                           raw_headers=response.raw_headers)
