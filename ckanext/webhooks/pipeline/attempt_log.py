"""What the attempt log keeps of an attempt's request and answer.

- The request headers as sent: those of Standard Webhooks and HTTP itself
  (``webhook-signature`` included: it proves nothing without the secret,
  and debugging a signature needs it). The secret is never sent, so it is
  never here; any other header a hook may carry is kept by name only.
- The answer's status line and headers, bounded to ``LOGGED_HEAD``
  characters, for active hooks only (as the body: what an address that did
  not agree to the deliveries answers is not kept).

Decoding and bounding happen when outcomes are recorded, not while the
attempt is in flight.
"""
from __future__ import annotations

import json
from typing import Any, Optional

from ckanext.webhooks.pipeline.sending import Outcome

# the status line and the header lines kept of an answer, in characters
LOGGED_HEAD = 8192
# request headers whose values are kept (lower case)
SHOWN_REQUEST_HEADERS = frozenset((
    "host", "content-type", "content-length", "user-agent", "accept",
    "webhook-id", "webhook-timestamp", "webhook-signature"))
HIDDEN_VALUE = "(not shown)"


def _text(value: Any) -> str:
    if isinstance(value, bytes):
        value = value.decode("utf-8", errors="replace")
    return str(value).replace("\x00", "\ufffd")


def request_headers(outcome: Outcome) -> Optional[str]:
    """The request headers of an attempt as JSON text (None when nothing
    was sent: the address was refused)."""
    if outcome.request_headers is None:
        return None
    return json.dumps({
        name: value if name.lower() in SHOWN_REQUEST_HEADERS
        else HIDDEN_VALUE
        for name, value in outcome.request_headers.items()})


def response_head(outcome: Outcome, hook_active: bool) -> Optional[str]:
    """The answer's status line and headers as JSON text, at most
    LOGGED_HEAD characters of them; None without an answer or for a hook
    that is not active."""
    if not hook_active or outcome.status_line is None:
        return None
    status_line = _text(outcome.status_line)[:LOGGED_HEAD]
    left = LOGGED_HEAD - len(status_line) - 2
    headers: list[list[str]] = []
    truncated = False
    for name, value in outcome.raw_headers:
        name, value = _text(name), _text(value)
        size = len(name) + len(value) + 4  # ": " and CRLF
        if size > left:
            truncated = True
            break
        left -= size
        headers.append([name, value])
    return json.dumps({"status_line": status_line, "headers": headers,
                       "truncated": truncated})
