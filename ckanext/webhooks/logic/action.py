"""The webhook actions: ``webhook_create``, ``webhook_show`` and friends."""
from __future__ import annotations

import datetime
import json
from typing import TYPE_CHECKING, Any, Iterable, Optional

import sqlalchemy as sa

import ckan.model as model
import ckan.plugins.toolkit as tk

from ckanext.webhooks import addresses, examples, limits, verification
from ckanext.webhooks.logic import dictization, queries, schema
from ckanext.webhooks.pipeline import listening
from ckanext.webhooks.model import (
    Attempt, Message, Hook, Secret, new_secret, utcnow,
    MESSAGE_PENDING, MESSAGE_SUCCEEDED, MESSAGE_FAILED,
    STATUS_ACTIVE, STATUS_DISABLED, STATUS_PENDING, TYPE_PING, TYPE_VERIFY,
    REASON_DISABLED_BY_OWNER,
)

if TYPE_CHECKING:
    from ckan.types import Context, DataDict, ErrorDict

ROTATION_OVERLAP = datetime.timedelta(hours=24)
# secrets that sign at once: the current one and those retired within
# ROTATION_OVERLAP
MAX_SIGNING_SECRETS = 3
# a pending hook's challenge: at most this many times, and on request
# (webhook_ping) at most once in this interval
MAX_CHALLENGES = 3
CHALLENGE_INTERVAL = datetime.timedelta(minutes=10)


def _iso(moment: Optional[datetime.datetime]) -> Optional[str]:
    return moment.isoformat() if moment else None


def _caller(context: Context) -> Optional[model.User]:
    user = context.get("auth_user_obj")
    if user is None and context.get("user"):
        user = model.User.get(context["user"])
    if user is None or getattr(user, "is_anonymous", False):
        return None
    return user


def _hook_or_404(hook_id: str) -> Hook:
    hook = Hook.get(hook_id)
    if hook is None:
        raise tk.ObjectNotFound(tk._("Webhook not found"))
    return hook


def _locked(hook: Hook) -> Hook:
    """The hook, re-read and locked until the transaction ends, so two
    requests cannot both pass a limit kept on the hook."""
    try:
        model.Session.refresh(hook, with_for_update=True)
    except sa.exc.InvalidRequestError:  # deleted meanwhile
        raise tk.ObjectNotFound(tk._("Webhook not found")) from None
    return hook


def _finish(context: Context) -> None:
    if not context.get("defer_commit"):
        model.Session.commit()


def _visible():
    """Messages their hook's owner may know of. A message of an event has
    a body only once a worker judged that the owner may see the event;
    until then nothing about it is shown (not even that it exists).
    Pings, challenges and test deliveries have no event to judge."""
    return sa.or_(Message.body.isnot(None), Message.event_id.is_(None))


def _statistics(hook_ids: list[str]) -> dict[str, dict[str, int]]:
    rows = model.Session.query(
        Message.hook_id, Message.status, sa.func.count()
    ).filter(Message.hook_id.in_(hook_ids), _visible()) \
        .group_by(Message.hook_id, Message.status).all()
    stats: dict[str, dict[str, int]] = {
        h: {MESSAGE_PENDING: 0, MESSAGE_SUCCEEDED: 0, MESSAGE_FAILED: 0}
        for h in hook_ids}
    for hook_id, status, count in rows:
        stats[hook_id][status] = count
    return stats


def _retiring(hook_ids: list[str]) -> dict[str, datetime.datetime]:
    """Per hook, until when its retired secrets still sign (the latest)."""
    if not hook_ids:
        return {}
    return dict(model.Session.query(
        Secret.hook_id, sa.func.max(Secret.expires)).filter(
        Secret.hook_id.in_(hook_ids), Secret.expires > utcnow()
    ).group_by(Secret.hook_id).all())


def _hook_dict(hook: Hook, stats: dict[str, int],
               retiring_until: Optional[datetime.datetime] = None
               ) -> dict[str, Any]:
    return {
        "id": hook.id,
        "topics": list(hook.topics),
        "topic": hook.topic,
        "address": hook.address,
        "filters": hook.filters,
        "description": hook.description,
        "status": hook.status,
        "status_reason": hook.status_reason,
        "secret": hook.secret,
        "previous_secret_expires": _iso(retiring_until),
        "created": _iso(hook.created),
        "verified": _iso(hook.verified),
        "owned": hook.owner_id is not None,
        "deliveries": stats,
        "last_success": _iso(hook.last_success),
        "failing_since": _iso(hook.failing_since),
        "consecutive_client_errors": hook.client_errors or 0,
    }


