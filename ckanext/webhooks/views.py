"""The pages: ``webhooks`` under /webhooks, ``webhooks_admin`` under
/ckan-admin/webhooks.

Thin views over the webhook actions. No login is needed for /webhooks:
knowing a hook's id is the right to see and manage it. Every POST needs
CKAN's CSRF token even though CKAN exempts extension blueprints by default.
The admin page is for sysadmins; its buttons post to the hook's own routes.
"""
from __future__ import annotations

import datetime
import json
from typing import TYPE_CHECKING, Any, NoReturn, Optional, Union
from urllib.parse import urlsplit

from flask import Blueprint, current_app, g, request
from flask.views import MethodView
from werkzeug.exceptions import NotFound

import ckan.plugins.toolkit as tk

from ckanext.webhooks import catalogue
from ckanext.webhooks.status import delivery_status
from ckanext.webhooks.model import FILTER_NAMES as FILTERS, utcnow

if TYPE_CHECKING:
    from ckan import model
    from ckan.types import Context, Response

# what the views answer with: a page (with its status), or a redirect
Page = Union[str, tuple[str, int]]

webhooks = Blueprint("webhooks", __name__, url_prefix="/webhooks")
webhooks_admin = Blueprint("webhooks_admin", __name__,
                           url_prefix="/ckan-admin/webhooks")
webhooks_dashboard = Blueprint("webhooks_dashboard", __name__,
                               url_prefix="/dashboard/webhooks")

# the fields of the create and edit forms, in the order they are shown
TEXT_FIELDS = ("address",) + FILTERS + ("description",)
HOOK_FIELDS = ("topics",) + TEXT_FIELDS
RECENT_DELIVERIES = 20
ADMIN_PAGE_SIZE = 50
# the datetime-local input of the recover form
SINCE_FORMAT = "%Y-%m-%dT%H:%M"


def _current_user() -> Union[model.User, model.AnonymousUser]:
    # CKAN types current_user with names mypy cannot resolve
    return tk.current_user


def _field_labels() -> dict[str, str]:
    return {
        "topics": tk._("Events"),
        "address": tk._("Send to"),
        "dataset": tk._("Dataset"),
        "organization": tk._("Organization"),
        "group": tk._("Group"),
        "resource": tk._("Resource"),
        "description": tk._("Description"),
        "rate_limit": tk._("Limit"),
        "__input": "",
    }


@webhooks.before_request
def _require_csrf_token() -> None:
    """CSRF on every POST of these pages, whatever ignore_extensions says."""
    if request.method != "POST":
        return
    if not current_app.config.get("WTF_CSRF_ENABLED"):
        return
    # an API token in a header is not sent by browsers on their own, so such
    # requests cannot be forged (CKAN exempts them from CSRF the same way)
    if g.get("login_via_auth_header") and _current_user().is_authenticated:
        return
    current_app.extensions["csrf"].protect()


@webhooks.after_request
def _same_origin_referrer(response: Response) -> Response:
    # hook ids in page addresses must not leak to other sites (no-store and
    # the framing headers of every webhooks page: response_headers.py)
    response.headers["Referrer-Policy"] = "same-origin"
    return response


@webhooks.errorhandler(NotFound)
def _not_found_page(error: NotFound) -> tuple[str, int]:
    """A 404 of these pages says what was not found and leads back."""
    return tk.render("webhooks/not_found.html", {
        "code": 404, "name": error.name,
        "content": error.description}), 404


def _not_found(message: str) -> NoReturn:
    raise NotFound(description=message)


def _context() -> Context:
    user = _current_user()
    if user.is_authenticated:
        return {"user": user.name, "auth_user_obj": user}
    return {"user": "", "auth_user_obj": None}


def _messages(error_dict: dict[str, Any]) -> dict[str, list[str]]:
    """Error messages by form field (``topic`` is the ``topics`` field)."""
    messages: dict[str, list[str]] = {}
    for key, value in error_dict.items():
        field = "topics" if key == "topic" else key
        messages.setdefault(field, []).extend(
            [str(m) for m in value] if isinstance(value, list)
            else [str(value)])
    return messages


