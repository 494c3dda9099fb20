"""The ``webhooks`` blueprint: HTML pages under /webhooks.

Thin views over the webhook actions. No login is needed: knowing a hook's id
is the right to see and manage it. Every POST needs CKAN's CSRF token even
though CKAN exempts extension blueprints by default.
"""
from __future__ import annotations

from typing import Any, Optional
from urllib.parse import urlsplit

from flask import Blueprint, current_app, g, request

import ckan.plugins.toolkit as tk


webhooks = Blueprint("webhooks", __name__, url_prefix="/webhooks")

# fields of the create form; errors on other keys are shown above the form
FORM_FIELDS = ("topic", "address", "dataset", "organization")


def _topic_labels() -> dict[str, str]:
    # a function, not a constant: the labels are translated per request
    return {
        "dataset/create": tk._("A dataset is created"),
        "dataset/update": tk._("A dataset is updated"),
        "dataset/delete": tk._("A dataset is deleted"),
        "dataset/*": tk._("Anything happens to a dataset"),
        "resource/create": tk._("A resource is created"),
        "resource/update": tk._("A resource is updated"),
        "resource/delete": tk._("A resource is deleted"),
        "resource/*": tk._("Anything happens to a resource"),
        "organization/create": tk._("An organization is created"),
        "organization/update": tk._("An organization is updated"),
        "organization/delete": tk._("An organization is deleted"),
        "organization/*": tk._("Anything happens to an organization"),
        "group/create": tk._("A group is created"),
        "group/update": tk._("A group is updated"),
        "group/delete": tk._("A group is deleted"),
        "group/*": tk._("Anything happens to a group"),
    }


def _status_labels() -> dict[str, str]:
    return {
        "pending": tk._("Waiting for verification"),
        "active": tk._("Active"),
        "disabled": tk._("Disabled"),
    }


def _delivery_labels() -> dict[str, str]:
    return {
        "pending": tk._("Pending"),
        "succeeded": tk._("Succeeded"),
        "failed": tk._("Failed"),
    }


def _filter_labels() -> dict[str, str]:
    return {
        "dataset": tk._("Dataset"),
        "organization": tk._("Organization"),
        "group": tk._("Group"),
        "resource": tk._("Resource"),
    }


def _error_labels() -> dict[str, str]:
    return {"rate_limit": tk._("Limit"), "__input": ""}


@webhooks.before_request
def _require_csrf_token() -> None:
    """CSRF on every POST of these pages, whatever ignore_extensions says."""
    # the pages show secrets: never let a shared cache keep them
    request.environ["__no_cache__"] = True
    if request.method != "POST":
        return
    if not current_app.config.get("WTF_CSRF_ENABLED"):
        return
    # an API token in a header is not sent by browsers on their own, so such
    # requests cannot be forged (CKAN exempts them from CSRF the same way)
    if g.get("login_via_auth_header") and tk.current_user.is_authenticated:
        return
    current_app.extensions["csrf"].protect()


@webhooks.after_request
def _private_headers(response):
    response.cache_control.no_store = True
    # hook ids in page addresses must not leak to other sites
    response.headers["Referrer-Policy"] = "same-origin"
    return response


def _context() -> dict[str, Any]:
    user = tk.current_user
    if user.is_authenticated:
        return {"user": user.name, "auth_user_obj": user}
    return {"user": "", "auth_user_obj": None}


def _messages(error_dict: dict[str, Any]) -> dict[str, list[str]]:
    return {key: [str(m) for m in value] if isinstance(value, list)
            else [str(value)] for key, value in error_dict.items()}


def _own_hooks() -> Optional[list[dict[str, Any]]]:
    """The logged-in user's own hooks; None for anonymous visitors."""
    user = tk.current_user
    if not user.is_authenticated:
        return None
    try:
        # pages only ever show a user their own hooks, sysadmins included
        return tk.get_action("webhook_list")(
            _context(), {"mine": True, "limit": 1000})
    except tk.NotAuthorized:
        return None


def _index_page(data: Optional[dict[str, Any]] = None,
                errors: Optional[dict[str, list[str]]] = None,
                open_error: str = "", open_id: str = "",
                status: int = 200):
    data = data or {}
    errors = errors or {}
    labels = _topic_labels()
    field_errors = {k: v for k, v in errors.items() if k in FORM_FIELDS}
    names = _error_labels()
    error_summary = {names.get(k, k): " ".join(v) for k, v in errors.items()
                     if k not in FORM_FIELDS}
    try:
        tk.check_access("webhook_create", _context(), {})
        can_create = True
    except tk.NotAuthorized:
        can_create = False
    page = tk.render("webhooks/index.html", {
        "data": data,
        "errors": field_errors,
        "error_summary": error_summary,
        "topic_options": [{"value": "", "text": tk._("Choose an event")}] + [
            {"value": topic, "text": label} for topic, label in labels.items()],
        "topic_labels": labels,
        "status_labels": _status_labels(),
        "can_create": can_create,
        "hooks": _own_hooks(),
        "open_error": open_error,
        "open_id": open_id,
    })
    return page, status