def _shown_hook(hook: Hook) -> dict[str, Any]:
    return _hook_dict(hook, _statistics([hook.id])[hook.id],
                      _retiring([hook.id]).get(hook.id))


def _shown(hook: Hook, context: Context) -> dict[str, Any]:
    """The hook as webhook_show returns it: its row, health, what its
    filters name (for the caller) and its challenge's state."""
    shown = _shown_hook(hook)
    shown.update(dictization.hook_extras(
        hook, queries.health([hook.id])[hook.id]))
    shown.update(filter_titles=dictization.filter_titles(hook, context),
                 challenges_sent=hook.challenges_sent or 0,
                 next_challenge=_iso(_next_challenge(hook)))
    return shown


def _viewer_context(user: Optional[model.User]) -> Context:
    # ckan.model is what the Model protocol describes, but mypy holds a
    # module to a protocol's classmethods strictly
    return {"model": model,  # type: ignore[typeddict-item]
            "session": model.Session,
            "user": user.name if user else "", "auth_user_obj": user,
            "ignore_auth": False}


def _resolve_filters(data: dict[str, Any],
                     viewers: Iterable[Optional[model.User]]
                     ) -> dict[str, str]:
    """Filter ids from ids or names; unknown and unseeable are refused alike.

    Each of ``viewers`` (the caller, and the owner of an existing hook) must
    be able to see a dataset or resource a filter names.
    """
    resolved: dict[str, str] = {}
    errors: ErrorDict = {}
    viewers = list(viewers)

    def can_read_dataset(pkg: model.Package) -> bool:
        try:
            for user in viewers:
                tk.check_access("package_show", _viewer_context(user),
                                {"id": pkg.id})
            return True
        except tk.NotAuthorized:
            return False

    if data.get("dataset"):
        pkg = model.Package.get(data["dataset"])
        if pkg is not None and pkg.state != "deleted" \
                and can_read_dataset(pkg):
            resolved["dataset"] = pkg.id
        else:
            errors["dataset"] = [tk._("Dataset not found")]

    for name, is_org, message in (
            ("organization", True, tk._("Organization not found")),
            ("group", False, tk._("Group not found"))):
        if data.get(name):
            group = model.Group.get(data[name])
            if group is not None and group.state == "active" \
                    and bool(group.is_organization) == is_org:
                resolved[name] = group.id
            else:
                errors[name] = [message]

    if data.get("resource"):
        resource = model.Session.get(model.Resource, data["resource"])
        pkg = resource.package if resource is not None else None
        if resource is not None and resource.state == "active" \
                and pkg is not None and pkg.state != "deleted" \
                and can_read_dataset(pkg):
            resolved["resource"] = resource.id
        else:
            errors["resource"] = [tk._("Resource not found")]

    if errors:
        raise tk.ValidationError(errors)
    return resolved


def _address_refusal(address: str) -> ErrorDict:
    refusal = addresses.refusal(address, unresolvable_ok=True)
    return {"address": [refusal]} if refusal else {}


def _checked(address: Optional[str], filters: dict[str, Any],
             viewers: Iterable[Optional[model.User]]) -> dict[str, str]:
    """The resolved filters; refuses a bad address and bad filters in one
    ValidationError."""
    errors: ErrorDict = _address_refusal(address) \
        if address is not None else {}
    resolved: dict[str, str] = {}
    try:
        resolved = _resolve_filters(filters, viewers)
    except tk.ValidationError as e:
        errors.update(e.error_dict)
    if errors:
        raise tk.ValidationError(errors)
    return resolved


def _with_every_error(error: tk.ValidationError, data_dict: Any,
                      viewers: Iterable[Optional[model.User]],
                      old_address: Optional[str] = None
                      ) -> tk.ValidationError:
    """``error`` of the schema, with the address and the filters judged too
    (unless they are among its fields), so a form shows every mistake in
    one round instead of one kind after another."""
    if not isinstance(data_dict, dict):
        return error
    errors = dict(error.error_dict)
    given = {name: value for name, value in data_dict.items()
             if name in schema.FILTERS + ("address",) and name not in errors
             and isinstance(value, str) and value.strip()}
    address = given.pop("address", None)
    try:
        _checked(address if address != old_address else None, given,
                 viewers)
    except tk.ValidationError as more:
        errors.update(more.error_dict)
    return tk.ValidationError(errors)


