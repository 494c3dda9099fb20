"""Which callback addresses CKAN may send to.

Anyone can register a hook, so an address must not make CKAN reach into its
own network. Unless ``ckanext.webhooks.allow_private_addresses`` is on, an
address whose host is, or resolves to, a non-public IP is refused, both when a
hook is created and at every delivery attempt.
"""
from __future__ import annotations

import ipaddress
import re
import socket
import string
from typing import NamedTuple
from urllib.parse import quote, urlsplit

import ckan.plugins.toolkit as tk

MAX_ADDRESS_LENGTH = 2000


class AddressRefused(ValueError):
    pass


def syntax_problem(address: str) -> str | None:
    """Why ``address`` is not a usable http(s) URL, or None."""
    if len(address) > MAX_ADDRESS_LENGTH:
        return tk._("Address must be at most {0} characters long").format(
            MAX_ADDRESS_LENGTH)
    if any(ch.isspace() or ord(ch) < 32 for ch in address):
        return tk._("Address must not contain spaces or control characters")
    try:
        parts = urlsplit(address)
        port = parts.port
    except ValueError:
        return tk._("Address is not a valid URL")
    if parts.scheme.lower() not in ("http", "https"):
        return tk._("Address must start with http:// or https://")
    if not parts.hostname:
        return tk._("Address must name a host")
    if parts.username is not None or parts.password is not None:
        return tk._("Address must not contain a user name or password")
    if port == 0:
        return tk._("Address is not a valid URL")
    return None


