"""Headers that keep hooks out of shared caches and the pages out of frames.

A hook's id is the right to manage it, and its answers carry its secret and
its delivery log, so no cache may keep a ``webhook_*`` action's answer or a
page under /webhooks (CKAN marks GET answers ``Cache-Control: public``
otherwise). The pages have buttons (delete, rotate the secret), so no other
site may frame them (clickjacking).
"""
from __future__ import annotations

from flask import Flask, Response, request

# the pages' blueprints: ``webhooks`` and any other named ``webhooks...``
PAGES_BLUEPRINT_PREFIX = "webhooks"
ACTION_ENDPOINT = "api.action"
ACTION_PREFIX = "webhook_"


def install(app: Flask) -> Flask:
    """Add the headers to every answer of ``app`` that needs them."""
    app.before_request(_mark_uncacheable)
    app.after_request(_protect)
    return app


def _is_page() -> bool:
    return (request.blueprint or "").startswith(PAGES_BLUEPRINT_PREFIX)


def _is_webhook_action() -> bool:
    return request.endpoint == ACTION_ENDPOINT and str(
        (request.view_args or {}).get("logic_function", "")
    ).startswith(ACTION_PREFIX)


def _mark_uncacheable() -> None:
    # CKAN's own after_request then says ``private`` instead of ``public``
    if _is_page() or _is_webhook_action():
        request.environ["__no_cache__"] = True


def _protect(response: Response) -> Response:
    if not (_is_page() or _is_webhook_action()):
        return response
    request.environ["__no_cache__"] = True
    response.cache_control.public = False
    response.cache_control.max_age = None
    response.cache_control.no_store = True
    if _is_page():
        response.headers["X-Frame-Options"] = "DENY"
        csp = response.headers.getlist("Content-Security-Policy")
        if not any("frame-ancestors" in policy for policy in csp):
            # a policy of its own: browsers enforce every CSP header
            response.headers.add("Content-Security-Policy",
                                 "frame-ancestors 'none'")
    return response