def _check_new_address_limits(address: str,
                              user: Optional[model.User],
                              hook_id: Optional[str] = None) -> None:
    """A new hook, or an existing one given a new address: the cap per
    address and the creation rate, so an address change is no way around
    either (a hook moving leaves itself out of the count)."""
    limits.check_address_cap(address, hook_id=hook_id)
    limits.check_creation_rate(user)


def _new_message(hook: Hook, type_: str, data: dict[str, Any],
                 test: bool = False) -> Message:
    message = Message(hook_id=hook.id, type=type_, data=data,
                       status=MESSAGE_PENDING, attempts=0, test=test)
    model.Session.add(message)
    return message


def _wake_workers() -> None:
    """The workers look for due messages when this transaction commits (and
    by themselves every second in any case)."""
    listening.notify_wake()


def _commit_and_deliver(context: Context, message: Message) -> None:
    """Commit, and the workers are woken for the message as it commits
    (with ``defer_commit``, when the caller commits)."""
    _wake_workers()
    if context.get("defer_commit"):
        model.Session.flush()
        return
    model.Session.commit()


def _verify_intent() -> bool:
    return tk.config.get("ckanext.webhooks.verify_intent")


def _call_off(hook: Hook, reason: str) -> None:
    """Pings and challenges still waiting are not sent (the address changed
    or the hook was disabled): they would reach an address that did not
    agree to them, and a successful ping would enable the hook again. One
    whose attempt is in flight is taken back from its worker: the outcome
    of that attempt is logged, and changes neither it nor the hook."""
    model.Session.query(Message).filter(
        Message.hook_id == hook.id, Message.status == MESSAGE_PENDING,
        Message.type.in_([TYPE_PING, TYPE_VERIFY]),
    ).update({"status": MESSAGE_FAILED, "error": reason,
              "lease_id": None, "lease_until": None},
             synchronize_session=False)


def _new_challenge(hook: Hook) -> Message:
    """A new verification challenge; one still waiting is superseded."""
    _call_off(hook, "superseded by a new challenge")
    hook.challenges_sent = (hook.challenges_sent or 0) + 1
    hook.last_challenge = utcnow()
    return _new_message(hook, TYPE_VERIFY,
                        {"challenge": verification.challenge_for(
                            hook.id, hook.address)})


def _next_challenge(hook: Hook) -> Optional[datetime.datetime]:
    """When webhook_ping may send a pending hook's challenge again (now or
    later); None when it may not (not pending, or all were sent)."""
    if hook.status != STATUS_PENDING or \
            (hook.challenges_sent or 0) >= MAX_CHALLENGES:
        return None
    if hook.last_challenge is None:
        return utcnow()
    return max(utcnow(), hook.last_challenge + CHALLENGE_INTERVAL)


def _may_challenge_again(hook: Hook) -> bool:
    """At most MAX_CHALLENGES in all, at most one per CHALLENGE_INTERVAL."""
    return (hook.challenges_sent or 0) < MAX_CHALLENGES and (
        hook.last_challenge is None
        or hook.last_challenge <= utcnow() - CHALLENGE_INTERVAL)


def _latest_challenge(hook: Hook) -> Optional[Message]:
    return model.Session.query(Message).filter(
        Message.hook_id == hook.id, Message.type == TYPE_VERIFY,
    ).order_by(Message.created.desc(), Message.id.desc()).first()


def _not_while_pending() -> tk.ValidationError:
    return tk.ValidationError({"status": [tk._(
        "This webhook is waiting for its receiver to answer the "
        "verification challenge, and gets nothing else until then. "
        "webhook_ping sends the challenge again (at most once every 10 "
        "minutes, 3 times in all).")]})


def _not_while_disabled() -> tk.ValidationError:
    return tk.ValidationError({"status": [tk._(
        "This webhook is disabled; enable it first.")]})


