"""What each claimed message carries, judged at this attempt.

Access is judged at every attempt, retries and redeliveries included: an
event message goes out only if its hook's owner may see the event now (see
``access``); a body composed for an earlier attempt is sent again only then,
and otherwise the message is dropped without a trace.

Payloads are computed once per event and *view*, not once per hook: owners
share a view when they are alike for this dataset (sysadmins; or the same
permission labels matching the dataset's, and the same answers to "could
they see it before the change" and "as the change left it"). Anonymous
hooks are readers with the label ``public``: they share their view with
every owner who sees the dataset only as the public does. CKAN's
``package_show`` answers every user who may read a dataset alike, so this
is exact. An extension that changes ``package_show``
per user must set ``ckanext.webhooks.shared_payloads = false``: every owner
then gets a ``package_show`` of their own.
"""
from __future__ import annotations

import datetime
from typing import Any, Optional

import sqlalchemy as sa

import ckan.model as model
import ckan.plugins.toolkit as tk
from ckan.lib.plugins import get_permission_labels

from ckanext.webhooks import access
from ckanext.webhooks.model import (
    Event, Hook, STATUS_ACTIVE, STATUS_PENDING, TYPE_PING, TYPE_VERIFY,
    utcnow)
from ckanext.webhooks.pipeline import bodies, payloads
from ckanext.webhooks.pipeline.claiming import ClaimedMessage
from ckanext.webhooks.pipeline.sending import host_key

# the challenge is attempted at most this many times in all
MAX_CHALLENGE_ATTEMPTS = 3


def iso(moment: datetime.datetime) -> str:
    return moment.replace(microsecond=0).isoformat() + "Z"