def _error_summary(errors: dict[str, list[str]]) -> list[dict[str, Any]]:
    """Every error of a form, labelled, in the order of the fields; those
    of a field link to it."""
    labels = _field_labels()
    order = {name: i for i, name in enumerate(HOOK_FIELDS)}
    return [{"label": labels.get(key, key), "message": " ".join(errors[key]),
             "anchor": "field-" + key if key in order else None}
            for key in sorted(errors,
                              key=lambda k: order.get(k, len(order)))]


def _hook_form() -> dict[str, Any]:
    """What the create and edit forms sent."""
    data: dict[str, Any] = {name: request.form.get(name, "").strip()
                            for name in TEXT_FIELDS}
    data["topics"] = [t for t in request.form.getlist("topics") if t]
    return data


def _form_errors(error_dict: dict[str, Any],
                 data: dict[str, Any]) -> dict[str, list[str]]:
    errors = _messages(error_dict)
    if "topics" in errors and not data["topics"]:
        errors["topics"] = [tk._("Choose an event")]
    return errors


def _own_hooks() -> Optional[list[dict[str, Any]]]:
    """The logged-in user's own hooks; None for anonymous visitors."""
    user = _current_user()
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
                status: int = 200) -> tuple[str, int]:
    errors = errors or {}
    try:
        tk.check_access("webhook_create", _context(), {})
        can_create = True
    except tk.NotAuthorized:
        can_create = False
    page = tk.render("webhooks/index.html", {
        "data": data or {"topics": []},
        "errors": errors,
        "error_summary": _error_summary(errors),
        "can_create": can_create,
        "hooks": _own_hooks(),
        "open_error": open_error,
        "open_id": open_id,
    })
    return page, status


def _create_data(data: dict[str, Any]) -> dict[str, Any]:
    """webhook_create's input from the form: empty fields left out."""
    created = {name: data[name] for name in TEXT_FIELDS if data[name]}
    created.update(topics=data["topics"], address=data["address"])
    return created


class IndexView(MethodView):
    """The create form, the open-by-id form and one's own hooks; POST creates.

    ``?dataset=<name>`` (likewise organization, group, resource) fills that
    filter in.
    """

    def get(self) -> Page:
        data: dict[str, Any] = {name: request.args.get(name, "").strip()[:200]
                for name in FILTERS}
        data["topics"] = []
        return _index_page(data)

    def post(self) -> Union[Page, Response]:
        data = _hook_form()
        try:
            hook_id = tk.get_action("webhook_create")(
                _context(), _create_data(data))
        except tk.ValidationError as e:
            return _index_page(data, _form_errors(e.error_dict, data))
        except tk.NotAuthorized as e:
            return _index_page(data, {"__input": [str(e) or tk._(
                "You are not allowed to create a webhook")]}, status=403)
        tk.h.flash_success(tk._(
            "Webhook created. Bookmark this page or keep the webhook id: you "
            "need one of them to manage the webhook later."))
        return tk.redirect_to("webhooks.read", id=hook_id)


webhooks.add_url_rule("", view_func=IndexView.as_view("index"))


@webhooks.route("/events")
def events() -> str:
    """The event catalogue: every type, who gets it, an example body."""
    return tk.render("webhooks/events.html", {
        "catalogue": catalogue.entries()})


def _json_document(document: dict[str, Any], mimetype: str) -> Response:
    response = current_app.response_class(
        json.dumps(document, indent=2, ensure_ascii=False) + "\n",
        mimetype=mimetype)
    # public documents, for tools on any site
    response.headers["Access-Control-Allow-Origin"] = "*"
    return response


def _schema_url(message_type: str) -> str:
    kind, _, name = message_type.partition("/")
    return tk.h.url_for("webhooks.event_schema", kind=kind, name=name,
                        _external=True)


