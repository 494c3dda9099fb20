"""Validators of the extension's config options that CKAN has none for.

``plugin.check_config`` runs them at start-up, beside the core validators
that config_declaration.yaml names. They are not named in the declaration:
CKAN 2.12 validates the declaration before it knows plugins' validators.
(The schemas of the actions are marshmallow schemas: schema.py.)
"""
from __future__ import annotations

from typing import Any

import ckan.plugins.toolkit as tk

# the longest schedule: a message is attempted at most this often
MAX_RETRIES = 50


def webhooks_retry_schedule(value: Any, context: Any) -> list[int]:
    """Space-separated delays in seconds: whole numbers, none negative, at
    most MAX_RETRIES of them (an empty schedule means no retries)."""
    items = value.split() if isinstance(value, str) else list(value or [])
    delays = []
    for item in items:
        try:
            delay = int(str(item))
        except ValueError:
            raise tk.Invalid(
                "Must be delays in seconds, separated by spaces; "
                "{0!r} is not a whole number".format(item)) from None
        if delay < 0:
            raise tk.Invalid("A delay cannot be negative: {0}".format(delay))
        delays.append(delay)
    if len(delays) > MAX_RETRIES:
        raise tk.Invalid(
            "At most {0} retries".format(MAX_RETRIES))
    return delays