def webhook_create(context: Context, data_dict: DataDict) -> str:
    """Register a webhook. Anyone may, unless the site requires login.

    :param topic: what to be told about: ``dataset/create``,
        ``dataset/update``, ``dataset/delete``, ``resource/create``,
        ``resource/update``, ``resource/delete``, ``dataset/*`` or
        ``resource/*`` (give ``topic`` or ``topics``)
    :type topic: string
    :param topics: several of these
    :type topics: list of strings
    :param address: the http(s) URL that receives the deliveries
    :type address: string
    :param dataset: only events of this dataset and its resources (id or name)
    :type dataset: string, optional
    :param organization: only events of this organization's datasets and
        their resources (id or name)
    :type organization: string, optional
    :param group: only events of this group's datasets (id or name)
    :type group: string, optional
    :param resource: only events of this resource (id)
    :type resource: string, optional
    :param description: what the hook is for, at most 200 characters
    :type description: string, optional

    :returns: the new hook's id; keep it, it is the only way to manage the hook
    :rtype: string
    """
    tk.check_access("webhook_create", context, data_dict)
    try:
        data = schema.load(schema.HookCreateSchema, data_dict)
    except tk.ValidationError as e:
        raise _with_every_error(e, data_dict, [_caller(context)]) from None
    user = _caller(context)
    filters = _checked(data["address"], data, [user])
    _check_new_address_limits(data["address"], user)

    verify = _verify_intent()
    hook = Hook(
        topics=schema.topics_of(data), address=data["address"],
        description=data.get("description"),
        owner_id=user.id if user else None,
        status=STATUS_PENDING if verify else STATUS_ACTIVE,
        filter_dataset=filters.get("dataset"),
        filter_organization=filters.get("organization"),
        filter_group=filters.get("group"),
        filter_resource=filters.get("resource"),
        client_errors=0, challenges_sent=0,
    )
    model.Session.add(hook)
    model.Session.flush()
    if verify:
        _commit_and_deliver(context, _new_challenge(hook))
    else:
        # nothing to verify: as good as verified (enabling it again later
        # makes it active, not pending)
        hook.verified = hook.created
        _finish(context)
    return hook.id


@tk.side_effect_free
def webhook_show(context: Context, data_dict: DataDict) -> dict[str, Any]:
    """Show a webhook to whoever knows its id.

    :param id: the hook's id
    :type id: string

    :returns: the hook: ``id``, ``topics`` (a list), ``topic`` (the only
        topic, or null when there are several), ``address``, ``filters``,
        ``description``, ``status`` (``pending``, ``active`` or
        ``disabled``), ``status_reason``, ``secret``, ``created``,
        ``verified``, and delivery statistics (``deliveries`` counts by
        status, ``last_success``, ``last_failure``, ``failing_since``,
        ``consecutive_client_errors``), ``health`` (for ``last_24h`` and
        ``last_7d``: ``attempts``, ``succeeded``, ``success_rate``,
        ``p50_ms`` and ``p95_ms`` of the attempts' durations; and
        ``last_success`` and ``last_failure`` of its attempts),
        ``filter_titles`` (what each filter names, for the caller),
        ``challenges_sent`` and ``next_challenge`` (when a pending hook's
        challenge may be sent again; null when it may not) and
        ``recover_available`` (when ``webhook_recover`` works again; null:
        now)
    :rtype: dictionary
    """
    tk.check_access("webhook_show", context, data_dict)
    data = schema.load(schema.HookIdSchema, data_dict)
    return _shown(_hook_or_404(data["id"]), context)


