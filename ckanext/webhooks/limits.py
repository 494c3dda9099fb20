"""Limits on creating hooks, so creation cannot be turned into a flood: a
sliding-window rate per client (counted in Redis) and a cap on hooks per
callback address (counted in PostgreSQL).

The rate counts anonymous callers per client network (an IPv4 address, an
IPv6 /64: one subscriber usually gets a whole /64) and logged-in users per
account, with a higher limit of their own. Sysadmins and calls outside a web
request (the CLI, other plugins, ckanapi's LocalCKAN) are not counted.
"""
from __future__ import annotations

import ipaddress
import logging
import math
import time
import uuid
from typing import Any, Optional

import redis
import sqlalchemy as sa

import ckan.model as model
import ckan.plugins.toolkit as tk
from ckan.lib.redis import connect_to_redis

from ckanext.webhooks.addresses import normalized
from ckanext.webhooks.model import Hook

log = logging.getLogger(__name__)

# clients share a limit with the rest of their network of this size
IPV6_CLIENT_PREFIX = 64
# the first key of the cap's advisory locks ("whcp"), apart from other locks
_CAP_LOCK_SPACE = 0x77686370

# One sliding window per client, kept as a sorted set of the creation times
# inside it. Checking and counting are one atomic step, so concurrent
# requests cannot all squeeze in under the limit. Returns {1} when the
# creation is counted, {0, oldest time} when the window is full.
_SLIDING_WINDOW = """
local key = KEYS[1]
local now = tonumber(ARGV[1])
local window = tonumber(ARGV[2])
local limit = tonumber(ARGV[3])
redis.call('ZREMRANGEBYSCORE', key, '-inf', now - window)
if redis.call('ZCARD', key) >= limit then
    local oldest = redis.call('ZRANGE', key, 0, 0, 'WITHSCORES')
    return {0, oldest[2]}
end
redis.call('ZADD', key, now, ARGV[4])
redis.call('EXPIRE', key, math.ceil(window) + 1)
return {1}
"""


def client_address() -> Optional[str]:
    """The caller's IP as the WSGI server saw it (configure ProxyFix behind
    a proxy), or None outside a web request."""
    try:
        return tk.request.remote_addr or None
    except RuntimeError:  # no request context: CLI, jobs, tests
        return None


def client_network(ip: str) -> str:
    """What an anonymous caller is counted as: its IPv4 address, or the
    IPv6 /64 it is in (an IPv4-mapped IPv6 address is its IPv4 address)."""
    try:
        parsed = ipaddress.ip_address(ip.split("%", 1)[0])
    except ValueError:
        return ip
    if isinstance(parsed, ipaddress.IPv6Address):
        if parsed.ipv4_mapped is not None:
            return str(parsed.ipv4_mapped)
        return str(ipaddress.ip_network(
            "{}/{}".format(parsed, IPV6_CLIENT_PREFIX), strict=False))
    return str(parsed)


def check_creation_rate(user: Optional[model.User],
                        now: Optional[float] = None) -> None:
    """Count one creation by ``user`` (None: an anonymous caller, counted
    by client network); refuse it past the limit of the last window.

    ``now`` (Unix seconds) is for tests that drive the clock.
    """
    ip = client_address()
    # no web request: trusted code in CKAN's own process
    if not ip or (user is not None and user.sysadmin):
        return
    if user is None:
        client = "ip:" + client_network(ip)
        limit = tk.config.get("ckanext.webhooks.anonymous_create_limit")
        window = tk.config.get("ckanext.webhooks.anonymous_create_window")
        message = tk._("Too many webhooks created from your address; try "
                       "again in {0} minutes, or log in")
    else:
        client = "user:" + user.id
        limit = tk.config.get("ckanext.webhooks.user_create_limit")
        window = tk.config.get("ckanext.webhooks.user_create_window")
        message = tk._("Too many webhooks created by your account; try "
                       "again in {0} minutes")
    wait = seconds_until_allowed(client, limit, window, now)
    if wait is not None:
        raise tk.ValidationError({"rate_limit": [message.format(
            max(1, math.ceil(wait / 60)))]})


def seconds_until_allowed(client: str, limit: int, window: int,
                          now: Optional[float] = None) -> Optional[float]:
    """Count one creation by ``client`` in a sliding window of ``window``
    seconds: None when it is allowed (and counted), else the seconds until
    the oldest counted creation leaves the window. A ``limit`` of 0 or less
    allows everything.

    If Redis fails the creation is allowed (and a warning logged): a hook
    still needs a valid address and, with verify_intent on, a receiver that
    answers its challenge.
    """
    if limit <= 0 or window <= 0:
        return None
    now = time.time() if now is None else now
    key = "ckanext-webhooks:{}:creations:{}".format(
        tk.config.get("ckan.site_id"), client)
    try:
        # a list (redis-py types eval's answer as a string); the numbers go
        # over the wire as text either way
        counted: Any = connect_to_redis().eval(
            _SLIDING_WINDOW, 1, key, repr(now), str(window), str(limit),
            "{!r}:{}".format(now, uuid.uuid4().hex))
    except redis.exceptions.RedisError as e:
        log.warning("webhooks: creation rate not checked, Redis failed: %s",
                    e)
        return None
    if counted[0] == 1:
        return None
    return max(0.0, float(counted[1]) + window - now)


def check_address_cap(address: str, hook_id: Optional[str] = None) -> None:
    """Refuse a hook at ``address`` when as many hooks as the cap allows
    already have that address (any spelling of it, see
    ``addresses.normalized``). ``hook_id``: a hook moving to ``address``,
    not counted itself.

    Concurrent creations for one address wait for each other (a lock held
    until the transaction ends), so the cap holds under a burst too.
    """
    cap = tk.config.get("ckanext.webhooks.max_hooks_per_address")
    if cap <= 0:
        return
    key = normalized(address)
    model.Session.execute(
        sa.text("SELECT pg_advisory_xact_lock(:space, hashtext(:key))"),
        {"space": _CAP_LOCK_SPACE, "key": key})
    query = model.Session.query(Hook.id).filter(
        Hook.normalized_address == key)
    if hook_id:
        query = query.filter(Hook.id != hook_id)
    if query.limit(cap).count() >= cap:
        raise tk.ValidationError({"address": [tk._(
            "This address already receives the maximum number of webhooks "
            "({0})").format(cap)]})
