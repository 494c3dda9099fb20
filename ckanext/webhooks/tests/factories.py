"""Hooks for the tests, beside CKAN's own factories (``ckan.tests.factories``).

    hook = HookFactory()  # anonymous, dataset/create, at ADDRESS
    hook = HookFactory(receiver=receiver, path="/in")  # to the receiver
    hook = HookFactory(user=user, topics=["dataset/*", "resource/*"])
    hook["id"], hook["secret"]

Like CKAN's factories, ``HookFactory`` is for a test's setup: a test of
``webhook_create`` itself calls the action.
"""
from __future__ import annotations

from typing import Any, Union

import factory

import ckan.model as model
from ckan.tests import helpers
from ckan.tests.factories import CKANFactory

from ckanext.webhooks.model import Hook

# an address that answers nothing: for hooks whose deliveries a test never
# runs (or expects to fail)
ADDRESS = "http://example.com/callback"


def _owner(user: Union[dict, str, None]) -> str:
    if user is None:
        return ""
    return user if isinstance(user, str) else user["name"]


class HookFactory(CKANFactory):
    """A hook made with ``webhook_create``, as ``webhook_show`` shows it.

    Defaults: the topic ``dataset/create`` (unless ``topics`` are given); the
    address ``receiver.url(path)`` when a ``receiver`` is given, else
    ``ADDRESS``; owned by ``user`` (a user dict or name), anonymous when no
    user is given. The action skips its auth check, as with every CKAN
    factory, unless a ``context`` is given: then it is the action's context.
    Any other keyword is passed to the action (filters, ``description``).
    """

    class Meta:
        model = Hook
        action = "webhook_create"

    class Params:
        receiver = None
        path = "/hook"
        user = None

    topic = factory.Maybe("topics", yes_declaration=None,
                          no_declaration="dataset/create")
    topics = None
    address = factory.LazyAttribute(
        lambda o: o.receiver.url(o.path) if o.receiver else ADDRESS)
    context = factory.LazyAttribute(lambda o: {"user": _owner(o.user)})

    @classmethod
    def _api_prepare_args(cls, data_dict: dict[str, Any]) -> dict[str, Any]:
        # the action takes ``topic`` or ``topics``, not both
        return {key: value for key, value in data_dict.items()
                if not (key in ("topic", "topics") and value is None)}

    @classmethod
    def _api_postprocess_result(cls, result: str) -> dict[str, Any]:
        return helpers.call_action("webhook_show", id=result)


def hook_count() -> int:
    """How many hooks are stored, as a new session sees it."""
    model.Session.remove()
    return model.Session.query(Hook).count()


def hook_ids() -> set[str]:
    """The ids of the stored hooks, as a new session sees them."""
    model.Session.remove()
    return {row.id for row in model.Session.query(Hook.id)}

