"""Verification of intent: a new hook proves its receiver wants deliveries.

The receiver gets a signed ``webhook/verify`` message whose ``data`` is
``{"challenge": token}`` and must answer 2xx with the token as the body, or a
JSON object whose ``challenge`` is the token. The token is signed with the
site's secret for the hook and the address it is sent to, and expires with
``ckanext.webhooks.pending_ttl``.
"""
from __future__ import annotations

import json

from itsdangerous import BadData, URLSafeTimedSerializer

import ckan.plugins.toolkit as tk

_SALT = "ckanext-webhooks-verify"


def _serializer() -> URLSafeTimedSerializer:
    secret = tk.config.get("SECRET_KEY") or \
        tk.config.get("beaker.session.secret")
    return URLSafeTimedSerializer(secret, salt=_SALT)


def challenge_for(hook_id: str, address: str) -> str:
    """A challenge for the hook at this address: an answer from another
    address (the hook moved while it was in flight) verifies nothing."""
    return _serializer().dumps([hook_id, address])


def answered(challenge: str, hook_id: str, address: str,
             response_body: bytes) -> bool:
    """Whether ``response_body``, answered at ``address``, echoes a still
    valid challenge of the hook made for that address."""
    try:
        signed_for = _serializer().loads(
            challenge, max_age=tk.config.get("ckanext.webhooks.pending_ttl"))
    except BadData:
        return False
    if isinstance(signed_for, str):
        # made before challenges named their address (it expires with
        # pending_ttl): an outcome changes a hook only while the hook has
        # the address its attempt went to (``outcomes``)
        signed_for = [signed_for, address]
    if signed_for != [hook_id, address]:
        return False
    text = response_body.decode("utf-8", "replace").strip()
    if text == challenge:
        return True
    try:
        answer = json.loads(text)
    except ValueError:
        return False
    return isinstance(answer, dict) and answer.get("challenge") == challenge