def webhook_update(context: Context, data_dict: DataDict) -> dict[str, Any]:
    """Change a webhook; give only what changes.

    A new address makes the hook ``pending`` and sends it a new
    verification challenge (when the site verifies intent; a hook its
    owner disabled stays disabled until enabled), and counts against the
    limits on creating hooks. ``enabled:
    false`` pauses the hook (``disabled``, "disabled by its owner"):
    it gets no events, pings or challenges. ``enabled: true`` makes a
    disabled hook ``active`` again, or ``pending`` (with a new challenge)
    if its receiver never answered one.

    :param id: the hook's id
    :type id: string
    :param address: a new callback address
    :type address: string, optional
    :param topic: the hook's only topic from now on (or ``topics``)
    :type topic: string, optional
    :param topics: the hook's topics from now on
    :type topics: list of strings, optional
    :param dataset: a new dataset filter (id or name); null or "" removes it
    :type dataset: string, optional
    :param organization: likewise for the organization filter
    :type organization: string, optional
    :param group: likewise for the group filter
    :type group: string, optional
    :param resource: likewise for the resource filter (id)
    :type resource: string, optional
    :param description: at most 200 characters; null or "" removes it
    :type description: string, optional
    :param enabled: false pauses the hook, true resumes it
    :type enabled: bool, optional

    :returns: the hook, as ``webhook_show`` returns it
    :rtype: dictionary
    """
    tk.check_access("webhook_update", context, data_dict)
    try:
        data = schema.load(schema.HookUpdateSchema, data_dict)
    except tk.ValidationError as e:
        # the hook's owner judges the filters; a bad id is bad input only
        hook = Hook.get(data_dict.get("id")) if isinstance(
            data_dict, dict) and "id" not in e.error_dict else None
        if hook is None:
            raise
        raise _with_every_error(e, data_dict, _caller_and_owner(
            _caller(context), hook), hook.address) from None
    hook = _hook_or_404(data["id"])
    user = _caller(context)
    new_address = data["address"] \
        if data.get("address", hook.address) != hook.address else None
    filters = _checked(new_address, data, _caller_and_owner(user, hook))
    if new_address is not None:
        _check_new_address_limits(new_address, user, hook.id)
    # locked only now: the checks above may wait for DNS
    _locked(hook)

    topics = schema.topics_of(data)
    if topics is not None:
        hook.topics = topics
    for name in schema.FILTERS:
        if name in data:
            setattr(hook, "filter_" + name, filters.get(name))
    if "description" in data:
        hook.description = data["description"]

    was_pending = hook.status == STATUS_PENDING
    if new_address is not None:
        hook.address = new_address
        if _verify_intent():
            _address_unverified(hook)
    if data.get("enabled") is False:
        _disable_by_owner(hook)
        # a sysadmin's pause shows as theirs (dictization.hook_extras)
        hook.disabled_by = user.id if user is not None and user.sysadmin \
            and user.id != hook.owner_id else None
    elif data.get("enabled") is True and hook.status == STATUS_DISABLED:
        _enable(hook)
    if hook.status == STATUS_PENDING and (
            not was_pending or new_address is not None) \
            and _may_challenge_again(hook):
        _commit_and_deliver(context, _new_challenge(hook))
    else:
        _finish(context)
    return _shown(hook, context)


def _caller_and_owner(user: Optional[model.User],
                      hook: Hook) -> list[Optional[model.User]]:
    """Who must see what a hook's filters name: the caller, and the owner
    the hook acts for (an anonymous visitor for a hook made without
    login)."""
    if (user.id if user else None) == hook.owner_id:
        return [user]
    owner = model.Session.get(model.User, hook.owner_id) \
        if hook.owner_id else None
    return [user, owner]


def _address_unverified(hook: Hook) -> None:
    """A new address answers a challenge of its own: the hook is pending
    (a hook its owner disabled stays disabled until enabled)."""
    _call_off(hook, "the address changed")
    # the old address's challenges do not count against the new one's
    model.Session.query(Message).filter(
        Message.hook_id == hook.id, Message.type == TYPE_VERIFY,
    ).delete(synchronize_session=False)
    hook.verified = None
    hook.challenges_sent = 0
    hook.last_challenge = None
    if hook.status == STATUS_ACTIVE or hook.status == STATUS_DISABLED \
            and hook.status_reason != REASON_DISABLED_BY_OWNER:
        hook.status, hook.status_reason = STATUS_PENDING, None


def _disable_by_owner(hook: Hook) -> None:
    _call_off(hook, "the webhook was disabled")
    hook.status, hook.status_reason = STATUS_DISABLED, REASON_DISABLED_BY_OWNER


def _enable(hook: Hook) -> None:
    """Active again, or pending when its receiver never answered a
    challenge."""
    if _verify_intent() and hook.verified is None:
        hook.status, hook.status_reason = STATUS_PENDING, None
        return
    hook.status, hook.status_reason = STATUS_ACTIVE, None
    # a fresh start: the failures that disabled it are history
    hook.failing_since = None
    hook.consecutive_failures = 0
    hook.circuit_until = None


def webhook_delete(context: Context, data_dict: DataDict) -> None:
    """Delete a webhook, with its delivery log.

    :param id: the hook's id
    :type id: string
    """
    tk.check_access("webhook_delete", context, data_dict)
    data = schema.load(schema.HookIdSchema, data_dict)
    hook = _hook_or_404(data["id"])
    model.Session.delete(hook)
    _finish(context)


