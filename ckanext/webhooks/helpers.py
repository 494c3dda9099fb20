"""Template helpers of the webhook pages: labels and formatting.

Registered with ``@tk.blanket.helpers``, so every public function here is
``h.<name>`` in templates; all are prefixed ``webhooks_`` because helpers of
all extensions share one namespace. Labels are functions, not constants: they
are translated per request.
"""
from __future__ import annotations

import re
from typing import Any, Optional
from urllib.parse import urlsplit

from markupsafe import Markup, escape

import ckan.plugins.toolkit as tk

from ckanext.webhooks import __version__
from ckanext.webhooks.logic import schema
from ckanext.webhooks.logic.dictization import DISABLED_BY_SYSADMIN
from ckanext.webhooks.model import REASON_DISABLED_BY_OWNER

# one format for every time on the pages, in ckan.display_timezone
TIME_FORMAT = "%Y-%m-%d %H:%M:%S %Z"
# message ids are shown as their first characters; the rest is on hover/copy
SHORT_ID_LENGTH = 12


def _topic_labels() -> dict[str, str]:
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


def _entity_labels() -> dict[str, str]:
    return {
        "dataset": tk._("Datasets"),
        "resource": tk._("Resources"),
        "organization": tk._("Organizations"),
        "group": tk._("Groups"),
    }


def webhooks_kind_label(kind: str) -> str:
    """What a topic's prefix names: "Datasets"..."""
    return dict(_entity_labels(), webhook=tk._("The webhook itself")).get(
        kind, kind)


def webhooks_catalogue_link(topic: str) -> str:
    """The address of a topic's section of the event catalogue (of its
    kind for a wildcard)."""
    kind = topic.split("/", 1)[0]
    return tk.h.url_for("webhooks.events") + "#" + (
        "kind-" + kind if schema.is_wildcard(topic)
        else topic.replace("/", "-"))


def webhooks_topic_label(topic: Optional[str]) -> str:
    """What a topic means, e.g. "A dataset is created"."""
    return _topic_labels().get(topic or "", topic or "")


def webhooks_topics(hook: Optional[dict[str, Any]] = None) -> list[str]:
    """The topics of a hook (``topics``, or the older single ``topic``),
    or, without a hook, every topic a hook may have."""
    if hook is None:
        return list(schema.TOPICS)
    topics = hook.get("topics")
    if topics is None:
        topics = [hook["topic"]] if hook.get("topic") else []
    return list(topics)


# up to this many events are named in a hook's title, more are counted
TITLE_TOPICS = 3


def webhooks_hook_title(hook: dict[str, Any]) -> str:
    """The hook in a few words: its description, else where it sends to
    (host and path); its events are shown beside."""
    if hook.get("description"):
        return hook["description"]
    parts = urlsplit(hook.get("address") or "")
    return (parts.netloc + parts.path) or hook.get("address") or ""


def webhooks_events_summary(hook: dict[str, Any]) -> str:
    """The hook's events in words, or how many it has."""
    topics = webhooks_topics(hook)
    if len(topics) <= TITLE_TOPICS:
        return ", ".join(webhooks_topic_label(t) for t in topics)
    return tk.ungettext("{n} event", "{n} events", len(topics)).format(
        n=len(topics))


def webhooks_topic_choices() -> list[dict[str, Any]]:
    """The topics a hook may have, by kind: ``[{"label": "Datasets",
    "topics": [{"value": "dataset/create", "label": ...}, ...]}, ...]``."""
    kinds: dict[str, list[dict[str, str]]] = {}
    for topic in schema.TOPICS:
        kinds.setdefault(topic.split("/", 1)[0], []).append(
            {"value": topic, "label": webhooks_topic_label(topic)})
    names = _entity_labels()
    return [{"kind": kind, "label": names.get(kind, kind), "topics": topics}
            for kind, topics in kinds.items()]


def webhooks_test_topics(hook: dict[str, Any]) -> list[str]:
    """The event types a test delivery of this hook may have: its topics,
    wildcards spelt out."""
    chosen = webhooks_topics(hook)
    return [topic for topic in schema.TOPICS
            if not schema.is_wildcard(topic)
            and schema.matches(chosen, topic)]


def webhooks_delivery_types(hook: dict[str, Any]) -> list[str]:
    """The types a hook's deliveries can have, for the filter: its topics
    (a wildcard and what it covers), a test's, the ping and the
    challenge."""
    chosen = webhooks_topics(hook)
    return [topic for topic in schema.TOPICS
            if schema.matches(chosen, topic)] + \
        list(schema.HOOK_MESSAGE_TYPES)


def webhooks_percent(rate: Optional[float]) -> str:
    """0.9876 as "98.8%"."""
    if rate is None:
        return "\u2014"
    return tk._("{p}%").format(p=("{:.1f}".format(rate * 100)).rstrip(
        "0").rstrip("."))


def webhooks_status_label(status: Optional[str]) -> str:
    return {
        "pending": tk._("Waiting for verification"),
        "active": tk._("Active"),
        "disabled": tk._("Disabled"),
    }.get(status or "", status or "")