class Views:
    """What one claim looks up once: events, owners, datasets' labels, and
    ``data`` per event and view."""

    def __init__(self) -> None:
        self.shared = bool(tk.config.get("ckanext.webhooks.shared_payloads"))
        self.events: dict[str, Optional[Event]] = {}
        self.viewers: dict[Optional[str], access.Viewer] = {}
        self.labels: dict[str, Optional[frozenset]] = {}
        self.data: dict[tuple, Optional[str]] = {}
        self.changes: dict[tuple, Optional[str]] = {}
        self.challenges: dict[str, int] = {}
        # per event and owner: what decides their view as a reader
        self.readers: dict[tuple, tuple] = {}
        self.views_computed = 0
        # payloads the helper processes compute: per (event, view), the
        # task and the place of its result (see ``prefetch``)
        self.pending: dict[tuple, int] = {}
        self._stream: Optional[payloads.Stream] = None
        self.views_helped = 0

    def event(self, event_id: str) -> Optional[Event]:
        if event_id not in self.events:
            self.events[event_id] = model.Session.get(Event, event_id)
        return self.events[event_id]

    def load_events(self, event_ids: set[str]) -> None:
        """Look up the events of a claim with one query, not one each."""
        missing = [i for i in event_ids if i not in self.events]
        if not missing:
            return
        for event in model.Session.query(Event).filter(
                Event.id.in_(missing)):
            self.events[event.id] = event
        for event_id in missing:
            self.events.setdefault(event_id, None)  # deleted meanwhile

    def challenge_attempts(self, hook_id: str) -> int:
        """Attempts of all the hook's challenges (this one's included): an
        address is challenged three times in all, however often it is asked
        to be (each new address starts afresh: its old challenges go)."""
        if hook_id not in self.challenges:
            self.challenges[hook_id] = model.Session.execute(sa.text(
                "SELECT COALESCE(sum(attempts), 0) FROM webhooks_delivery "
                "WHERE hook_id = :h AND type = :t"),
                {"h": hook_id, "t": TYPE_VERIFY}).scalar_one()
        return self.challenges[hook_id]

    def viewer(self, owner_id: Optional[str]) -> access.Viewer:
        if owner_id not in self.viewers:
            self.viewers[owner_id] = access.Viewer(owner_id)
        return self.viewers[owner_id]

    def _dataset_labels(self, dataset_id: str) -> Optional[frozenset]:
        """The dataset's permission labels now; None when it is gone."""
        if dataset_id not in self.labels:
            pkg = model.Session.get(model.Package, dataset_id)
            self.labels[dataset_id] = None if pkg is None \
                or pkg.state == "deleted" else frozenset(
                    get_permission_labels().get_dataset_labels(pkg))
        return self.labels[dataset_id]

    def _view(self, event: Event, viewer: access.Viewer) -> tuple:
        """Owners with the same view get the same ``data``."""
        if not self.shared or not event.package_id or not (
                event.topic.startswith("dataset/")
                or event.topic.startswith("resource/")):
            return ("owner", viewer.user.id if viewer.user else None)
        if viewer.user is None:
            # an anonymous hook gets no event of a private or draft dataset
            return ("anonymous",) if event.restricted else ("public",)
        if viewer.user.sysadmin:
            return ("sysadmin",)
        view = self._reader(event, viewer)
        if not event.restricted and view == self._reader(
                event, self.viewer(None)):
            # they see it as the public does: they share the anonymous view
            return ("public",)
        return view

    def _reader(self, event: Event, viewer: access.Viewer) -> tuple:
        """What decides a reader's ``data`` and ``changes``: the labels they
        have matching the dataset's now, and whether they could see it
        before the change and as the change left it."""
        seen = (event.id, viewer.user.id if viewer.user else None)
        if seen not in self.readers:
            assert event.package_id  # only dataset and resource events
            labels = self._dataset_labels(event.package_id)
            now = None if labels is None \
                else frozenset(viewer.labels() & labels)
            self.readers[seen] = ("reader", access.sight(event, viewer), now)
        return self.readers[seen]

    def payload(self, event: Event, owner_id: Optional[str]
                ) -> tuple[Optional[str], Optional[str]]:
        """The event's ``data`` and ``changes`` as this owner may see them,
        as JSON; ``data`` is None when they may not see the event (now)."""
        viewer = self.viewer(owner_id)
        view = self._view(event, viewer)
        key = (event.id, view)
        if key not in self.data:
            self.views_computed += 1
            helped = self._helped(key)
            if helped is not None:
                self.data[key], self.changes[key] = helped
                return helped
            if view == ("public",):
                # computed as the public, which CKAN answers without
                # looking up anybody's memberships
                viewer = self.viewer(None)
            data = access.event_data(event, viewer)
            changes = None if data is None else access.event_changes(
                event, viewer, data)
            self.data[key] = None if data is None else bodies.to_json(data)
            self.changes[key] = None if changes is None \
                else bodies.to_json(changes)
        return self.data[key], self.changes[key]

    def prefetch(self, messages: list[ClaimedMessage],
                 helpers: payloads.Helpers) -> None:
        """Have the helper processes compute the payloads this claim needs,
        in the order they are needed, when it needs several (``payload``
        then takes their results, or computes one itself if the helpers
        failed)."""
        hooks = _hooks(messages)
        self.load_events({m.event_id for m in messages if m.event_id})
        wanted: dict[tuple, Optional[str]] = {}
        for message in messages:
            hook = hooks.get(message.hook_id)
            event = self.event(message.event_id) if message.event_id \
                else None
            if event is None or hook is None \
                    or hook.status != STATUS_ACTIVE:
                continue  # nothing to compute (see ``_decide``)
            view = self._view(event, self.viewer(hook.owner_id))
            key = (event.id, view)
            if key not in self.data and key not in wanted:
                # computed as ``payload`` would: the public as the public
                wanted[key] = None if view == ("public",) else hook.owner_id
        model.Session.commit()
        if len(wanted) < payloads.MIN_PAYLOADS:
            return
        stream = helpers.stream([(key[0], owner)
                                 for key, owner in wanted.items()])
        if stream is None:
            return
        self._stream = stream
        self.pending = {key: index for index, key in enumerate(wanted)}

    def _helped(self, key: tuple
                ) -> Optional[tuple[Optional[str], Optional[str]]]:
        """A helper's result for this payload, if it computed it."""
        index = self.pending.pop(key, None)
        if index is None or self._stream is None:
            return None
        helped = self._stream.result(index)
        if helped is not None:
            self.views_helped += 1
        return helped


def _hooks(messages: list[ClaimedMessage]) -> dict[str, Any]:
    ids = list({m.hook_id for m in messages})
    return {hook.id: hook for hook in model.Session.query(
        Hook.id, Hook.address, Hook.status, Hook.status_reason,
        Hook.owner_id, Hook.secret, Hook.client_errors, Hook.last_success,
        Hook.failing_since, Hook.consecutive_failures, Hook.circuit_until,
    ).filter(Hook.id.in_(ids))}