@webhooks.route("/events/openapi.json")
def events_openapi() -> Response:
    """The catalogue as an OpenAPI 3.1 document (its ``webhooks``)."""
    return _json_document(catalogue.openapi(
        tk.config.get("ckan.site_url"), tk.config.get("ckan.site_title"),
        _schema_url), "application/json")


@webhooks.route("/events/<kind>/<name>.json")
def event_schema(kind: str, name: str) -> Response:
    """The JSON Schema of one type's bodies."""
    message_type = "{}/{}".format(kind, name)
    if message_type not in catalogue.message_types():
        return _not_found(tk._("No such event type"))
    return _json_document(catalogue.topic_schema(
        message_type, _schema_url(message_type)), "application/schema+json")


@webhooks.route("/open", methods=["GET", "POST"])
def open_hook() -> Union[Page, Response]:
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
        return _not_found(tk._("Webhook not found"))


def _receiver_path(address: str) -> str:
    return urlsplit(address).path or "/"


def _since_default(hook: dict[str, Any]) -> str:
    """The recover form's starting point: when the hook began failing, or a
    day ago, in the time zone of the pages."""
    zone = tk.h.get_display_timezone()
    if hook.get("failing_since"):
        moment = datetime.datetime.fromisoformat(hook["failing_since"])
    else:
        moment = utcnow() - datetime.timedelta(days=1)
    return moment.replace(tzinfo=datetime.timezone.utc).astimezone(zone) \
        .strftime(SINCE_FORMAT)


def _page_number() -> int:
    try:
        return max(1, int(request.args.get("page", 1)))
    except ValueError:
        return 1


def _delivery_filters() -> dict[str, str]:
    """The filters of the deliveries, from the page's address."""
    return {name: request.args.get(name, "").strip()[:100]
            for name in ("status", "type")
            if request.args.get(name, "").strip()}


def _deliveries_page(hook_id: str, filters: dict[str, str], page: int
                     ) -> tuple[list[dict[str, Any]], bool, str]:
    """One page of the hook's deliveries, whether there is another, and
    what was wrong with the filters."""
    try:
        deliveries = tk.get_action("webhook_delivery_list")(
            _context(), dict(filters, id=hook_id,
                             limit=RECENT_DELIVERIES + 1,
                             offset=(page - 1) * RECENT_DELIVERIES))
    except tk.ValidationError as e:
        if "id" in e.error_dict:
            return _not_found(tk._("Webhook not found"))
        return [], False, " ".join(" ".join(messages) for messages in
                                   _messages(e.error_dict).values())
    except (tk.ObjectNotFound, tk.NotAuthorized):
        return _not_found(tk._("Webhook not found"))
    return deliveries[:RECENT_DELIVERIES], \
        len(deliveries) > RECENT_DELIVERIES, ""


def _latest_challenge(hook: dict[str, Any]) -> Optional[dict[str, Any]]:
    """A pending hook's latest challenge, with how it went."""
    if hook["status"] != "pending":
        return None
    found = tk.get_action("webhook_delivery_list")(
        _context(), {"id": hook["id"], "type": "webhook/verify", "limit": 1})
    return found[0] if found else None


@webhooks.route("/<id>")
def read(id: str) -> str:
    """The hook: details, secret, deliveries (filtered, paged), health and
    what to do next."""
    hook = _show(id)
    filters, page = _delivery_filters(), _page_number()
    deliveries, has_next, filter_error = _deliveries_page(id, filters, page)
    return tk.render("webhooks/read.html", {
        "hook": hook,
        "deliveries": deliveries,
        "filters": filters,
        "filter_error": filter_error,
        "page": page,
        "has_next": has_next,
        "challenge": _latest_challenge(hook),
        # the counts and the list are read one after the other: a message
        # may finish in between, so either one being pending counts
        "busy": hook["status"] == "pending"
        or hook["deliveries"]["pending"] > 0
        or any(d["status"] == "pending" for d in deliveries),
        "receiver_path": _receiver_path(hook["address"]),
        "since_default": _since_default(hook),
        "pending_hours": max(1, round(
            tk.config.get("ckanext.webhooks.pending_ttl") / 3600)),
        "recover_minutes": max(1, round(
            tk.config.get("ckanext.webhooks.recover_interval") / 60)),
    })


