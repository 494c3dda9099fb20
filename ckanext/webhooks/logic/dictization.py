"""What the actions return of an attempt, and of a hook beyond its row:
its health, who paused it, what its filters name, when its rate-limited
buttons work again."""
from __future__ import annotations

import datetime
from typing import TYPE_CHECKING, Any, Optional

import ckan.model as model
import ckan.plugins.toolkit as tk

from ckanext.webhooks.model import (
    Attempt, Hook, REASON_DISABLED_BY_OWNER, STATUS_DISABLED, utcnow)

if TYPE_CHECKING:
    from ckan.types import Context

# status_reason of a hook a sysadmin paused (stored as paused by its
# owner, with ``disabled_by``: it behaves the same)
DISABLED_BY_SYSADMIN = "disabled by a sysadmin"


def iso(moment: Optional[datetime.datetime]) -> Optional[str]:
    return moment.isoformat() if moment else None


def _header_object(pairs: list[list[str]]) -> dict[str, str]:
    """Header lines as an object; a name given twice gets its values
    joined by ", " (as HTTP allows)."""
    headers: dict[str, str] = {}
    for name, value in pairs:
        headers[name] = headers[name] + ", " + value if name in headers \
            else value
    return headers


def attempt(a: Attempt, active: bool) -> dict[str, Any]:
    """One attempt of ``webhook_delivery_show``'s ``attempt_log``; what the
    receiver answered only while the hook is ``active``."""
    head = a.response_head if active else None
    return {
        "at": iso(a.at),
        "duration_ms": a.duration_ms,
        "response_status": a.response_status,
        "error": a.error,
        "request_headers": a.request_headers,
        "response_status_line": head["status_line"] if head else None,
        "response_headers": _header_object(head["headers"])
        if head else None,
        "response_headers_truncated": bool(head and head["truncated"]),
        "response_body": a.response_body if active else None,
    }


def _health(figures: dict[str, Any]) -> dict[str, Any]:
    return dict(figures, last_success=iso(figures["last_success"]),
                last_failure=iso(figures["last_failure"]))


def _recover_available(hook: Hook) -> Optional[datetime.datetime]:
    """When ``webhook_recover`` may be used again; None: now."""
    if hook.last_recover is None:
        return None
    available = hook.last_recover + datetime.timedelta(
        seconds=tk.config.get("ckanext.webhooks.recover_interval"))
    return available if available > utcnow() else None


def paused_by_sysadmin(hook: Hook) -> bool:
    return hook.status == STATUS_DISABLED and bool(hook.disabled_by) \
        and hook.status_reason == REASON_DISABLED_BY_OWNER


def hook_extras(hook: Hook, figures: dict[str, Any]) -> dict[str, Any]:
    """What ``webhook_show`` and ``webhook_list`` add to a hook's row:
    ``health`` (see ``queries.health``), ``last_success`` and
    ``last_failure`` of its attempts, ``status_reason`` saying when a
    sysadmin paused it, and ``recover_available`` (when
    ``webhook_recover`` works again; null: now)."""
    shown = _health(figures)
    last_success = max(
        (t for t in (figures["last_success"], hook.last_success) if t),
        default=None)
    extras: dict[str, Any] = {
        "health": shown,
        "last_success": iso(last_success),
        "last_failure": shown["last_failure"],
        "recover_available": iso(_recover_available(hook)),
    }
    if paused_by_sysadmin(hook):
        extras["status_reason"] = DISABLED_BY_SYSADMIN
    return extras


def _viewer(context: Any) -> Context:
    user = context.get("auth_user_obj")
    name = context.get("user") or ""
    # ckan.model is what the Model protocol describes (as in action.py)
    return {"model": model,  # type: ignore[typeddict-item]
            "session": model.Session, "user": name,
            "auth_user_obj": user, "ignore_auth": False}


def _may_read(context: Any, package: Optional[model.Package]) -> bool:
    if package is None or package.state == "deleted":
        return False
    try:
        tk.check_access("package_show", _viewer(context), {"id": package.id})
        return True
    except tk.NotAuthorized:
        return False


def _label(title: Optional[str], name: Optional[str]) -> str:
    return "{} ({})".format(title, name) if title and title != name \
        else (name or title or "")


def filter_titles(hook: Hook, context: Any) -> dict[str, Optional[str]]:
    """What each filter names, as "Title (name)", for the caller of the
    action: a dataset or resource only if they may see it (else null, and
    the id is all they get)."""
    titles: dict[str, Optional[str]] = {}
    if hook.filter_dataset:
        package = model.Package.get(hook.filter_dataset)
        titles["dataset"] = _label(package.title, package.name) \
            if package is not None and _may_read(context, package) else None
    for name in ("organization", "group"):
        group_id = getattr(hook, "filter_" + name)
        if group_id:
            group = model.Group.get(group_id)
            titles[name] = _label(group.title, group.name) \
                if group is not None and group.state == "active" else None
    if hook.filter_resource:
        resource = model.Session.get(model.Resource, hook.filter_resource)
        titles["resource"] = (resource.name or resource.id) \
            if resource is not None and resource.state == "active" \
            and _may_read(context, resource.package) else None
    return titles