def webhooks_status_class(status: Optional[str]) -> str:
    """The badge colour of a hook's status."""
    return {"active": "bg-success", "pending": "bg-warning text-dark",
            "disabled": "bg-secondary"}.get(status or "", "bg-secondary")


def webhooks_disabled_by_owner(hook: dict[str, Any]) -> bool:
    """Whether the hook was paused on purpose, by its owner or a sysadmin
    (not for failing)."""
    return hook.get("status") == "disabled" and \
        hook.get("status_reason") in (REASON_DISABLED_BY_OWNER,
                                        DISABLED_BY_SYSADMIN)


def webhooks_delivery_label(status: Optional[str]) -> str:
    return {
        "pending": tk._("Pending"),
        "succeeded": tk._("Succeeded"),
        "failed": tk._("Failed"),
    }.get(status or "", status or "")


def webhooks_delivery_class(status: Optional[str]) -> str:
    return {"succeeded": "text-success", "failed": "text-danger",
            "pending": "text-body-secondary"}.get(status or "", "")


def webhooks_duration(seconds: float) -> str:
    """A length of time in the largest units that fit: 42 s, 5 min,
    3 h 20 min, 2 d 4 h."""
    seconds = int(max(0, seconds))
    if seconds < 60:
        return tk._("{s} s").format(s=seconds)
    minutes, hours = seconds // 60, seconds // 3600
    if seconds < 3600:
        return tk._("{m} min").format(m=minutes)
    if seconds < 86400:
        return tk._("{h} h {m} min").format(h=hours, m=minutes % 60)
    return tk._("{d} d {h} h").format(d=hours // 24, h=hours % 24)


def webhooks_filter_label(name: str) -> str:
    return {
        "dataset": tk._("Dataset"),
        "organization": tk._("Organization"),
        "group": tk._("Group"),
        "resource": tk._("Resource"),
    }.get(name, name)


def webhooks_time(value: Any) -> Markup:
    """A time, always in the same format, in a ``<time>`` element; "—" for
    none."""
    text = tk.h.render_datetime(value, TIME_FORMAT) if value else ""
    if not text:
        return Markup("&mdash;")
    moment = value.isoformat() if hasattr(value, "isoformat") \
        else str(value)
    if "+" not in moment[10:] and not moment.endswith("Z"):
        moment += "Z"  # the actions give naive UTC
    return Markup('<time datetime="{}">{}</time>').format(moment, text)


def webhooks_timezone() -> str:
    """The name of the time zone times are shown in (``UTC``...)."""
    import datetime
    zone = tk.h.get_display_timezone()
    return datetime.datetime.now(zone).strftime("%Z") or str(zone)


def webhooks_short_id(value: Optional[str],
                      href: Optional[str] = None) -> Markup:
    """A long id as its first characters (a link to ``href`` if given),
    the whole id on hover and in a copy button shown by JavaScript."""
    value = value or ""
    if len(value) <= SHORT_ID_LENGTH + 1:
        code = Markup('<code class="webhooks-id">{}</code>').format(value)
    else:
        code = Markup('<code class="webhooks-id" title="{}">{}&hellip;'
                      '</code>').format(value, value[:SHORT_ID_LENGTH])
    if href:
        code = Markup('<a href="{}">{}</a>').format(href, code)
    return Markup(
        '<span class="webhooks-short-id">{code}<button type="button" '
        'class="btn btn-link btn-sm py-0 px-1 webhooks-copy-id" '
        'data-webhooks-copy-text="{full}" data-copied-label="{copied}" '
        'title="{label}" hidden><i class="fa fa-copy" aria-hidden="true">'
        '</i><span class="visually-hidden">{label}</span></button></span>'
    ).format(code=code, full=value, label=tk._("Copy the whole id"),
             copied=tk._("Copied"))


def webhooks_address(address: Optional[str]) -> Markup:
    """An address in a ``<code>`` that wraps between its parts (after the
    host, before each "/", "?" and "&" of the rest), never inside the
    host unless the host alone is too wide."""
    address = address or ""
    scheme, sep, rest = address.partition("://")
    if not sep:
        return Markup('<code class="webhooks-address">{}</code>').format(
            address)
    host, slash, tail = rest.partition("/")
    pieces = [escape(piece) for piece in
              re.split(r"(?=[/?&])", slash + tail) if piece]
    return Markup('<code class="webhooks-address"><span class="webhooks-host">'
                  '{}</span>{}</code>').format(
        scheme + sep + host,
        Markup("").join(Markup("<wbr>") + piece for piece in pieces))


def webhooks_json(value: Any) -> str:
    """A payload as indented JSON text."""
    import json
    return json.dumps(value, indent=2, ensure_ascii=False, sort_keys=False)


def webhooks_asset(path: str) -> str:
    """The address of one of the extension's static files, with the
    version, so a browser never keeps an old copy after an upgrade."""
    return "{}?v={}".format(
        tk.h.url_for_static("/ckanext-webhooks/" + path),
        escape(__version__))
