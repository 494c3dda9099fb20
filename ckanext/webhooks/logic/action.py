"""The webhook actions: ``webhook_create``, ``webhook_show`` and friends."""
from __future__ import annotations

import datetime
from typing import Any, Optional

import sqlalchemy as sa

import ckan.model as model
import ckan.plugins.toolkit as tk

from ckanext.webhooks import addresses, jobs, limits, verification
from ckanext.webhooks.logic import schema
from ckanext.webhooks.model import (
    Delivery, Hook, new_secret, utcnow,
    DELIVERY_PENDING, DELIVERY_SUCCEEDED, DELIVERY_FAILED,
    STATUS_ACTIVE, STATUS_PENDING,
)

ROTATION_OVERLAP = datetime.timedelta(hours=24)


def _iso(moment: Optional[datetime.datetime]) -> Optional[str]:
    return moment.isoformat() if moment else None


def _caller(context) -> Optional[model.User]:
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


def _statistics(hook_ids: list[str]) -> dict[str, dict[str, int]]:
    rows = model.Session.query(
        Delivery.hook_id, Delivery.status, sa.func.count()
    ).filter(Delivery.hook_id.in_(hook_ids)) \
        .group_by(Delivery.hook_id, Delivery.status).all()
    stats: dict[str, dict[str, int]] = {
        h: {DELIVERY_PENDING: 0, DELIVERY_SUCCEEDED: 0, DELIVERY_FAILED: 0}
        for h in hook_ids}
    for hook_id, status, count in rows:
        stats[hook_id][status] = count
    return stats


def _hook_dict(hook: Hook, stats: dict[str, int]) -> dict[str, Any]:
    return {
        "id": hook.id,
        "topics": list(hook.topics),
        "topic": hook.topic,
        "address": hook.address,
        "filters": hook.filters,
        "status": hook.status,
        "status_reason": hook.status_reason,
        "secret": hook.secret,
        "previous_secret_expires": _iso(hook.previous_secret_expires)
        if hook.previous_secret_expires
        and hook.previous_secret_expires > utcnow() else None,
        "created": _iso(hook.created),
        "owned": hook.owner_id is not None,
        "deliveries": stats,
        "last_success": _iso(hook.last_success),
        "failing_since": _iso(hook.failing_since),
        "consecutive_client_errors": hook.client_errors or 0,
    }


def _viewer_context(user: Optional[model.User]) -> dict[str, Any]:
    return {"model": model, "session": model.Session,
            "user": user.name if user else "", "auth_user_obj": user,
            "ignore_auth": False}


def _resolve_filters(data: dict[str, Any],
                     user: Optional[model.User]) -> dict[str, str]:
    """Filter ids from ids or names; unknown and unseeable are refused alike."""
    resolved: dict[str, str] = {}
    errors: dict[str, list[str]] = {}

    def can_read_dataset(pkg: model.Package) -> bool:
        try:
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


def _new_message(hook: Hook, type_: str, data: dict[str, Any]) -> Delivery:
    message = Delivery(hook_id=hook.id, type=type_, data=data,
                       status=DELIVERY_PENDING, attempts=0)
    model.Session.add(message)
    return message


def _commit_and_deliver(context, message: Delivery) -> None:
    """Commit, then ask a worker for the message; with ``defer_commit`` the
    caller commits and the worker's sweep finds the message."""
    if context.get("defer_commit"):
        model.Session.flush()
        return
    model.Session.commit()
    jobs.enqueue_delivery([message.id])


def webhook_create(context, data_dict) -> str:
    """Register a webhook. Anyone may, unless the site requires login.

    :param topic: what to be told about: ``dataset/create``,
        ``dataset/update``, ``dataset/delete``, ``resource/create``,
        ``resource/update``, ``resource/delete``, ``dataset/*`` or
        ``resource/*``
    :type topic: string
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

    :returns: the new hook's id; keep it, it is the only way to manage the hook
    :rtype: string
    """
    tk.check_access("webhook_create", context, data_dict)
    data = schema.load(schema.HookCreateSchema, data_dict)
    refusal = addresses.refusal(data["address"], unresolvable_ok=True)
    if refusal:
        raise tk.ValidationError({"address": [refusal]})
    user = _caller(context)
    filters = _resolve_filters(data, user)
    limits.check_address_cap(data["address"])
    limits.check_creation_rate(user)

    verify = tk.config.get("ckanext.webhooks.verify_intent")
    hook = Hook(
        topics=[data["topic"]], address=data["address"],
        owner_id=user.id if user else None,
        status=STATUS_PENDING if verify else STATUS_ACTIVE,
        filter_dataset=filters.get("dataset"),
        filter_organization=filters.get("organization"),
        filter_group=filters.get("group"),
        filter_resource=filters.get("resource"),
        client_errors=0,
    )
    model.Session.add(hook)
    model.Session.flush()
    if verify:
        _commit_and_deliver(context, _new_message(
            hook, jobs.TYPE_VERIFY,
            {"challenge": verification.challenge_for(hook.id)}))
    elif not context.get("defer_commit"):
        model.Session.commit()
    return hook.id