def _act(action: str, hook_id: str, **extra: Any) -> Any:
    """Call an action on a hook; unknown and malformed hooks are a 404."""
    try:
        return tk.get_action(action)(_context(), dict(extra, id=hook_id))
    except (tk.ObjectNotFound, tk.ValidationError, tk.NotAuthorized):
        return _not_found(tk._("Webhook not found"))


def _act_or_flash(action: str, hook_id: str, **extra: Any) -> Any:
    """Call an action on a hook; unknown hooks are a 404, what the action
    refuses is flashed (and None returned)."""
    try:
        return tk.get_action(action)(_context(), dict(extra, id=hook_id))
    except (tk.ObjectNotFound, tk.NotAuthorized):
        return _not_found(tk._("Webhook not found"))
    except tk.ValidationError as e:
        _show(hook_id)  # a malformed id is a 404, not a message
        tk.h.flash_error(" ".join(
            " ".join(messages) for messages in
            _messages(e.error_dict).values()))
        return None


def _back_to(hook_id: str) -> Response:
    """The hook's page, or the admin page the button was pressed on."""
    if request.values.get("next") == "admin":
        return tk.redirect_to("webhooks_admin.index")
    return tk.redirect_to("webhooks.read", id=hook_id)


def _differs(new: Any, old: Any) -> bool:
    if isinstance(new, list):
        return sorted(new) != sorted(old or [])
    return new != (old or "")


class EditView(MethodView):
    """The edit form; POST changes what changed."""

    @staticmethod
    def _current(hook: dict[str, Any]) -> dict[str, Any]:
        return dict(hook.get("filters") or {}, address=hook["address"],
                    description=hook.get("description") or "",
                    topics=tk.h.webhooks_topics(hook))

    def get(self, id: str) -> str:
        hook = _show(id)
        return tk.render("webhooks/edit.html", {
            "hook": hook, "data": self._current(hook), "errors": {},
            "error_summary": {}})

    def post(self, id: str) -> Union[str, Response]:
        hook = _show(id)
        current = self._current(hook)
        data = _hook_form()
        # only what changed: an unchanged filter is not judged again
        changes = {name: data[name] for name in HOOK_FIELDS
                   if _differs(data[name], current.get(name))}
        try:
            if changes:
                tk.get_action("webhook_update")(
                    _context(), dict(changes, id=id))
        except tk.ValidationError as e:
            errors = _form_errors(e.error_dict, data)
            return tk.render("webhooks/edit.html", {
                "hook": hook, "data": data, "errors": errors,
                "error_summary": _error_summary(errors)})
        except (tk.ObjectNotFound, tk.NotAuthorized):
            return _not_found(tk._("Webhook not found"))
        if "address" in changes and \
                tk.config.get("ckanext.webhooks.verify_intent"):
            tk.h.flash_success(tk._(
                "Saved. The new address was sent a verification challenge: "
                "the webhook gets events again once it answers."))
        else:
            tk.h.flash_success(tk._("Saved."))
        return tk.redirect_to("webhooks.read", id=id)


webhooks.add_url_rule("/<id>/edit", view_func=EditView.as_view("edit"))


@webhooks.route("/<id>/disable", methods=["POST"])
def disable(id: str) -> Response:
    """Pause the hook: it gets no events until it is enabled again."""
    if _act_or_flash("webhook_update", id, enabled=False) is not None:
        tk.h.flash_success(tk._(
            "The webhook is disabled: it gets no events until you enable "
            "it again."))
    return _back_to(id)


@webhooks.route("/<id>/enable", methods=["POST"])
def enable(id: str) -> Response:
    """Resume a disabled hook."""
    hook = _act_or_flash("webhook_update", id, enabled=True)
    if hook is not None and hook.get("status") == "pending":
        tk.h.flash_success(tk._(
            "The webhook is enabled, and waits for its receiver to answer "
            "the verification challenge."))
    elif hook is not None:
        tk.h.flash_success(tk._("The webhook is enabled again."))
    return _back_to(id)