@webhooks.route("", methods=["GET", "POST"])
def index():
    """The create form, the open-by-id form and one's own hooks; POST creates."""
    if request.method == "GET":
        return _index_page()

    data = {name: request.form.get(name, "").strip() for name in FORM_FIELDS}
    try:
        hook_id = tk.get_action("webhook_create")(_context(), dict(data))
    except tk.ValidationError as e:
        return _index_page(data, _messages(e.error_dict))
    except tk.NotAuthorized as e:
        return _index_page(data, {"__input": [str(e) or tk._(
            "You are not allowed to create a webhook")]}, status=403)
    tk.h.flash_success(tk._(
        "Webhook created. Bookmark this page or keep the webhook id: you "
        "need one of them to manage the webhook later."))
    return tk.redirect_to("webhooks.read", id=hook_id)



@webhooks.route("/open", methods=["GET", "POST"])
def open_hook():
    """Go to the page of the hook whose id was typed in."""
    hook_id = (request.values.get("id") or "").strip()
    if not hook_id:
        return _index_page(open_error=tk._("Enter the id of a webhook"))
    _show(hook_id)  # an unknown id is a 404 here already
    return tk.redirect_to("webhooks.read", id=hook_id)


def _show(hook_id: str) -> dict[str, Any]:
    try:
        return tk.get_action("webhook_show")(_context(), {"id": hook_id})
    except (tk.ObjectNotFound, tk.ValidationError, tk.NotAuthorized):
        # unknown, deleted and malformed ids look alike
        return tk.abort(404, tk._("Webhook not found"))


def _receiver_path(address: str) -> str:
    return urlsplit(address).path or "/"


@webhooks.route("/<id>")
def read(id: str):
    """The hook: details, secret, recent deliveries and what to do next."""
    hook = _show(id)
    try:
        deliveries = tk.get_action("webhook_delivery_list")(
            _context(), {"id": id, "limit": 20})
    except (tk.ObjectNotFound, tk.ValidationError, tk.NotAuthorized):
        return tk.abort(404, tk._("Webhook not found"))
    return tk.render("webhooks/read.html", {
        "hook": hook,
        "deliveries": deliveries,
        "topic_labels": _topic_labels(),
        "status_labels": _status_labels(),
        "delivery_labels": _delivery_labels(),
        "filter_labels": _filter_labels(),
        "receiver_path": _receiver_path(hook["address"]),
        "pending_hours": max(1, round(
            tk.config.get("ckanext.webhooks.pending_ttl") / 3600)),
    })


def _act(action: str, hook_id: str, **extra: Any) -> Any:
    """Call an action on a hook; unknown hooks are a 404."""
    try:
        return tk.get_action(action)(_context(), dict(extra, id=hook_id))
    except (tk.ObjectNotFound, tk.ValidationError, tk.NotAuthorized):
        return tk.abort(404, tk._("Webhook not found"))


@webhooks.route("/<id>/ping", methods=["POST"])
def ping(id: str):
    """Send a webhook/ping delivery."""
    message_id = _act("webhook_ping", id)
    tk.h.flash_success(tk._(
        "Ping queued as message {0}. Reload this page to see how the "
        "delivery went.").format(message_id))
    return tk.redirect_to("webhooks.read", id=id)


@webhooks.route("/<id>/rotate", methods=["POST"])
def rotate(id: str):
    """Give the hook a new secret; the old one signs too for 24 hours."""
    _act("webhook_rotate_secret", id)
    tk.h.flash_success(tk._(
        "The secret was replaced. For 24 hours deliveries are signed with "
        "both the new and the old secret: switch your receiver to the new "
        "one now."))
    return tk.redirect_to("webhooks.read", id=id)


@webhooks.route("/<id>/deliveries/<delivery_id>/redeliver",
                methods=["POST"])
def redeliver(id: str, delivery_id: str):
    """Deliver a message again, with the same message id."""
    _show(id)
    try:
        tk.get_action("webhook_redeliver")(
            _context(), {"id": id, "delivery_id": delivery_id})
    except (tk.ObjectNotFound, tk.ValidationError, tk.NotAuthorized):
        return tk.abort(404, tk._("Delivery not found"))
    tk.h.flash_success(tk._("Message {0} will be delivered again.").format(
        delivery_id))
    return tk.redirect_to("webhooks.read", id=id)


@webhooks.route("/<id>/delete", methods=["GET", "POST"])
def delete(id: str):
    """GET asks to confirm; POST deletes."""
    if request.method == "GET":
        hook = _show(id)
        return tk.render("webhooks/confirm_delete.html", {
            "hook": hook, "topic_labels": _topic_labels()})
    _act("webhook_delete", id)
    tk.h.flash_success(tk._("The webhook was deleted."))
    return tk.redirect_to("webhooks.index")
