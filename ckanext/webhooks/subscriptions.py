"""Turn committed changes of datasets, resources, organizations and groups
into events.

Changes are read from the SQLAlchemy session while CKAN writes them, and an
event row is added to the *same* transaction just before it commits (a
transactional outbox): a change that rolls back leaves no event, and a change
that commits always leaves one, even if Redis is down at that moment. The
same statement notifies the ``webhooks_event`` channel, which PostgreSQL
delivers on commit: the workers' dispatcher (``dispatch``) enqueues the
fan-out jobs, so a request never waits for Redis. An event whose
notification was missed is found by the dispatcher when it (re)connects and
by the worker's sweep.

An update also records what it altered (the event's ``changes``: each
field's value before this transaction), read from the session's attribute
history, so the request never runs ``package_show``. Which of those values
an owner may see is decided at delivery (``access.event_changes``).

Nothing here matches hooks or does HTTP: that is the worker's job.

Why the session and not ``tk.signals.action_succeeded`` or the
``IPackageController``/``IResourceController`` hooks: the signal fires after
the commit (an event recorded then can be lost between the two), and the
plugin hooks run sometimes before and sometimes after the commit
(``after_resource_create`` runs after it, ``after_dataset_update`` inside a
``resource_create`` before it), and a purge has no hook at all.
"""
from __future__ import annotations

import datetime
import json
import logging
import uuid
from typing import Any, Optional

import sqlalchemy as sa
from sqlalchemy import event as sa_event, inspect as sa_inspect

import ckan.model as model
import ckan.plugins as plugins

from ckanext.webhooks import tables
from ckanext.webhooks.model import utcnow

log = logging.getLogger(__name__)

_CHANGES = "webhooks_changes"

# columns whose change alone is bookkeeping, not news
_DATASET_BOOKKEEPING = {"metadata_modified"}
_RESOURCE_BOOKKEEPING = {"position", "metadata_modified"}
# never listed in an update's ``changes``: bookkeeping, and plugin_data,
# which package_show does not show
_DATASET_UNLISTED = {"metadata_modified", "plugin_data"}
_RESOURCE_UNLISTED = {"metadata_modified"}

# "draft": created as a draft; like CKAN's activity stream, the dataset is
# announced (dataset/create) when it becomes active, as the web form does
_PRECEDENCE = {"update": 0, "draft": 1, "create": 2, "delete": 3}

# CKAN 2.12 keeps a dataset's extras in a column of the package row; earlier
# versions in rows of their own (PackageExtra)
_PackageExtra = getattr(model, "PackageExtra", None)
_GroupExtra = getattr(model, "GroupExtra", None)


def _plugin_enabled() -> bool:
    return plugins.plugin_loaded("webhooks")


def _changed_columns(obj: Any) -> set[str]:
    # only attributes set since the last flush can have changed (the rest
    # have no history to look at)
    state = sa_inspect(obj)
    columns = state.mapper.column_attrs
    return {key for key in state.committed_state
            if key in columns and state.attrs[key].history.has_changes()}


def _previous(obj: Any, column: str) -> Any:
    """The value of ``column`` before this flush changed it."""
    history = sa_inspect(obj).attrs[column].history
    if history.deleted:
        return history.deleted[0]
    return getattr(obj, column)


_UNKNOWN = object()


def _value_before(obj: Any, column: str) -> Any:
    """Like ``_previous``, but ``_UNKNOWN`` when the column was set without
    its old value ever being loaded (SQLAlchemy then keeps no history)."""
    history = sa_inspect(obj).attrs[column].history
    if history.deleted:
        return history.deleted[0]
    if history.added:
        return _UNKNOWN
    return getattr(obj, column)


def _plain(value: Any) -> Any:
    """A column value as package_show / resource_show give it."""
    if isinstance(value, (datetime.datetime, datetime.date)):
        return value.isoformat()
    return value


def _extras_list(extras: Optional[dict[str, Any]]) -> list[dict[str, Any]]:
    # package_show's shape of a dataset's extras
    return [{"key": key, "value": value}
            for key, value in sorted((extras or {}).items())]


def _dataset_before(pkg: model.Package, columns: set[str]) -> dict[str, Any]:
    """The values before this flush of the dataset's changed columns."""
    before = {}
    for column in columns - _DATASET_UNLISTED:
        value = _value_before(pkg, column)
        if value is _UNKNOWN:
            continue
        before[column] = _extras_list(value) if column == "extras" \
            else _plain(value)
    return before