@webhooks.route("/<id>/ping", methods=["POST"])
def ping(id: str) -> Response:
    """Send a webhook/ping delivery (or, to a pending hook, the challenge)."""
    hook = _show(id)
    message_id = _act_or_flash("webhook_ping", id)
    if message_id is None:
        pass
    elif hook["status"] == "pending":
        _flash_challenge(hook, _show(id), message_id)
    else:
        tk.h.flash_success(tk._(
            "Ping queued as message {0}; its outcome shows under "
            "Deliveries.").format(message_id))
    return tk.redirect_to("webhooks.read", id=id)


def _flash_challenge(before: dict[str, Any], after: dict[str, Any],
                     message_id: str) -> None:
    """Whether "Send the challenge again" sent it, and if not, why."""
    if after["challenges_sent"] > before["challenges_sent"]:
        tk.h.flash_success(tk._(
            "This webhook is waiting for verification, so it gets no pings: "
            "its verification challenge ({0}) is sent again instead, at "
            "most once every 10 minutes.").format(message_id))
    elif after["next_challenge"]:
        tk.h.flash_error(tk._(
            "Nothing was sent: the challenge was sent less than 10 minutes "
            "ago. It can be sent again from {time}.").format(
            time=tk.h.webhooks_time(after["next_challenge"])))
    else:
        tk.h.flash_error(tk._(
            "Nothing was sent: the challenge was sent 3 times, the most it "
            "is sent. Check the address, then edit it (a new address gets "
            "new challenges) or delete this webhook."))


@webhooks.route("/<id>/test", methods=["POST"])
def send_test(id: str) -> Response:
    """Send a test delivery of one event type, with example data."""
    topic = request.form.get("topic", "").strip()
    if not topic:
        _show(id)
        tk.h.flash_error(tk._("Choose an event"))
        return tk.redirect_to("webhooks.read", id=id)
    message_id = _act_or_flash("webhook_ping", id, topic=topic)
    if message_id is not None:
        tk.h.flash_success(tk._(
            "Test event {0} queued as message {1}; its body says "
            '"test": true.').format(topic, message_id))
    return tk.redirect_to("webhooks.read", id=id)


@webhooks.route("/<id>/rotate", methods=["GET"])
def confirm_rotate(id: str) -> str:
    """Asks before the secret is replaced."""
    return tk.render("webhooks/confirm_rotate.html", {"hook": _show(id)})


@webhooks.route("/<id>/rotate", methods=["POST"])
def rotate(id: str) -> Response:
    """Give the hook a new secret; the old one signs too for 24 hours."""
    if _act_or_flash("webhook_rotate_secret", id) is None:
        return tk.redirect_to("webhooks.read", id=id)
    tk.h.flash_success(tk._(
        "The secret was replaced. For 24 hours deliveries are signed with "
        "both the new and the old secret: switch your receiver to the new "
        "one now."))
    return tk.redirect_to("webhooks.read", id=id)


def _since_from_form(value: str) -> Optional[str]:
    """The recover form's local time as ISO 8601 with its offset."""
    try:
        moment = datetime.datetime.strptime(value.strip(), SINCE_FORMAT)
    except ValueError:
        return None
    zone = tk.h.get_display_timezone()
    localize = getattr(zone, "localize", None)  # pytz zones
    moment = localize(moment) if localize else moment.replace(tzinfo=zone)
    return moment.isoformat()


@webhooks.route("/<id>/recover", methods=["POST"])
def recover(id: str) -> Response:
    """Deliver again every failed delivery since a time."""
    since = _since_from_form(request.form.get("since", ""))
    if since is None:
        _show(id)
        tk.h.flash_error(tk._("Enter a date and time to recover from"))
        return tk.redirect_to("webhooks.read", id=id)
    count = _act_or_flash("webhook_recover", id, since=since)
    if count is not None:
        tk.h.flash_success(tk.ungettext(
            "{n} failed delivery will be delivered again.",
            "{n} failed deliveries will be delivered again.",
            count).format(n=count))
    return tk.redirect_to("webhooks.read", id=id)


