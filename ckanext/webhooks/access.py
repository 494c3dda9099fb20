"""What a hook's owner may see of an event, judged when it is delivered.

A hook created without login sees what an anonymous visitor sees. A hook
created by a logged-in user sees what ``package_show`` / ``resource_show``
return to that user at delivery time. Deletions (and entities gone by
delivery time) carry a minimal record, and only to owners who could see the
entity just before it went away.
"""
from __future__ import annotations

from typing import Any, Optional

import ckan.model as model
import ckan.plugins.toolkit as tk
from ckan.lib.plugins import get_permission_labels

from ckanext.webhooks.model import Event


class Viewer:
    """The person a hook acts for: its owner, or an anonymous visitor."""

    def __init__(self, owner_id: Optional[str]):
        user = model.Session.get(model.User, owner_id) if owner_id else None
        if user is not None and user.state != "active":
            user = None
        self.user = user
        self._labels: Optional[set[str]] = None

    @property
    def name(self) -> str:
        return self.user.name if self.user else ""

    def context(self) -> dict[str, Any]:
        return {"model": model, "session": model.Session, "user": self.name,
                "auth_user_obj": self.user, "ignore_auth": False,
                "use_cache": False}

    def labels(self) -> set[str]:
        if self._labels is None:
            self._labels = set(
                get_permission_labels().get_user_dataset_labels(self.user))
        return self._labels

    def could_see(self, dataset_snapshot: dict[str, Any]) -> bool:
        """Whether this viewer could read the dataset as it was recorded."""
        if self.user is not None and self.user.sysadmin:
            return True
        before = model.Package(
            id=dataset_snapshot["id"], name=dataset_snapshot["name"],
            private=dataset_snapshot.get("was_private"),
            owner_org=dataset_snapshot.get("owner_org"),
            creator_user_id=dataset_snapshot.get("creator_user_id"))
        before.state = dataset_snapshot.get("was_state") or "active"
        dataset_labels = get_permission_labels().get_dataset_labels(before)
        if before in model.Session:
            model.Session.expunge(before)
        return bool(self.labels() & set(dataset_labels))


def _dataset_record(snapshot: dict[str, Any]) -> dict[str, Any]:
    return {key: snapshot.get(key) for key in
            ("id", "name", "title", "type", "owner_org")} | {
        "state": "deleted"}


def _resource_record(snapshot: dict[str, Any]) -> dict[str, Any]:
    return {"id": snapshot["id"], "package_id": snapshot["package_id"],
            "name": snapshot.get("name"), "state": "deleted"}


def _dataset_snapshot(event: Event) -> dict[str, Any]:
    if event.topic.startswith("resource/"):
        return event.snapshot["dataset"]
    return event.snapshot


def _gone_record(event: Event) -> dict[str, Any]:
    if event.topic.startswith("resource/"):
        return _resource_record(event.snapshot)
    return _dataset_record(event.snapshot)


def _dataset_gone(dataset_id: str) -> bool:
    pkg = model.Session.get(model.Package, dataset_id)
    return pkg is None or pkg.state == "deleted"


def _at_event_time(event: Event) -> dict[str, Any]:
    """The dataset as it was when the event happened (before a deletion)."""
    snapshot = _dataset_snapshot(event)
    if event.topic == "dataset/delete":
        return snapshot
    return dict(snapshot, was_private=snapshot["private"],
                was_state=snapshot["state"])


def event_data(event: Event, viewer: Viewer) -> Optional[dict[str, Any]]:
    """The ``data`` of ``event`` for ``viewer``, or None if they may not see it.

    A viewer must have been able to see the entity when the event happened
    and, unless it is gone since, must still be able to see it now.
    """
    if event.restricted and (viewer.user is None
                             or not viewer.could_see(_at_event_time(event))):
        return None
    if event.topic.endswith("/delete"):
        return _gone_record(event) \
            if viewer.could_see(_at_event_time(event)) else None

    is_resource = event.topic.startswith("resource/")
    try:
        if is_resource:
            resource = tk.get_action("resource_show")(
                viewer.context(), {"id": event.entity_id})
            if resource.get("state") == "deleted":
                raise tk.ObjectNotFound()
            return resource
        return tk.get_action("package_show")(
            viewer.context(), {"id": event.entity_id})
    except (tk.ObjectNotFound, tk.NotAuthorized):
        pass
    # Gone since the event: a minimal record for those who could see it then.
    # Still there but hidden now: nothing.
    if is_resource:
        resource = model.Session.get(model.Resource, event.entity_id)
        gone = resource is None or resource.state == "deleted" \
            or _dataset_gone(event.package_id)
    else:
        gone = _dataset_gone(event.entity_id)
    if gone and viewer.could_see(_at_event_time(event)):
        return _gone_record(event)
    return None


# the pipeline groups owners by what they could see when the event happened
at_event_time = _at_event_time