@tk.side_effect_free
def webhook_list(context: Context,
                 data_dict: DataDict) -> list[dict[str, Any]]:
    """The caller's own webhooks (a sysadmin's: everyone's), newest first.

    :param limit: at most this many hooks (default 100, at most 1000)
    :type limit: int, optional
    :param offset: skip this many hooks first (default 0)
    :type offset: int, optional
    :param mine: only the caller's own hooks, also for sysadmins
        (default false)
    :type mine: bool, optional
    :param q: only hooks whose id starts with it, whose address or
        description holds it (in any case), or whose owner has this user
        name
    :type q: string, optional

    :returns: the hooks, as ``webhook_show`` returns them (without
        ``filter_titles`` and the challenge's state), for sysadmins with
        ``owner`` (the owner's user name, null for hooks created without
        login)
    :rtype: list of dictionaries
    """
    tk.check_access("webhook_list", context, data_dict)
    data = schema.load(schema.HookListSchema, data_dict)
    user = _caller(context)
    if user is None:
        raise tk.NotAuthorized(tk._("You must be logged in"))
    query = model.Session.query(Hook)
    if data["mine"] or not user.sysadmin:
        query = query.filter(Hook.owner_id == user.id)
    query = queries.matching_hooks(query, data["q"])
    hooks = query.order_by(Hook.created.desc(), Hook.id) \
        .offset(data["offset"]).limit(data["limit"]).all()
    stats = _statistics([h.id for h in hooks])
    health = queries.health([h.id for h in hooks])
    retiring = _retiring([h.id for h in hooks])
    shown = [dict(_hook_dict(h, stats[h.id], retiring.get(h.id)),
                  **dictization.hook_extras(h, health[h.id])) for h in hooks]
    if user.sysadmin:
        owners = queries.owner_names(hooks)
        for row, h in zip(shown, hooks, strict=True):
            row["owner"] = owners.get(h.owner_id) if h.owner_id else None
    return shown


def webhook_ping(context: Context, data_dict: DataDict) -> str:
    """Send a ``webhook/ping`` delivery (``data`` is ``{}``), or with
    ``topic`` a test delivery of that type: an example ``data`` (a real
    public dataset, resource, organization or group, or a made-up one) and
    ``"test": true`` in the body.

    A successful ping re-enables a hook disabled because its deliveries
    kept failing. A hook its owner disabled gets no pings; enable it first.

    On a ``pending`` hook it sends the verification challenge again
    instead, at most once every 10 minutes and 3 times in all; otherwise it
    sends nothing and returns the latest challenge's message id.

    :param id: the hook's id
    :type id: string
    :param topic: an event type the hook receives, e.g. ``dataset/update``
    :type topic: string, optional

    :returns: the message id of the ping, test delivery or challenge
    :rtype: string
    """
    tk.check_access("webhook_ping", context, data_dict)
    data = schema.load(schema.PingSchema, data_dict)
    hook = _hook_or_404(data["id"])
    if hook.status == STATUS_PENDING:
        return _challenge_again(context, _locked(hook))
    if hook.status == STATUS_DISABLED and \
            hook.status_reason == REASON_DISABLED_BY_OWNER:
        raise _not_while_disabled()
    topic = data["topic"]
    if topic is None:
        message = _new_message(hook, TYPE_PING, {})
    else:
        if schema.is_wildcard(topic) or not schema.matches(hook.topics,
                                                           topic):
            raise tk.ValidationError({"topic": [tk._(
                "Choose an event type this webhook receives: {0}").format(
                ", ".join(_received_types(hook.topics)))]})
        if hook.status != STATUS_ACTIVE:
            raise _not_while_disabled()
        message = _new_message(hook, topic,
                               examples.example_data(topic, hook), test=True)
    _commit_and_deliver(context, message)
    return message.id


def _received_types(topics: list[str]) -> list[str]:
    return [t for t in schema.TOPICS if not schema.is_wildcard(t)
            and schema.matches(topics, t)]


def _challenge_again(context: Context, hook: Hook) -> str:
    """webhook_ping on a pending hook: the challenge, if it may go again."""
    if _may_challenge_again(hook):
        message = _new_challenge(hook)
        _commit_and_deliver(context, message)
        return message.id
    latest = _latest_challenge(hook)
    _finish(context)
    if latest is None:
        raise tk.ValidationError({"status": [tk._(
            "This webhook has had all its verification challenges.")]})
    return latest.id