def _resource_before(res: model.Resource,
                     columns: set[str]) -> dict[str, Any]:
    """The values before this flush of the resource's changed fields; its
    extras are fields of their own, as resource_show shows them."""
    before = {}
    for column in columns - _RESOURCE_UNLISTED:
        value = _value_before(res, column)
        if value is _UNKNOWN:
            continue
        if column == "extras":
            old, new = value or {}, res.extras or {}
            before.update({key: _plain(old.get(key))
                           for key in old.keys() | new.keys()
                           if old.get(key) != new.get(key)})
        else:
            before[column] = _plain(value)
    return before


# --- a dataset's tags, extras and groups: rows of their own -----------------

# every row of the field, whatever its state, as the database has it now
_LIST_ROWS = {
    "tags": sa.text("""
        SELECT pt.id, pt.state, t.id AS item_id, t.name, t.vocabulary_id
        FROM package_tag pt JOIN tag t ON t.id = pt.tag_id
        WHERE pt.package_id = :id"""),
    "extras": sa.text("""
        SELECT id, state, key, value FROM package_extra
        WHERE package_id = :id"""),
    "groups": sa.text("""
        SELECT m.id, m.state, g.id AS item_id, g.name, g.title
        FROM member m JOIN "group" g ON g.id = m.group_id
        WHERE m.table_id = :id AND m.table_name = 'package'
          AND NOT g.is_organization"""),
}
# the listed item of a row that is no longer in the database
_LIST_ITEM = {
    "tags": sa.text("""
        SELECT id AS item_id, name, vocabulary_id FROM tag
        WHERE id = :id"""),
    "groups": sa.text("""
        SELECT id AS item_id, name, title FROM "group"
        WHERE id = :id AND NOT is_organization"""),
}


def _list_item(field: str, row: Any) -> dict[str, Any]:
    """One entry of package_show's ``tags``, ``extras`` or ``groups``."""
    if field == "tags":
        return {"display_name": row.name, "id": row.item_id,
                "name": row.name, "state": "active",
                "vocabulary_id": row.vocabulary_id}
    if field == "extras":
        return {"key": row.key, "value": row.value}
    return {"display_name": row.title or row.name, "id": row.item_id,
            "name": row.name, "title": row.title}


_LIST_ORDER = {"tags": "name", "extras": "key", "groups": "display_name"}


def _listed(field: str, rows: dict[str, tuple]) -> list[dict[str, Any]]:
    items = [item for state, item in rows.values() if state == "active"]
    return sorted(items, key=lambda item: item[_LIST_ORDER[field]] or "")


def _list_rows(connection: Any, field: str,
               dataset_id: str) -> dict[str, tuple]:
    """{row id: (state, item)} of the field as the database has it now."""
    return {row.id: (row.state, _list_item(field, row)) for row in
            connection.execute(_LIST_ROWS[field], {"id": dataset_id})}


def _list_before(session: Any, field: str, dataset_id: str,
                 touched: list[Any], new_ids: set[int]) -> list[dict]:
    """The field as it was before this flush: the database now (the flush
    is written), with the rows this flush touched as they were."""
    connection = session.connection()
    rows = _list_rows(connection, field, dataset_id)
    for obj in touched:
        if id(obj) in new_ids:
            rows.pop(obj.id, None)  # did not exist before
            continue
        if field == "extras":
            item = {"key": _previous(obj, "key"),
                    "value": _previous(obj, "value")}
        else:
            item_id = _previous(obj, "tag_id" if field == "tags"
                                else "group_id")
            known = rows.get(obj.id)
            if known is not None and known[1]["id"] == item_id:
                item = known[1]
            else:
                row = connection.execute(_LIST_ITEM[field],
                                         {"id": item_id}).first()
                if row is None:
                    continue
                item = _list_item(field, row)
        rows[obj.id] = (_previous(obj, "state"), item)
    return _listed(field, rows)


def _list_field(obj: Any) -> Optional[tuple[str, Optional[str], str]]:
    """(kind, entity id, field) for a row of a dataset's tags, extras or
    groups, or of a group's extras."""
    if isinstance(obj, model.PackageTag):
        return "dataset", obj.package_id, "tags"
    if _PackageExtra is not None and isinstance(obj, _PackageExtra):
        return "dataset", obj.package_id, "extras"
    # organization membership is the dataset's owner_org column; CKAN also
    # keeps a Member row for it, committed separately, which is not news
    if isinstance(obj, model.Member) and obj.table_name == "package" \
            and obj.capacity != "organization":
        return "dataset", obj.table_id, "groups"
    if _GroupExtra is not None and isinstance(obj, _GroupExtra):
        return "group", obj.group_id, "extras"
    return None


