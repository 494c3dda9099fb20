"""Limits on creating hooks, so anonymous creation cannot be turned into a
flood: a rate per client address (counted in Redis) and a cap on hooks per
callback address (counted in PostgreSQL)."""
from __future__ import annotations

import logging
import time
from typing import Optional

import redis

import ckan.model as model
import ckan.plugins.toolkit as tk
from ckan.lib.redis import connect_to_redis

from ckanext.webhooks.model import Hook

log = logging.getLogger(__name__)


def client_address() -> Optional[str]:
    """The caller's IP as the WSGI server saw it (configure ProxyFix behind
    a proxy), or None outside a web request."""
    try:
        return tk.request.remote_addr or None
    except RuntimeError:  # no request context: CLI, jobs, tests
        return None


def check_anonymous_rate(ip: Optional[str]) -> None:
    """Count one anonymous creation from ``ip``; refuse past the limit."""
    limit = tk.config.get("ckanext.webhooks.anonymous_create_limit")
    window = tk.config.get("ckanext.webhooks.anonymous_create_window")
    if not ip or limit <= 0:
        return
    slot = int(time.time() // window)
    key = "ckanext-webhooks:{}:creations:{}:{}".format(
        tk.config.get("ckan.site_id"), ip, slot)
    try:
        conn = connect_to_redis()
        pipe = conn.pipeline()
        pipe.incr(key)
        pipe.expire(key, window + 60)
        count = pipe.execute()[0]
    except redis.exceptions.RedisError as e:
        # availability over strictness: creation still needs a valid address
        log.warning("webhooks: rate limit not checked, Redis failed: %s", e)
        return
    if count > limit:
        minutes = max(1, int((slot + 1) * window - time.time()) // 60)
        raise tk.ValidationError({"rate_limit": [tk._(
            "Too many webhooks created from your address; try again in "
            "{0} minutes, or log in").format(minutes)]})


def check_address_cap(address: str) -> None:
    """Refuse a new hook when ``address`` already has the maximum."""
    cap = tk.config.get("ckanext.webhooks.max_hooks_per_address")
    if cap <= 0:
        return
    count = model.Session.query(Hook.id).filter(
        Hook.address == address).limit(cap).count()
    if count >= cap:
        raise tk.ValidationError({"address": [tk._(
            "This address already receives the maximum number of webhooks "
            "({0})").format(cap)]})