def _delivery_dict(m: Message) -> dict[str, Any]:
    return {
        "id": m.id,
        "type": m.type,
        "status": m.status,
        "test": bool(m.test),
        "attempts": m.attempts,
        "response_status": m.response_status,
        "error": m.error,
        "duration_ms": m.duration_ms,
        "created": _iso(m.created),
        "last_attempt": _iso(m.last_attempt),
        "next_attempt": _iso(m.next_attempt)
        if m.status == MESSAGE_PENDING else None,
    }


@tk.side_effect_free
def webhook_delivery_list(context: Context,
                          data_dict: DataDict) -> list[dict[str, Any]]:
    """Recent deliveries of a hook, newest first.

    Messages of events show up once a worker has judged that the hook's
    owner may see the event (at its first attempt).

    :param id: the hook's id
    :type id: string
    :param limit: at most this many (default 20, at most 100)
    :type limit: int, optional
    :param offset: skip this many first (default 0)
    :type offset: int, optional
    :param status: only deliveries in this status: ``pending``,
        ``succeeded`` or ``failed``
    :type status: string, optional
    :param type: only deliveries of this type: a topic (a wildcard such
        as ``dataset/*``: every type it covers), ``webhook/ping`` or
        ``webhook/verify``
    :type type: string, optional
    :param since: only deliveries created at or after this ISO 8601 time
        (UTC when it has no offset)
    :type since: string, optional
    :param until: only deliveries created before this ISO 8601 time
    :type until: string, optional

    :returns: deliveries: ``id`` (the message id, sent as ``webhook-id``),
        ``type``, ``status`` (``pending``, ``succeeded`` or ``failed``),
        ``test``, ``attempts``, ``response_status``, ``error``,
        ``duration_ms``, ``created``, ``last_attempt``, ``next_attempt``
    :rtype: list of dictionaries
    """
    tk.check_access("webhook_delivery_list", context, data_dict)
    data = schema.load(schema.DeliveryListSchema, data_dict)
    hook = _hook_or_404(data["id"])
    return [_delivery_dict(m)
            for m in queries.deliveries(hook.id, _visible(), data)]


def _message_or_404(hook: Hook, message_id: str) -> Message:
    message = model.Session.query(Message).filter(
        Message.id == message_id, Message.hook_id == hook.id,
        _visible()).one_or_none()
    if message is None:
        raise tk.ObjectNotFound(tk._("Delivery not found"))
    return message


@tk.side_effect_free
def webhook_delivery_show(context: Context,
                          data_dict: DataDict) -> dict[str, Any]:
    """One delivery of a hook, with its payload and every attempt.

    :param id: the hook's id
    :type id: string
    :param delivery_id: the message id
    :type delivery_id: string

    :returns: the fields of ``webhook_delivery_list``, ``payload`` (the body
        as last sent, parsed; null before the first attempt) and
        ``attempt_log``: every attempt (at most the latest 50), oldest
        first, each with ``at``, ``duration_ms``, ``response_status``,
        ``error``, ``request_headers`` (as sent, an object; never the
        secret) and, while the hook is ``active``,
        ``response_status_line``, ``response_headers`` (an object; about
        the first 8 KB of them, ``response_headers_truncated`` says when
        more came) and ``response_body`` (the first 2,048 characters of
        the answer, as text)
    :rtype: dictionary
    """
    tk.check_access("webhook_delivery_show", context, data_dict)
    data = schema.load(schema.DeliverySchema, data_dict)
    hook = _hook_or_404(data["id"])
    message = _message_or_404(hook, data["delivery_id"])
    active = hook.status == STATUS_ACTIVE
    attempts = model.Session.query(Attempt).filter(
        Attempt.message_id == message.id).order_by(Attempt.id).all()
    return dict(
        _delivery_dict(message),
        payload=json.loads(message.body) if message.body else None,
        attempt_log=[dictization.attempt(a, active) for a in attempts])


def _only_for_active(hook: Hook) -> None:
    if hook.status == STATUS_PENDING:
        raise _not_while_pending()
    if hook.status != STATUS_ACTIVE:
        raise _not_while_disabled()


def _attempt_now(ids: list[str]) -> None:
    """These messages are due now. A message whose attempt is in flight
    keeps its lease, and gets another attempt once that one ends, whatever
    its outcome (the worker sees ``redeliveries`` change)."""
    model.Session.query(Message).filter(Message.id.in_(ids)).update(
        {"status": MESSAGE_PENDING, "next_attempt": utcnow(),
         "redeliveries": Message.redeliveries + 1},
        synchronize_session=False)