# --- snapshots: what access is judged on, and what a deletion delivers -----

_DATASET_JUDGED = ("name", "title", "type", "owner_org", "private", "state")
_GROUP_JUDGED = ("name", "title", "state")


def _with_was(obj: Any, snapshot: dict[str, Any],
              judged: tuple[str, ...]) -> dict[str, Any]:
    # only attributes set since the last flush can differ from now
    changed = sa_inspect(obj).committed_state
    for column in judged:
        snapshot["was_" + column] = _previous(obj, column) \
            if column in changed else snapshot[column]
    return snapshot


def _dataset_snapshot(pkg: model.Package) -> dict[str, Any]:
    """The dataset now, and (``was_``) as it was before this flush."""
    snapshot = _with_was(pkg, {
        "id": pkg.id, "name": pkg.name, "title": pkg.title,
        "type": pkg.type, "owner_org": pkg.owner_org,
        "private": bool(pkg.private), "state": pkg.state,
        "creator_user_id": pkg.creator_user_id,
    }, _DATASET_JUDGED)
    snapshot["was_private"] = bool(snapshot["was_private"])
    return snapshot


def _group_snapshot(group: model.Group) -> dict[str, Any]:
    """The organization or group now, and (``was_``) before this flush."""
    return _with_was(group, {
        "id": group.id, "name": group.name, "title": group.title,
        "type": group.type, "is_organization": bool(group.is_organization),
        "state": group.state,
    }, _GROUP_JUDGED)


def _note(changes: dict, key: tuple, kind: str,
          before: Optional[dict[str, Any]] = None, **details: Any) -> None:
    known = changes.get(key)
    if known is None:
        changes[key] = dict(details, kind=kind, before=dict(before or {}))
        return
    if before:
        # a field's value before the transaction is the earliest one seen
        known["before"] = {**before, **known["before"]}
    if _PRECEDENCE[kind] >= _PRECEDENCE[known["kind"]]:
        # take the stronger kind and what is known now; the "before" state
        # stays the earliest one seen in this transaction
        earlier = known.get("snapshot")
        known.update({k: v for k, v in details.items()
                      if v is not None}, kind=kind)
        if earlier and known.get("snapshot") is not earlier:
            known["snapshot"] = dict(known["snapshot"], **{
                k: v for k, v in earlier.items() if k.startswith("was_")})
        known["significant"] = bool(known.get("significant")) or bool(
            details.get("significant"))


def _kind_of_edit(obj: Any) -> Optional[str]:
    """``update`` or ``delete`` for an edited row with a state; None for
    edits of something already deleted."""
    was_state = _previous(obj, "state")
    if obj.state == "deleted":
        return None if was_state == "deleted" else "delete"
    return "update"


