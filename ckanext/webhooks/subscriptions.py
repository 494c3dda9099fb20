"""Turn committed changes of datasets and resources into events.

Changes are read from the SQLAlchemy session while CKAN writes them, and an
event row is added to the *same* transaction just before it commits (a
transactional outbox): a change that rolls back leaves no event, and a change
that commits always leaves one, even if Redis is down at that moment. The
same statement notifies the ``webhooks_event`` channel, which PostgreSQL
delivers on commit: the workers' dispatcher (``dispatch``) enqueues the
fan-out jobs, so a request never waits for Redis. An event whose
notification was missed is found by the dispatcher when it (re)connects and
by the worker's sweep.

Nothing here matches hooks or does HTTP: that is the worker's job.

Why the session and not ``tk.signals.action_succeeded`` or the
``IPackageController``/``IResourceController`` hooks: the signal fires after
the commit (an event recorded then can be lost between the two), and the
plugin hooks run sometimes before and sometimes after the commit
(``after_resource_create`` runs after it, ``after_dataset_update`` inside a
``resource_create`` before it), and a purge has no hook at all.
"""
from __future__ import annotations

import json
import logging
import uuid
from typing import Any

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

# "draft": created as a draft; like CKAN's activity stream, the dataset is
# announced (dataset/create) when it becomes active, as the web form does
_PRECEDENCE = {"update": 0, "draft": 1, "create": 2, "delete": 3}


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


def _dataset_snapshot(pkg: model.Package, was_private: bool,
                      was_state: str) -> dict[str, Any]:
    return {
        "id": pkg.id, "name": pkg.name, "title": pkg.title,
        "type": pkg.type, "owner_org": pkg.owner_org,
        "private": bool(pkg.private), "state": pkg.state,
        "was_private": bool(was_private), "was_state": was_state,
        "creator_user_id": pkg.creator_user_id,
    }


def _note(changes: dict, key: tuple, kind: str, **details: Any) -> None:
    known = changes.get(key)
    if known is None:
        changes[key] = dict(details, kind=kind)
    elif _PRECEDENCE[kind] >= _PRECEDENCE[known["kind"]]:
        # take the stronger kind and what is known now; a dataset's "before"
        # state stays the earliest one seen in this transaction
        before = known.get("snapshot")
        known.update({k: v for k, v in details.items()
                      if v is not None}, kind=kind)
        if before and known.get("snapshot") is not before:
            known["snapshot"] = dict(
                known["snapshot"], was_private=before["was_private"],
                was_state=before["was_state"])
        known["significant"] = bool(known.get("significant")) or bool(
            details.get("significant"))


def _collect_changes(session: Any, flush_context: Any) -> None:
    """after_flush: note which datasets and resources this flush changed."""
    if not _plugin_enabled():
        return
    changes = session.info.setdefault(_CHANGES, {})
    new, dirty, deleted = list(session.new), list(session.dirty), \
        list(session.deleted)

    for obj in new:
        if isinstance(obj, model.Package):
            _note(changes, ("dataset", obj.id),
                  "draft" if obj.state == "draft" else "create",
                  snapshot=_dataset_snapshot(obj, obj.private, obj.state))
        elif isinstance(obj, model.Resource):
            _note(changes, ("resource", obj.id), "create",
                  package_id=obj.package_id, name=obj.name)

    for obj in dirty:
        if isinstance(obj, model.Package):
            columns = _changed_columns(obj)
            if not columns:
                continue
            was_state = _previous(obj, "state")
            if obj.state == "deleted":
                if was_state == "deleted":
                    continue  # edits of an already deleted dataset
                kind = "delete"
            elif was_state == "draft" and obj.state == "active":
                kind = "create"  # a draft completed: announced now
            else:
                kind = "update"
            _note(changes, ("dataset", obj.id), kind,
                  significant=bool(columns - _DATASET_BOOKKEEPING),
                  snapshot=_dataset_snapshot(
                      obj, _previous(obj, "private"), was_state))
        elif isinstance(obj, model.Resource):
            columns = _changed_columns(obj)
            if not columns - _RESOURCE_BOOKKEEPING:
                continue
            was_state = _previous(obj, "state")
            if obj.state == "deleted":
                if was_state == "deleted":
                    continue
                kind = "delete"
            else:
                kind = "update"
            _note(changes, ("resource", obj.id), kind,
                  package_id=obj.package_id, name=obj.name)

    # tags, extras and group memberships live in their own rows: a change
    # to them alone is a dataset update (CKAN bumps metadata_modified with a
    # bulk UPDATE that the session never sees)
    for obj in (*new, *deleted):
        dataset_id = _dataset_of_related_row(obj)
        if dataset_id:
            _note(changes, ("dataset", dataset_id), "update",
                  significant=True, snapshot=None)
    for obj in dirty:
        dataset_id = _dataset_of_related_row(obj)
        if dataset_id and _changed_columns(obj):
            _note(changes, ("dataset", dataset_id), "update",
                  significant=True, snapshot=None)

    for obj in deleted:
        # purged: gone from the database
        if isinstance(obj, model.Package) and obj.state != "deleted":
            _note(changes, ("dataset", obj.id), "delete",
                  snapshot=_dataset_snapshot(obj, obj.private, obj.state))
        elif isinstance(obj, model.Resource) and obj.state != "deleted":
            _note(changes, ("resource", obj.id), "delete",
                  package_id=obj.package_id, name=obj.name)


