"""Examples: ``data`` for test deliveries, and whole bodies for the event
catalogue.

Test deliveries (``webhook_ping`` with a topic) carry a real public
dataset, resource, organization or group of the portal, as the hook's owner
sees it (the one its filters name when it is public), or a made-up one when
the portal has none yet. Deletions carry the minimal record a real deletion
does.

The catalogue's examples (``event_examples.json``) are real deliveries of
every type, written by ``tests/test_event_catalogue.py`` together with the
examples of docs/events.rst.
"""
from __future__ import annotations

import functools
import json
import pathlib
from typing import Any, Optional

import sqlalchemy as sa

import ckan.model as model
import ckan.plugins.toolkit as tk

from ckanext.webhooks.access import Viewer
from ckanext.webhooks.model import Hook

EXAMPLE_BODIES = pathlib.Path(__file__).with_name("event_examples.json")
_EXAMPLE_ID = "00000000-0000-4000-8000-00000000000{0}"
_MADE_UP_NOTE = "A made-up example: this portal has nothing public of this " \
    "kind yet."


def _made_up(kind: str) -> dict[str, Any]:
    dataset = {
        "id": _EXAMPLE_ID.format(1), "name": "example-dataset",
        "title": "Example dataset", "type": "dataset", "private": False,
        "state": "active", "notes": _MADE_UP_NOTE, "owner_org": None,
        "organization": None, "license_id": None, "url": "",
        "version": "", "tags": [], "extras": [], "groups": [],
        "resources": [], "num_resources": 0, "num_tags": 0,
        "metadata_created": "2026-01-01T00:00:00",
        "metadata_modified": "2026-01-01T00:00:00",
    }
    if kind == "dataset":
        return dataset
    if kind == "resource":
        return {
            "id": _EXAMPLE_ID.format(2), "package_id": dataset["id"],
            "name": "example.csv", "description": _MADE_UP_NOTE,
            "url": "https://example.com/example.csv", "format": "CSV",
            "state": "active", "position": 0,
            "created": "2026-01-01T00:00:00",
            "metadata_modified": "2026-01-01T00:00:00",
        }
    is_organization = kind == "organization"
    return {
        "id": _EXAMPLE_ID.format(3 if is_organization else 4),
        "name": "example-" + kind, "title": "Example " + kind,
        "type": kind, "is_organization": is_organization,
        "state": "active", "description": _MADE_UP_NOTE, "image_url": "",
        "approval_status": "approved", "package_count": 0,
        "created": "2026-01-01T00:00:00",
    }


def _gone_record(kind: str, data: dict[str, Any]) -> dict[str, Any]:
    """What a deletion carries (see docs/access.rst)."""
    if kind == "dataset":
        keys: tuple[str, ...] = ("id", "name", "title", "type", "owner_org")
    elif kind == "resource":
        keys = ("id", "package_id", "name")
    else:
        keys = ("id", "name", "title", "type")
    return {key: data.get(key) for key in keys} | {"state": "deleted"}


def _public_datasets(filters: dict[str, Any]) -> sa.orm.Query:
    """Public active datasets that ``filters`` allow, newest first."""
    query = model.Session.query(model.Package.id).filter(
        model.Package.state == "active", model.Package.private.is_(False))
    if filters.get("dataset"):
        query = query.filter(model.Package.id == filters["dataset"])
    if filters.get("organization"):
        query = query.filter(
            model.Package.owner_org == filters["organization"])
    if filters.get("group"):
        query = query.join(model.Member, sa.and_(
            model.Member.table_id == model.Package.id,
            model.Member.table_name == "package",
            model.Member.state == "active",
            model.Member.group_id == filters["group"]))
    return query.order_by(model.Package.metadata_modified.desc())


def _public_resources(filters: dict[str, Any]) -> sa.orm.Query:
    datasets = _public_datasets(filters).order_by(None).subquery()
    query = model.Session.query(model.Resource.id).filter(
        model.Resource.state == "active",
        model.Resource.package_id.in_(sa.select(datasets.c.id)))
    if filters.get("resource"):
        query = query.filter(model.Resource.id == filters["resource"])
    return query.order_by(model.Resource.metadata_modified.desc())


def _active_groups(filters: dict[str, Any], kind: str) -> sa.orm.Query:
    is_organization = kind == "organization"
    query = model.Session.query(model.Group.id).filter(
        model.Group.state == "active",
        model.Group.is_organization.is_(is_organization))
    if filters.get(kind):
        query = query.filter(model.Group.id == filters[kind])
    return query.order_by(model.Group.created.desc())


def _candidates(kind: str, filters: dict[str, Any]) -> list[str]:
    """A few ids of public entities of ``kind`` that ``filters`` allow."""
    if kind == "dataset":
        query = _public_datasets(filters)
    elif kind == "resource":
        query = _public_resources(filters)
    else:
        query = _active_groups(filters, kind)
    return [row.id for row in query.limit(3)]


def _show_action(kind: str) -> tuple[str, dict[str, Any]]:
    if kind == "dataset":
        return "package_show", {}
    if kind == "resource":
        return "resource_show", {}
    # as organization and group events carry them: without the datasets
    return kind + "_show", {"include_datasets": False}


def example_data(topic: str, hook: Hook) -> dict[str, Any]:
    """The ``data`` of a test delivery of ``topic`` to ``hook``."""
    kind, _, change = topic.partition("/")
    viewer = Viewer(hook.owner_id)
    action, extra = _show_action(kind)
    data = None
    # what the hook's filters name first; failing that anything public
    for filters in (hook.filters, {}):
        for entity_id in _candidates(kind, filters):
            try:
                data = tk.get_action(action)(
                    viewer.context(), dict(extra, id=entity_id))
                break
            except (tk.ObjectNotFound, tk.NotAuthorized):
                continue
        if data is not None or not any(hook.filters.values()):
            break
    if data is None:
        data = _made_up(kind)
    if change == "delete":
        return _gone_record(kind, data)
    return data


@functools.lru_cache(maxsize=1)
def _example_bodies() -> dict[str, dict[str, Any]]:
    return json.loads(EXAMPLE_BODIES.read_text(encoding="utf-8"))


def example_body(message_type: str) -> Optional[dict[str, Any]]:
    """A real delivery of ``message_type``, for the catalogue (None for a
    type that has none yet)."""
    return _example_bodies().get(message_type)