def _collect_changes(session: Any, flush_context: Any) -> None:
    """after_flush: note what this flush changed."""
    if not _plugin_enabled():
        return
    changes = session.info.setdefault(_CHANGES, {})
    new, dirty, deleted = list(session.new), list(session.dirty), \
        list(session.deleted)

    for obj in new:
        if isinstance(obj, model.Package):
            _note(changes, ("dataset", obj.id),
                  "draft" if obj.state == "draft" else "create",
                  snapshot=_dataset_snapshot(obj))
        elif isinstance(obj, model.Resource):
            _note(changes, ("resource", obj.id), "create",
                  package_id=obj.package_id, name=obj.name)
        elif isinstance(obj, model.Group):
            _note(changes, ("group", obj.id), "create",
                  snapshot=_group_snapshot(obj))

    for obj in dirty:
        if isinstance(obj, model.Package):
            columns = _changed_columns(obj)
            if not columns:
                continue
            kind = _kind_of_edit(obj)
            if kind is None:
                continue  # edits of an already deleted dataset
            if kind == "update" and _previous(obj, "state") == "draft" \
                    and obj.state == "active":
                kind = "create"  # a draft completed: announced now
            _note(changes, ("dataset", obj.id), kind, obj=obj,
                  significant=bool(columns - _DATASET_BOOKKEEPING),
                  snapshot=_dataset_snapshot(obj),
                  before=_dataset_before(obj, columns)
                  if kind == "update" else None)
        elif isinstance(obj, model.Resource):
            columns = _changed_columns(obj)
            if not columns - _RESOURCE_BOOKKEEPING:
                continue
            kind = _kind_of_edit(obj)
            if kind is None:
                continue
            _note(changes, ("resource", obj.id), kind, obj=obj,
                  package_id=obj.package_id, name=obj.name,
                  before=_resource_before(obj, columns)
                  if kind == "update" else None)
        elif isinstance(obj, model.Group):
            if not _changed_columns(obj):
                continue
            kind = _kind_of_edit(obj)
            if kind is not None:
                _note(changes, ("group", obj.id), kind,
                      snapshot=_group_snapshot(obj))

    for obj in deleted:
        # purged: gone from the database
        if isinstance(obj, model.Package) and obj.state != "deleted":
            _note(changes, ("dataset", obj.id), "delete",
                  snapshot=_dataset_snapshot(obj))
        elif isinstance(obj, model.Resource) and obj.state != "deleted":
            _note(changes, ("resource", obj.id), "delete",
                  package_id=obj.package_id, name=obj.name)
        elif isinstance(obj, model.Group) and obj.state != "deleted":
            _note(changes, ("group", obj.id), "delete",
                  snapshot=_group_snapshot(obj))

    # tags, extras and group memberships live in their own rows: a change
    # to them alone is an update (CKAN bumps metadata_modified with a bulk
    # UPDATE that the session never sees)
    touched: dict[tuple, list[Any]] = {}
    for obj in (*new, *deleted):
        found = _list_field(obj)
        if found:
            touched.setdefault(found, []).append(obj)
    for obj in dirty:
        found = _list_field(obj)
        if found and _changed_columns(obj):
            touched.setdefault(found, []).append(obj)
    if not touched:
        return
    new_ids = {id(obj) for obj in new}
    for (kind, entity_id, field), rows in touched.items():
        known = changes.get((kind, entity_id))
        before = None
        # the list before this transaction: computed when first touched,
        # and only for what is still an update
        if kind == "dataset" and (known is None or (
                known["kind"] == "update" and field not in known["before"])):
            before = {field: _list_before(session, field, entity_id, rows,
                                          new_ids)}
        _note(changes, (kind, entity_id), "update", significant=True,
              snapshot=None, before=before)


_COLUMNS = {"dataset": frozenset(model.package_table.c.keys()),
            "resource": frozenset(model.resource_table.c.keys())}


def _altered(kind: str, change: dict[str, Any],
             entity_id: str) -> Optional[dict[str, Any]]:
    """The fields of the change's ``before`` whose value the transaction
    left changed (a field changed and changed back is not news)."""
    before = change.get("before")
    if not before:
        return None
    obj: Any = change.get("obj") or model.Session.get(
        model.Package if kind == "dataset" else model.Resource, entity_id)
    if obj is None:
        return None
    columns = _COLUMNS[kind]
    altered = {}
    for field, value in before.items():
        if kind == "dataset" and field in _LIST_ROWS and field not in columns:
            now: Any = _listed(field, _list_rows(
                model.Session.connection(), field, entity_id))
        elif field == "extras" and kind == "dataset":
            now = _extras_list(obj.extras)
        elif field in columns:
            now = _plain(getattr(obj, field))
        else:  # a resource's extra field
            now = _plain((obj.extras or {}).get(field))
        if now != value:
            altered[field] = value
    return altered or None


# A plain INSERT, sent on CKAN's own connection inside its transaction (no
# SQLAlchemy statement to compile); the table's trigger (migration
# 3e8f5b1c6a72) adds a dataset's groups and notifies the ``webhooks_event``
# channel, which PostgreSQL delivers when, and only if, the transaction
# commits. Every worker listens (``pipeline.listening.EVENTS``).
_INSERT_EVENT = """
    INSERT INTO webhooks_event (id, topic, entity_id, package_id,
                                organization_id, group_ids, restricted,
                                snapshot, changes, created)
    VALUES (%(id)s, %(topic)s, %(entity_id)s, %(package_id)s,
            %(organization_id)s, %(group_ids)s, %(restricted)s,
            %(snapshot)s, %(changes)s, %(created)s)
"""


def _event(topic: str, entity_id: str, package_id: Optional[str],
           organization_id: Optional[str], restricted: bool,
           snapshot: dict[str, Any], group_ids: tuple[str, ...] = (),
           changes: Optional[dict[str, Any]] = None) -> dict[str, Any]:
    # group_ids of dataset and resource events come from the trigger
    return {"topic": topic, "entity_id": entity_id, "package_id": package_id,
            "organization_id": organization_id, "group_ids": list(group_ids),
            "restricted": bool(restricted), "snapshot": snapshot,
            "changes": changes}


