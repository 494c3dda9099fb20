"""Verification of intent: a new hook proves its receiver wants deliveries.

The receiver gets a signed ``webhook/verify`` message whose ``data`` is
``{"challenge": token}`` and must answer 2xx with the token as the body, or a
JSON object whose ``challenge`` is the token. The token is signed with the
site's secret and expires with ``ckanext.webhooks.pending_ttl``.
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


def challenge_for(hook_id: str) -> str:
    return _serializer().dumps(hook_id)


def answered(challenge: str, hook_id: str, response_body: bytes) -> bool:
    """Whether ``response_body`` echoes a still valid challenge of the hook."""
    try:
        signed_for = _serializer().loads(
            challenge, max_age=tk.config.get("ckanext.webhooks.pending_ttl"))
    except BadData:
        return False
    if signed_for != hook_id:
        return False
    text = response_body.decode("utf-8", "replace").strip()
    if text == challenge:
        return True
    try:
        answer = json.loads(text)
    except ValueError:
        return False
    return isinstance(answer, dict) and answer.get("challenge") == challenge