@tk.side_effect_free
def webhook_show(context, data_dict) -> dict[str, Any]:
    """Show a webhook to whoever knows its id.

    :param id: the hook's id
    :type id: string

    :returns: the hook: ``id``, ``topic``, ``address``, ``filters``,
        ``status`` (``pending``, ``active`` or ``disabled``),
        ``status_reason``, ``secret``, ``created``, and delivery statistics
        (``deliveries`` counts by status, ``last_success``,
        ``failing_since``, ``consecutive_client_errors``)
    :rtype: dictionary
    """
    tk.check_access("webhook_show", context, data_dict)
    data = schema.load(schema.HookIdSchema, data_dict)
    hook = _hook_or_404(data["id"])
    return _hook_dict(hook, _statistics([hook.id])[hook.id])


def webhook_delete(context, data_dict) -> None:
    """Delete a webhook, with its delivery log.

    :param id: the hook's id
    :type id: string
    """
    tk.check_access("webhook_delete", context, data_dict)
    data = schema.load(schema.HookIdSchema, data_dict)
    hook = _hook_or_404(data["id"])
    model.Session.delete(hook)
    if not context.get("defer_commit"):
        model.Session.commit()


@tk.side_effect_free
def webhook_list(context, data_dict) -> list[dict[str, Any]]:
    """The caller's own webhooks (a sysadmin's: everyone's), newest first.

    :param limit: at most this many hooks (default 100, at most 1000)
    :type limit: int, optional
    :param offset: skip this many hooks first (default 0)
    :type offset: int, optional
    :param mine: only the caller's own hooks, also for sysadmins
        (default false)
    :type mine: bool, optional

    :returns: the hooks, as ``webhook_show`` returns them
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
    hooks = query.order_by(Hook.created.desc(), Hook.id) \
        .offset(data["offset"]).limit(data["limit"]).all()
    stats = _statistics([h.id for h in hooks])
    return [_hook_dict(h, stats[h.id]) for h in hooks]


def webhook_ping(context, data_dict) -> str:
    """Send a ``webhook/ping`` delivery (``data`` is ``{}``) to the hook.

    A successful ping re-enables a disabled hook.

    :param id: the hook's id
    :type id: string

    :returns: the message id of the ping
    :rtype: string
    """
    tk.check_access("webhook_ping", context, data_dict)
    data = schema.load(schema.HookIdSchema, data_dict)
    hook = _hook_or_404(data["id"])
    message = _new_message(hook, jobs.TYPE_PING, {})
    _commit_and_deliver(context, message)
    return message.id


@tk.side_effect_free
def webhook_delivery_list(context, data_dict) -> list[dict[str, Any]]:
    """Recent deliveries of a hook, newest first.

    :param id: the hook's id
    :type id: string
    :param limit: at most this many (default 20, at most 100)
    :type limit: int, optional

    :returns: deliveries: ``id`` (the message id, sent as ``webhook-id``),
        ``type``, ``status`` (``pending``, ``succeeded`` or ``failed``),
        ``attempts``, ``response_status``, ``error``, ``duration_ms``,
        ``created``, ``last_attempt``, ``next_attempt``
    :rtype: list of dictionaries
    """
    tk.check_access("webhook_delivery_list", context, data_dict)
    data = schema.load(schema.DeliveryListSchema, data_dict)
    hook = _hook_or_404(data["id"])
    messages = model.Session.query(Delivery) \
        .filter(Delivery.hook_id == hook.id) \
        .order_by(Delivery.created.desc(), Delivery.id) \
        .limit(data["limit"]).all()
    return [{
        "id": m.id,
        "type": m.type,
        "status": m.status,
        "attempts": m.attempts,
        "response_status": m.response_status,
        "error": m.error,
        "duration_ms": m.duration_ms,
        "created": _iso(m.created),
        "last_attempt": _iso(m.last_attempt),
        "next_attempt": _iso(m.next_attempt)
        if m.status == DELIVERY_PENDING else None,
    } for m in messages]


def webhook_redeliver(context, data_dict) -> str:
    """Deliver a message of this hook again, with the same message id.

    :param id: the hook's id
    :type id: string
    :param delivery_id: the message id, from ``webhook_delivery_list``
    :type delivery_id: string

    :returns: the message id
    :rtype: string
    """
    tk.check_access("webhook_redeliver", context, data_dict)
    data = schema.load(schema.RedeliverSchema, data_dict)
    hook = _hook_or_404(data["id"])
    message = model.Session.get(Delivery, data["delivery_id"])
    if message is None or message.hook_id != hook.id:
        raise tk.ObjectNotFound(tk._("Delivery not found"))
    message.status = DELIVERY_PENDING
    message.next_attempt = utcnow()
    message.lease_until = None
    _commit_and_deliver(context, message)
    return message.id


def webhook_rotate_secret(context, data_dict) -> str:
    """Give the hook a new secret; the old one keeps signing for 24 hours.

    While both are valid every delivery carries two signatures, so a
    receiver can switch to the new secret without losing messages.

    :param id: the hook's id
    :type id: string

    :returns: the new secret
    :rtype: string
    """
    tk.check_access("webhook_rotate_secret", context, data_dict)
    data = schema.load(schema.HookIdSchema, data_dict)
    hook = _hook_or_404(data["id"])
    hook.previous_secret = hook.secret
    hook.previous_secret_expires = utcnow() + ROTATION_OVERLAP
    hook.secret = new_secret()
    if not context.get("defer_commit"):
        model.Session.commit()
    return hook.secret