def _decide(message: ClaimedMessage, hook: Any, views: Views) -> None:
    """Set what ``message`` carries, or why it is not sent."""
    if hook is None:  # deleted meanwhile: its messages went with it
        message.state = "drop"
        return
    if message.type == TYPE_VERIFY:
        if views.challenge_attempts(hook.id) > MAX_CHALLENGE_ATTEMPTS:
            message.state = "failed"
            message.error = "the challenge was attempted {} times".format(
                MAX_CHALLENGE_ATTEMPTS)
            return
    elif hook.status == STATUS_PENDING:
        # an address that has not answered its challenge gets nothing else
        message.state = "failed"
        message.error = "hook is pending"
        return
    elif hook.status != STATUS_ACTIVE and message.type != TYPE_PING:
        message.state = "failed"
        message.error = "hook is " + hook.status
        return

    if message.event_id:
        event = views.event(message.event_id)
        data_json, changes_json = (None, None) if event is None \
            else views.payload(event, hook.owner_id)
        if event is None or data_json is None:  # not for this owner now
            message.state = "drop"
            return
        # a message waits for those of its hook about the same dataset
        # (first attempts, retries and recovered ones alike); messages
        # about different datasets go side by side
        message.sequence = (hook.id, event.package_id or event.entity_id)
        message.order = (event.created, event.id)
        if message.body is None:
            message.body = bodies.compose_body(
                message.id, message.type, iso(event.created), hook.id,
                data_json, changes_json=changes_json)
            message.new_body = True
        return
    message.order = (message.created, message.id)
    if message.body is None:
        message.body = bodies.compose_body(
            message.id, message.type, iso(message.created), hook.id,
            bodies.to_json(message.data or {}), test=bool(message.test))
        message.new_body = True


def _retiring_secrets(hook_ids: list[str]) -> dict[str, list[str]]:
    """The secrets each hook retired that still sign beside its current
    one, newest first."""
    retiring: dict[str, list[str]] = {}
    for hook_id, secret in model.Session.execute(_RETIRING, {
            "ids": hook_ids, "now": utcnow()}):
        retiring.setdefault(hook_id, []).append(secret)
    return retiring


_RETIRING = sa.text("""
    SELECT hook_id, secret FROM webhooks_secret
    WHERE hook_id = ANY(:ids) AND expires > :now
    ORDER BY hook_id, expires DESC
""")
_LOCK_HOOKS = sa.text("""
    SELECT id FROM webhooks_hook WHERE id = ANY(:ids)
    ORDER BY id FOR KEY SHARE
""")
# a message's body, stored as soon as it is composed: while its first
# attempt is in flight its owner sees it (and may ask for it again)
_STORE_BODIES = sa.text("""
    UPDATE webhooks_delivery d SET body = v.body
    FROM unnest(CAST(:ids AS text[]), CAST(:bodies AS text[]))
         AS v(id, body)
    WHERE d.id = v.id AND d.lease_id = :lease_id
""")


def compose(messages: list[ClaimedMessage], views: Views) -> None:
    """Decide every claimed message: what it carries and where it goes;
    ``messages`` end up in the order of their events. New bodies are
    stored."""
    hooks = _hooks(messages)
    views.load_events({m.event_id for m in messages if m.event_id})
    retiring = _retiring_secrets(list(hooks))
    new_bodies: dict[str, list[ClaimedMessage]] = {}
    for message in messages:
        hook = message.hook = hooks.get(message.hook_id)
        _decide(message, hook, views)
        if message.state != "send":
            continue
        assert hook is not None  # _decide drops a deleted hook's messages
        message.address = hook.address
        message.host = host_key(hook.address)
        message.secrets = [hook.secret, *retiring.get(hook.id, ())]
        if message.new_body:
            new_bodies.setdefault(message.lease_id, []).append(message)
    if new_bodies:
        # the hooks' rows before their messages', as everywhere (a hook
        # deleted meanwhile waits, or is gone: no deadlock)
        model.Session.execute(_LOCK_HOOKS, {"ids": sorted(hooks)})
    for lease_id, composed in new_bodies.items():
        model.Session.execute(_STORE_BODIES, {
            "ids": [m.id for m in composed],
            "bodies": [m.body for m in composed], "lease_id": lease_id})
    messages.sort(key=lambda m: m.order)
    model.Session.commit()