@webhooks.route("/<id>/deliveries/<delivery_id>")
def delivery(id: str, delivery_id: str) -> str:
    """One delivery: its payload as sent and every attempt."""
    hook = _show(id)
    try:
        shown = tk.get_action("webhook_delivery_show")(
            _context(), {"id": id, "delivery_id": delivery_id})
    except (tk.ObjectNotFound, tk.ValidationError, tk.NotAuthorized):
        return _not_found(tk._("Delivery not found"))
    return tk.render("webhooks/delivery.html", {
        "hook": hook, "delivery": shown,
        "busy": shown["status"] == "pending"})


@webhooks.route("/<id>/deliveries/<delivery_id>/redeliver",
                methods=["POST"])
def redeliver(id: str, delivery_id: str) -> Response:
    """Deliver a message again, with the same message id; a pending one is
    attempted now."""
    _show(id)
    try:
        tk.get_action("webhook_redeliver")(
            _context(), {"id": id, "delivery_id": delivery_id})
    except (tk.ObjectNotFound, tk.NotAuthorized):
        return _not_found(tk._("Delivery not found"))
    except tk.ValidationError as e:
        tk.h.flash_error(" ".join(" ".join(m) for m in
                                  _messages(e.error_dict).values()))
    else:
        tk.h.flash_success(tk._(
            "Message {0} will be delivered again now.").format(delivery_id))
    if request.form.get("next") == "delivery":
        return tk.redirect_to("webhooks.delivery", id=id,
                              delivery_id=delivery_id)
    return tk.redirect_to("webhooks.read", id=id)


class DeleteView(MethodView):
    """GET asks to confirm; POST deletes."""

    def get(self, id: str) -> str:
        return tk.render("webhooks/confirm_delete.html", {
            "hook": _show(id), "next": request.args.get("next", "")})

    def post(self, id: str) -> Response:
        _act("webhook_delete", id)
        tk.h.flash_success(tk._("The webhook was deleted."))
        if request.values.get("next") == "admin":
            return tk.redirect_to("webhooks_admin.index")
        return tk.redirect_to("webhooks.index")


webhooks.add_url_rule("/<id>/delete",
                      view_func=DeleteView.as_view("delete"))


# --- /ckan-admin/webhooks ----------------------------------------------------

@webhooks_admin.before_request
def _sysadmins_only() -> None:
    if not getattr(tk.current_user, "sysadmin", False):
        tk.abort(403, tk._("Need to be system administrator to administer"))


@webhooks_admin.route("", endpoint="index")
def admin_index() -> str:
    """Every hook with its health, and the queue's health."""
    page = _page_number()
    q = request.args.get("q", "").strip()[:200]
    hooks = tk.get_action("webhook_list")(_context(), {
        "limit": ADMIN_PAGE_SIZE + 1, "q": q,
        "offset": (page - 1) * ADMIN_PAGE_SIZE})
    return tk.render("webhooks/admin.html", {
        "hooks": hooks[:ADMIN_PAGE_SIZE],
        "q": q,
        "page": page,
        "has_next": len(hooks) > ADMIN_PAGE_SIZE,
        # the report of `ckan webhooks status`: one view of delivery's health
        "queue": delivery_status(),
    })


# --- /dashboard/webhooks -----------------------------------------------------

@webhooks_dashboard.before_request
def _logged_in_only() -> Optional[Response]:
    if not _current_user().is_authenticated:
        return tk.redirect_to("user.login")
    return None


@webhooks_dashboard.route("", endpoint="index")
def dashboard_index() -> str:
    """The dashboard's "My Webhooks" tab: the user's own hooks."""
    user = _current_user()
    return tk.render("user/dashboard_webhooks.html", {
        "hooks": _own_hooks() or [],
        # what CKAN's dashboard pages (user/edit_base.html) need
        "user_dict": tk.get_action("user_show")(_context(),
                                                {"id": user.id}),
        "is_myself": True})
