"""What a hook's owner may see of an event, judged when it is delivered.

A hook created without login sees what an anonymous visitor sees. A hook
created by a logged-in user sees what ``package_show`` / ``resource_show`` /
``organization_show`` / ``group_show`` return to that user at delivery time.
Deletions (and entities gone by delivery time) carry a minimal record, and
only to owners who could see the entity just before it went away; its values
are the ones that owner could see. An update's ``changes`` show values from
before the change only to owners who could see the entity before it.

An event's snapshot holds the entity as the change left it and, under
``was_`` keys, as it was before the change (``subscriptions``).
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Optional

import ckan.authz as authz
import ckan.model as model
import ckan.plugins.toolkit as tk
from ckan.lib.plugins import get_permission_labels

from ckanext.webhooks.model import Event

if TYPE_CHECKING:
    from ckan.types import Context

# the topics whose body carries ``changes``
CHANGES_TOPICS = ("dataset/update", "resource/update")

# snapshot values with a ``was_`` twin
_DATASET_JUDGED = ("name", "title", "type", "owner_org", "private", "state")
_GROUP_JUDGED = ("name", "title", "state")


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

    def context(self) -> Context:
        # ckan.model is what the Model protocol describes, but mypy holds a
        # module to a protocol's classmethods strictly
        return {"model": model,  # type: ignore[typeddict-item]
                "session": model.Session, "user": self.name,
                "auth_user_obj": self.user, "ignore_auth": False,
                "use_cache": False}

    def labels(self) -> set[str]:
        if self._labels is None:
            self._labels = set(
                get_permission_labels().get_user_dataset_labels(self.user))
        return self._labels

    def could_see(self, dataset_snapshot: dict[str, Any]) -> bool:
        """Whether this viewer could read the dataset as its ``was_`` values
        describe it."""
        if self.user is not None and self.user.sysadmin:
            return True
        before = model.Package(
            id=dataset_snapshot["id"], name=dataset_snapshot["name"],
            private=dataset_snapshot.get("was_private"),
            owner_org=dataset_snapshot.get(
                "was_owner_org", dataset_snapshot.get("owner_org")),
            creator_user_id=dataset_snapshot.get("creator_user_id"))
        before.state = dataset_snapshot.get("was_state") or "active"
        dataset_labels = get_permission_labels().get_dataset_labels(before)
        if before in model.Session:
            model.Session.expunge(before)
        return bool(self.labels() & set(dataset_labels))

    def could_see_group(self, group_snapshot: dict[str, Any]) -> bool:
        """Whether this viewer could read the organization or group as its
        ``was_`` values describe it: anyone an active one, its members (and
        sysadmins) one that is not."""
        if group_snapshot.get("was_state") == "active":
            return True
        if self.user is None:
            return False
        return bool(self.user.sysadmin) or \
            authz.has_user_permission_for_group_or_org(
                group_snapshot["id"], self.user.name, "read")


def _as_left(snapshot: dict[str, Any], judged: tuple[str, ...]
             ) -> dict[str, Any]:
    """The snapshot with its ``was_`` values set to the values the change
    left (what ``could_see`` then judges)."""
    return dict(snapshot, **{"was_" + key: snapshot.get(key)
                             for key in judged})


def _values(snapshot: dict[str, Any], keys: tuple[str, ...],
            left: bool) -> dict[str, Any]:
    """``keys`` of the snapshot as the change left them, or as they were
    before it (older events have no ``was_`` values for some keys)."""
    if left:
        return {key: snapshot.get(key) for key in keys}
    return {key: snapshot.get("was_" + key, snapshot.get(key))
            for key in keys}


def _dataset_record(snapshot: dict[str, Any], left: bool = True
                    ) -> dict[str, Any]:
    return _values(snapshot, ("id", "name", "title", "type", "owner_org"),
                   left) | {"state": "deleted"}


def _resource_record(snapshot: dict[str, Any]) -> dict[str, Any]:
    return {"id": snapshot["id"], "package_id": snapshot["package_id"],
            "name": snapshot.get("name"), "state": "deleted"}


def _group_record(snapshot: dict[str, Any], left: bool = True
                  ) -> dict[str, Any]:
    return _values(snapshot, ("id", "name", "title", "type",
                              "is_organization"), left) | {"state": "deleted"}


def _dataset_snapshot(event: Event) -> dict[str, Any]:
    if event.topic.startswith("resource/"):
        return event.snapshot["dataset"]
    return event.snapshot


def _gone_record(event: Event) -> dict[str, Any]:
    if event.topic.startswith("resource/"):
        return _resource_record(event.snapshot)
    return _dataset_record(event.snapshot)


def _dataset_gone(dataset_id: Optional[str]) -> bool:
    pkg = model.Session.get(model.Package, dataset_id)
    return pkg is None or pkg.state == "deleted"


def _at_event_time(event: Event) -> dict[str, Any]:
    """The dataset as it was when the event happened (before a deletion)."""
    snapshot = _dataset_snapshot(event)
    if event.topic == "dataset/delete":
        return snapshot
    return _as_left(snapshot, _DATASET_JUDGED)


def _deletion_record(event: Event, viewer: Viewer
                     ) -> Optional[dict[str, Any]]:
    """The record of a deletion for a viewer who could see the entity just
    before it: with the values the change left if the viewer could see
    those too, else with the values from before the change."""
    if event.topic == "resource/delete":
        return _gone_record(event) \
            if viewer.could_see(_at_event_time(event)) else None
    snapshot = event.snapshot
    if not viewer.could_see(snapshot):
        return None
    return _dataset_record(snapshot, left=viewer.could_see(
        _as_left(snapshot, _DATASET_JUDGED)))


def is_group_event(event: Event) -> bool:
    """An organization or group event (no dataset)."""
    return event.topic.split("/")[0] in ("organization", "group")


def _group_event_data(event: Event, viewer: Viewer
                      ) -> Optional[dict[str, Any]]:
    snapshot = event.snapshot
    left = _as_left(snapshot, _GROUP_JUDGED)
    if event.topic.endswith("/delete"):
        if not viewer.could_see_group(snapshot):
            return None
        return _group_record(snapshot, left=viewer.could_see_group(left))
    if not viewer.could_see_group(left):
        return None
    show = "organization_show" if snapshot.get("is_organization") \
        else "group_show"
    try:
        return tk.get_action(show)(viewer.context(), {
            "id": event.entity_id, "include_datasets": False})
    except (tk.ObjectNotFound, tk.NotAuthorized):
        pass
    # gone since the event: the record as the event left it; still there
    # but hidden now: nothing
    group = model.Session.get(model.Group, event.entity_id)
    if group is None or group.state == "deleted":
        return _group_record(snapshot)
    return None


def event_data(event: Event, viewer: Viewer) -> Optional[dict[str, Any]]:
    """The ``data`` of ``event`` for ``viewer``, or None if they may not
    see it.

    A viewer must have been able to see the entity when the event happened
    and, unless it is gone since, must still be able to see it now.
    """
    if is_group_event(event):
        return _group_event_data(event, viewer)
    if event.restricted and (viewer.user is None
                             or not viewer.could_see(_at_event_time(event))):
        return None
    if event.topic.endswith("/delete"):
        return _deletion_record(event, viewer)

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


def sight(event: Event, viewer: Viewer) -> tuple[bool, bool]:
    """Whether ``viewer`` could see the entity before the event's change,
    and as the change left it. With what they may see now, this decides
    their ``data`` and ``changes``: owners alike in both may share them."""
    if is_group_event(event):
        snapshot = event.snapshot
        return (viewer.could_see_group(snapshot),
                viewer.could_see_group(_as_left(snapshot, _GROUP_JUDGED)))
    snapshot = _dataset_snapshot(event)
    return (viewer.could_see(snapshot),
            viewer.could_see(_as_left(snapshot, _DATASET_JUDGED)))


def event_changes(event: Event, viewer: Viewer,
                  data: Optional[dict[str, Any]]
                  ) -> Optional[dict[str, Any]]:
    """The ``changes`` of ``event`` as ``viewer`` may see them:
    ``{field: {"from": value before}}``, or None when there is nothing to
    show. ``data`` is the event's ``data`` for this viewer (``event_data``).

    Values from before the change are shown only to a viewer who could see
    the dataset before it, and only for fields their ``data`` carries (a
    field that CKAN or a plugin hides from them stays hidden).
    """
    if event.topic not in CHANGES_TOPICS or not event.changes or not data:
        return None
    if not viewer.could_see(_dataset_snapshot(event)):
        return None
    shown = {field: {"from": value}
             for field, value in event.changes.items() if field in data}
    return shown or None