def webhook_redeliver(context: Context, data_dict: DataDict) -> str:
    """Deliver a message of this hook again, with the same message id; a
    pending one is attempted now ("retry now"). Only for ``active`` hooks.

    :param id: the hook's id
    :type id: string
    :param delivery_id: the message id, from ``webhook_delivery_list``
    :type delivery_id: string

    :returns: the message id
    :rtype: string
    """
    tk.check_access("webhook_redeliver", context, data_dict)
    data = schema.load(schema.DeliverySchema, data_dict)
    # the hook's row before its message's, as everywhere (no deadlock
    # with a worker recording the message's outcome)
    hook = _locked(_hook_or_404(data["id"]))
    message = _message_or_404(hook, data["delivery_id"])
    _only_for_active(hook)
    _attempt_now([message.id])
    _commit_and_deliver(context, message)
    return message.id


def webhook_recover(context: Context, data_dict: DataDict) -> int:
    """Deliver every failed delivery since a time again, oldest first, with
    the same message ids. Only for ``active`` hooks, and once per hook per
    ``ckanext.webhooks.recover_interval`` seconds.

    Access is judged again at each attempt, as always: a message of an
    event the owner may no longer see is not sent.

    :param id: the hook's id
    :type id: string
    :param since: an ISO 8601 time (UTC when it has no offset)
    :type since: string

    :returns: how many deliveries are delivered again
    :rtype: int
    """
    tk.check_access("webhook_recover", context, data_dict)
    data = schema.load(schema.RecoverSchema, data_dict)
    hook = _locked(_hook_or_404(data["id"]))
    _only_for_active(hook)
    now = utcnow()
    interval = datetime.timedelta(
        seconds=tk.config.get("ckanext.webhooks.recover_interval"))
    if hook.last_recover is not None and hook.last_recover > now - interval:
        minutes = max(1, int(
            (hook.last_recover + interval - now).total_seconds() // 60))
        _finish(context)
        raise tk.ValidationError({"rate_limit": [tk._(
            "Failed deliveries of this webhook were recovered a moment "
            "ago; try again in {0} minutes").format(minutes)]})
    failed = model.Session.query(
        Message.id, _visible().label("visible")).filter(
        Message.hook_id == hook.id, Message.status == MESSAGE_FAILED,
        Message.type != TYPE_VERIFY, Message.created >= data["since"],
    ).order_by(Message.created, Message.id).all()
    ids = [row.id for row in failed]
    if ids:
        _attempt_now(ids)
        hook.last_recover = now
    model.Session.flush()
    if not context.get("defer_commit"):
        if ids:
            _wake_workers()
        model.Session.commit()
    # messages not yet judged for access go again too, uncounted: the
    # count must not tell of events the owner may not see
    return sum(1 for row in failed if row.visible)


def webhook_rotate_secret(context: Context, data_dict: DataDict) -> str:
    """Give the hook a new secret; the old one keeps signing for 24 hours.

    While both are valid every delivery carries two signatures, so a
    receiver can switch to the new secret without losing messages. Every
    rotation keeps its own 24 hours: rotated again within them, the hook
    signs with all three secrets. A third rotation while two retired
    secrets still sign is refused.

    :param id: the hook's id
    :type id: string

    :returns: the new secret
    :rtype: string
    """
    tk.check_access("webhook_rotate_secret", context, data_dict)
    data = schema.load(schema.HookIdSchema, data_dict)
    # locked: two rotations at once must not both retire the same secret
    hook = _locked(_hook_or_404(data["id"]))
    now = utcnow()
    signing = model.Session.query(Secret.expires).filter(
        Secret.hook_id == hook.id, Secret.expires > now
    ).order_by(Secret.expires).all()
    if len(signing) + 1 >= MAX_SIGNING_SECRETS:
        _finish(context)
        raise tk.ValidationError({"secret": [tk._(
            "This webhook's secret was rotated twice in the last 24 hours "
            "and both earlier secrets still sign its deliveries; rotate "
            "again after {0} UTC").format(
                signing[0].expires.replace(microsecond=0).isoformat())]})
    model.Session.add(Secret(hook_id=hook.id, secret=hook.secret,
                             retired=now, expires=now + ROTATION_OVERLAP))
    hook.secret = new_secret()
    _finish(context)
    return hook.secret
