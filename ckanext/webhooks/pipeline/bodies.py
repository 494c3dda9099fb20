"""What goes on the wire: the JSON body and its Standard Webhooks signature."""
from __future__ import annotations

import base64
import functools
import hmac
import json
from typing import Any, Optional

import ckan.plugins.toolkit as tk


def to_json(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), default=str)


def compose_body(message_id: str, type_: str, timestamp: str, hook_id: str,
                 data_json: str, test: bool = False,
                 changes_json: Optional[str] = None) -> str:
    """The body around ``data`` already in JSON (``to_json``): one event's
    data is serialised once for all its messages. The same text as
    ``to_json`` of the whole body would give."""
    return '{"id":%s,"type":%s,"timestamp":%s,"hook_id":%s,"site_url":%s,' \
        '%s"data":%s%s}' % (
            to_json(message_id), to_json(type_), to_json(timestamp),
            to_json(hook_id), _site_url_json(), '"test":true,' if test else "",
            data_json,
            ',"changes":' + changes_json if changes_json is not None else "")


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