# rows of their own that belong to one dataset; CKAN 2.12 has no
# PackageExtra: its extras are a column of the package row
_DATASET_ROWS = tuple(cls for cls in (
    model.PackageTag, getattr(model, "PackageExtra", None)) if cls is not None)


def _dataset_of_related_row(obj: Any) -> str | None:
    if isinstance(obj, _DATASET_ROWS):
        return obj.package_id
    # organization membership is the dataset's owner_org column; CKAN also
    # keeps a Member row for it, committed separately, which is not news
    if isinstance(obj, model.Member) and obj.table_name == "package" \
            and obj.capacity != "organization":
        return obj.table_id
    return None


# A plain INSERT, sent on CKAN's own connection inside its transaction (no
# SQLAlchemy statement to compile); the table's trigger (migration
# 3e8f5b1c6a72) adds the dataset's groups and notifies the ``webhooks_event``
# channel, which PostgreSQL delivers when, and only if, the transaction
# commits. The workers' dispatcher listens.
CHANNEL = "webhooks_event"
_INSERT_EVENT = """
    INSERT INTO webhooks_event (id, topic, entity_id, package_id,
                                organization_id, restricted, snapshot,
                                created)
    VALUES (%(id)s, %(topic)s, %(entity_id)s, %(package_id)s,
            %(organization_id)s, %(restricted)s, %(snapshot)s, %(created)s)
"""


def _event(topic: str, entity_id: str, package_id: str,
           organization_id: str | None, restricted: bool,
           snapshot: dict[str, Any]) -> dict[str, Any]:
    return {"topic": topic, "entity_id": entity_id, "package_id": package_id,
            "organization_id": organization_id,
            "restricted": bool(restricted), "snapshot": snapshot}


def _events_for(changes: dict) -> list[dict[str, Any]]:
    datasets = {k[1]: v for k, v in changes.items() if k[0] == "dataset"}
    resources = {k[1]: v for k, v in changes.items() if k[0] == "resource"}

    # snapshots for datasets touched only through resources or related rows
    for resource in resources.values():
        datasets.setdefault(resource["package_id"], {"kind": None})
    for dataset_id, change in list(datasets.items()):
        if change.get("snapshot") is None:
            pkg = model.Session.get(model.Package, dataset_id)
            if pkg is None:
                del datasets[dataset_id]
                continue
            change["snapshot"] = _dataset_snapshot(pkg, pkg.private,
                                                   pkg.state)
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
        events.append(_event("dataset/" + kind, dataset_id, dataset_id,
                             snap["owner_org"], restricted, snap))

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
             "name": change.get("name"), "dataset": snap}))
    return events


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
                snapshot=json.dumps(event["snapshot"], default=str)))
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
