"""Which callback addresses CKAN may send to.

Anyone can register a hook, so an address must not make CKAN reach into its
own network. Unless ``ckanext.webhooks.allow_private_addresses`` is on, an
address whose host is, or resolves to, a non-public IP is refused, both when a
hook is created and at every delivery attempt.
"""
from __future__ import annotations

import ipaddress
import socket
from urllib.parse import urlsplit

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
    return [info[4][0] for info in infos]


def refusal(address: str, unresolvable_ok: bool) -> str | None:
    """Why CKAN must not send to ``address``, or None when it may."""
    if tk.config.get("ckanext.webhooks.allow_private_addresses"):
        return None
    parts = urlsplit(address)
    host = (parts.hostname or "").rstrip(".")
    port = parts.port or (443 if parts.scheme.lower() == "https" else 80)
    if host.lower() == "localhost" or host.lower().endswith(".localhost"):
        return tk._("Address must not point to a private or local network")
    try:
        ips = _resolve(host, port)
    except (socket.gaierror, UnicodeError, OSError):
        if unresolvable_ok:
            return None
        return tk._("Address host could not be resolved")
    for raw in ips:
        ip = ipaddress.ip_address(raw.split("%", 1)[0])
        if not _is_public(ip):
            return tk._(
                "Address must not point to a private or local network")
    return None


def check_delivery_address(address: str) -> None:
    """Raise AddressRefused when a delivery to ``address`` must not happen."""
    problem = syntax_problem(address) or refusal(address, False)
    if problem:
        raise AddressRefused(problem)