def _group_events(groups: dict[str, dict]) -> list[dict[str, Any]]:
    """Organization and group events: no package; an organization's own id
    as its organization, a group's own id as its groups."""
    events = []
    for group_id, change in groups.items():
        snap = change.get("snapshot")
        if snap is None:
            group = model.Session.get(model.Group, group_id)
            if group is None:
                continue
            snap = _group_snapshot(group)
        kind = change["kind"]
        state = snap["was_state"] if kind == "delete" else snap["state"]
        if snap["is_organization"]:
            events.append(_event("organization/" + kind, group_id, None,
                                 group_id, state != "active", snap))
        else:
            events.append(_event("group/" + kind, group_id, None, None,
                                 state != "active", snap,
                                 group_ids=(group_id,)))
    return events


def _events_for(changes: dict) -> list[dict[str, Any]]:
    datasets = {k[1]: v for k, v in changes.items() if k[0] == "dataset"}
    resources = {k[1]: v for k, v in changes.items() if k[0] == "resource"}
    groups = {k[1]: v for k, v in changes.items() if k[0] == "group"}

    # snapshots for datasets touched only through resources or related rows
    for resource in resources.values():
        datasets.setdefault(resource["package_id"], {"kind": None})
    for dataset_id, change in list(datasets.items()):
        if change.get("snapshot") is None:
            pkg = model.Session.get(model.Package, dataset_id)
            if pkg is None:
                del datasets[dataset_id]
                continue
            change["snapshot"] = _dataset_snapshot(pkg)
    touched_by_resources = {r["package_id"] for r in resources.values()}

    events = []
    for dataset_id, change in datasets.items():
        kind = change["kind"]
        if kind is None or kind == "draft":
            continue
        if kind == "update" and dataset_id in touched_by_resources \
                and not change.get("significant"):
            # the dataset only changed because one of its resources did
            continue
        snap = change["snapshot"]
        if kind == "delete":
            restricted = snap["was_private"] or snap["was_state"] != "active"
        else:
            restricted = snap["private"] or snap["state"] != "active"
        events.append(_event(
            "dataset/" + kind, dataset_id, dataset_id, snap["owner_org"],
            restricted, snap, changes=_altered("dataset", change, dataset_id)
            if kind == "update" else None))

    for resource_id, change in resources.items():
        dataset = datasets.get(change["package_id"])
        if dataset is None:
            continue
        if dataset["kind"] in ("create", "delete", "draft"):
            continue  # part of the dataset's own event
        snap = dict(dataset["snapshot"])
        restricted = snap["private"] or snap["state"] != "active"
        events.append(_event(
            "resource/" + change["kind"], resource_id, change["package_id"],
            snap["owner_org"], restricted,
            {"id": resource_id, "package_id": change["package_id"],
             "name": change.get("name"), "dataset": snap},
            changes=_altered("resource", change, resource_id)
            if change["kind"] == "update" else None))

    return events + _group_events(groups)


def _record_events(session: Any) -> None:
    """before_commit: add the events of this transaction to it."""
    if not session.info.get(_CHANGES):
        return
    if session.new or session.dirty or session.deleted:
        session.flush()
    changes = session.info.pop(_CHANGES, None)
    if not changes or not _plugin_enabled():
        return
    # a missing or outdated schema must never break CKAN's own writes
    if not tables.ready(session.connection()):
        return
    events = _events_for(changes)
    if not events:
        return
    now = utcnow()
    cursor = session.connection().connection.cursor()
    try:
        for event in events:
            cursor.execute(_INSERT_EVENT, dict(
                event, id=uuid.uuid4().hex, created=now,
                snapshot=json.dumps(event["snapshot"], default=str),
                changes=None if event["changes"] is None
                else json.dumps(event["changes"], default=str)))
    finally:
        cursor.close()


def _forget(session: Any) -> None:
    """after_commit and after_rollback: start the next transaction afresh."""
    session.info.pop(_CHANGES, None)


_listening = False


def listen() -> None:
    """Attach the session listeners (once per process)."""
    global _listening
    if _listening:
        return
    sa_event.listen(model.Session, "after_flush", _collect_changes)
    sa_event.listen(model.Session, "before_commit", _record_events)
    sa_event.listen(model.Session, "after_commit", _forget)
    sa_event.listen(model.Session, "after_rollback", _forget)
    _listening = True
