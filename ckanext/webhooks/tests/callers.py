"""Who calls the actions in the tests: contexts, and a call as one of them.

``ckan.tests.helpers.call_action`` skips the auth check; these contexts do
not, so a test sees what an API caller would.
"""
from __future__ import annotations

from typing import Any, Optional

from ckan.tests import helpers


def anonymous() -> dict:
    """A context that really is anonymous: no user, auth checked."""
    return {"user": "", "ignore_auth": False}


def as_user(user: dict) -> dict:
    """The context of a logged-in user, auth checked."""
    return {"user": user["name"], "ignore_auth": False}


def call(action: str, context: Optional[dict] = None, **data) -> Any:
    """Call ``action`` with ``context``, anonymously when none is given."""
    return helpers.call_action(action, context=context or anonymous(),
                               **data)