def _is_public(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    if isinstance(ip, ipaddress.IPv6Address):
        mapped = ip.ipv4_mapped or ip.sixtofour
        if mapped is not None:
            return _is_public(mapped)
    return ip.is_global and not ip.is_multicast and not ip.is_reserved


def _resolve(host: str, port: int) -> list[str]:
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return [str(info[4][0]) for info in infos]


def refusal(address: str, unresolvable_ok: bool) -> str | None:
    """Why CKAN must not send to ``address``, or None when it may."""
    if tk.config.get("ckanext.webhooks.allow_private_addresses"):
        return None
    parts = urlsplit(address)
    host = (parts.hostname or "").rstrip(".")
    port = parts.port or (443 if parts.scheme.lower() == "https" else 80)
    if host.lower() == "localhost" or host.lower().endswith(".localhost"):
        return _PRIVATE()
    try:
        ips = _resolve(host, port)
    except (socket.gaierror, UnicodeError, OSError):
        if unresolvable_ok:
            return None
        return tk._("Address host could not be resolved")
    for raw in ips:
        ip = ipaddress.ip_address(raw.split("%", 1)[0])
        if not _is_public(ip):
            return _PRIVATE()
    return None


_DEFAULT_PORTS = {"http": 80, "https": 443}
# what pin() leaves unquoted in the request target
_TARGET_SAFE = "!#$%&'()*+,/:;=?@[]~"
_UNRESERVED = frozenset(string.ascii_letters + string.digits + "-._~")
_ESCAPE = re.compile(r"%([0-9A-Fa-f]{2})")
# the characters a numeric IPv4 host may be spelled with (0x7f, 0177, 127.1)
_IPV4_SPELLING = re.compile(r"[0-9a-fx.]+")


def normalized(address: str) -> str:
    """The one spelling of ``address`` that the per-address cap counts.

    Spellings that reach the same receiver count as one address: scheme and
    host case-folded, a trailing dot of the host and a default port dropped,
    IP literals in their canonical form (``127.000.000.001``, ``2130706433``
    and ``::ffff:127.0.0.1`` are ``127.0.0.1``), international names in
    their IDNA form, percent escapes of unreserved characters decoded,
    ``.`` and ``..`` segments resolved, repeated and trailing slashes dropped,
    query and fragment ignored. The path's case is kept. ``address`` itself
    is stored and used as given; an address that is not a URL is its own
    normal form.
    """
    try:
        parts = urlsplit(address.strip())
        port = parts.port
    except ValueError:
        return address
    if not parts.scheme or not parts.hostname:
        return address
    scheme = parts.scheme.lower()
    host = _canonical_host(parts.hostname or "")
    netloc = "[{}]".format(host) if ":" in host else host
    if port is not None and port != _DEFAULT_PORTS.get(scheme):
        netloc += ":{}".format(port)
    return "{}://{}{}".format(scheme, netloc, _canonical_path(parts.path))


def _canonical_host(host: str) -> str:
    host = host.rstrip(".")
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        ip = None
    if ip is None and _IPV4_SPELLING.fullmatch(host):
        try:  # the same reading of numeric hosts as the resolver's
            ip = ipaddress.IPv4Address(socket.inet_aton(host))
        except OSError:
            ip = None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped:
        ip = ip.ipv4_mapped
    if ip is not None:
        return str(ip)
    try:
        host.encode("ascii")
    except UnicodeEncodeError:
        try:
            return host.encode("idna").decode("ascii").lower()
        except UnicodeError:
            return host
    return host


def _canonical_path(path: str) -> str:
    path = quote(path, safe=_TARGET_SAFE)
    path = _ESCAPE.sub(
        lambda m: chr(int(m.group(1), 16))
        if chr(int(m.group(1), 16)) in _UNRESERVED
        else "%" + m.group(1).upper(), path)
    path = re.sub("/{2,}", "/", path)
    return _without_dot_segments(path).rstrip("/")


def _without_dot_segments(path: str) -> str:
    """RFC 3986, section 5.2.4, on a path that starts with "/" (or is
    empty)."""
    out: list[str] = []
    segments = path.split("/")[1:]
    for segment in segments:
        if segment == "..":
            if out:
                out.pop()
        elif segment != ".":
            out.append(segment)
    if segments and segments[-1] in (".", ".."):
        out.append("")
    return "".join("/" + segment for segment in out)


class Pinned(NamedTuple):
    """Where one attempt really connects: a vetted IP, and the original
    name."""
    ip: str            # the vetted IP the connection goes to
    host_header: str   # what the receiver sees as Host
    hostname: str      # the name TLS verifies the certificate against
    scheme: str = "http"
    port: int = 80
    target: str = "/"  # path and query, as sent in the request line


def _vet(hostname: str, port: int) -> list[str] | str:
    """The IPs ``hostname`` resolves to, or why none may be used."""
    try:
        ips = _resolve(hostname, port)
    except (socket.gaierror, UnicodeError, OSError):
        return "host could not be resolved"
    if not tk.config.get("ckanext.webhooks.allow_private_addresses"):
        for raw in ips:
            if not _is_public(ipaddress.ip_address(raw.split("%", 1)[0])):
                return _PRIVATE_EN
    return ips


def pin(address: str) -> Pinned:
    """Resolve ``address`` once and vet the IP it will connect to.

    The attempt then connects to exactly that IP, so a name that resolves to
    a public IP at the check and a private one a moment later (DNS
    rebinding) cannot slip through. Raises AddressRefused.
    """
    # runs in sender threads without a Flask app: messages stay untranslated
    try:
        parts = urlsplit(address)
        port = parts.port
    except ValueError:
        raise AddressRefused("not a valid URL") from None
    scheme = parts.scheme.lower()
    hostname = parts.hostname or ""
    if scheme not in ("http", "https") or not hostname:
        raise AddressRefused("not an http(s) URL with a host")
    port = port or (443 if scheme == "https" else 80)
    if not tk.config.get("ckanext.webhooks.allow_private_addresses") and (
            hostname.rstrip(".").lower() == "localhost"
            or hostname.rstrip(".").lower().endswith(".localhost")):
        raise AddressRefused(_PRIVATE_EN)
    verdict = _vet(hostname, port)
    if isinstance(verdict, str):
        raise AddressRefused(verdict)
    ips = verdict
    ip = ips[0].split("%", 1)[0]
    try:  # the wire carries ASCII: an international name in its IDNA form
        hostname.encode("ascii")
    except UnicodeEncodeError:
        try:
            hostname = hostname.encode("idna").decode("ascii")
        except UnicodeError:
            raise AddressRefused("host could not be resolved") from None
    default_port = (scheme == "https" and port == 443) or (
        scheme == "http" and port == 80)
    host_header = hostname if default_port else "{}:{}".format(
        "[{}]".format(hostname) if ":" in hostname else hostname, port)
    target = quote((parts.path or "/")
                   + ("?" + parts.query if parts.query else ""),
                   safe="!#$%&'()*+,/:;=?@[]~")
    return Pinned(ip, host_header, hostname, scheme, port, target)


_PRIVATE_EN = "private or local network address"


def _PRIVATE() -> str:
    return tk._("Address must not point to a private or local network")
