"""The event catalogue: every message type a hook can get, what it means,
who gets it, a real example body, and its JSON Schema.

One list of types drives all of it: the topics of ``logic/schema.py``
(``TOPICS``, wildcards left out) and the hook's own messages
(``webhook/verify``, ``webhook/ping``). A new topic needs an entry in
``_descriptions`` and a ``data`` schema in ``_DATA_OF``, a label in
``helpers._topic_labels``, and an example in ``event_examples.json`` and
docs/events.rst (both written from real deliveries by
``tests/test_event_catalogue.py``, which validates every delivery against
these schemas).

Shown as the page ``/webhooks/events``; served machine-readable as a JSON
Schema (2020-12) per type at ``/webhooks/events/<kind>/<name>.json`` and
one OpenAPI 3.1 document (its ``webhooks``) at
``/webhooks/events/openapi.json``.
"""
from __future__ import annotations

import copy
from typing import Any, Callable

import ckan.plugins.toolkit as tk

from ckanext.webhooks import __version__, examples
from ckanext.webhooks.logic import schema

JSON_SCHEMA = "https://json-schema.org/draft/2020-12/schema"
Ref = Callable[[str], dict[str, Any]]


def message_types() -> list[str]:
    """Every type a delivery can have, in the order of the catalogue."""
    return [t for t in schema.TOPICS if not schema.is_wildcard(t)] + \
        list(schema.HOOK_MESSAGE_TYPES)


def kind_of(message_type: str) -> str:
    return message_type.split("/", 1)[0]


def anchor(message_type: str) -> str:
    """The id of a type's section on the page: ``dataset-create``."""
    return message_type.replace("/", "-")


def _descriptions() -> dict[str, str]:
    return {
        "dataset/create": tk._(
            "A dataset becomes active for the first time: created active, "
            "or a draft completed. A dataset created with its resources is "
            "this one event, without resource/create events. data is the "
            "dataset as package_show returns it to the hook's owner."),
        "dataset/update": tk._(
            "An active (or draft) dataset changes: its own fields, tags, "
            "extras or groups. A change of a resource alone is a "
            "resource/update. data is the dataset as package_show returns "
            "it; changes names each field this change altered, with its "
            "value before."),
        "dataset/delete": tk._(
            "A dataset is deleted or purged. data is a minimal record: id, "
            "name, title, type, owner_org and state."),
        "resource/create": tk._(
            "A resource is added to an existing dataset. data is the "
            "resource as resource_show returns it."),
        "resource/update": tk._(
            "A resource's fields change (a change of its position alone is "
            "not news). data is the resource as resource_show returns it; "
            "changes names each field this change altered, with its value "
            "before."),
        "resource/delete": tk._(
            "A resource is deleted (resources deleted with their dataset "
            "are part of its dataset/delete). data is a minimal record: id, "
            "package_id, name and state."),
        "organization/create": tk._(
            "An organization is created. data is what organization_show "
            "returns to the hook's owner, without the dataset list."),
        "organization/update": tk._(
            "An organization's own fields or extras change (members and "
            "datasets coming and going are not organization updates)."),
        "organization/delete": tk._(
            "An organization is deleted or purged. data is a minimal "
            "record: id, name, title, type, is_organization and state."),
        "group/create": tk._(
            "A group is created. data is what group_show returns to the "
            "hook's owner, without the dataset list."),
        "group/update": tk._(
            "A group's own fields or extras change (datasets added or "
            "removed are dataset/update events of those datasets)."),
        "group/delete": tk._(
            "A group is deleted or purged; each dataset that was in it also "
            "gets a dataset/update. data is a minimal record as for "
            "organizations."),
        "webhook/verify": tk._(
            "Not an event: the challenge sent to a new hook, and to a hook "
            "whose address changed, while the portal verifies intent. "
            "Answer 2xx with data.challenge as the body (or the JSON "
            '{"challenge": "<token>"}) and the hook becomes active.'),
        "webhook/ping": tk._(
            "Not an event: sent on request (Send a ping, webhook_ping) to "
            "check that the receiver works. data is {}."),
    }


def _audiences() -> dict[str, str]:
    return {
        "dataset": tk._(
            "Hooks subscribed to this type or to dataset/* whose owner "
            "could see the dataset when it happened and still can when it "
            "is delivered (private and draft datasets: only owners who may "
            "read them; hooks created without login: public datasets "
            "only). Filters: dataset, organization, group."),
        "resource": tk._(
            "Hooks subscribed to this type or to resource/* whose owner "
            "may see the resource's dataset, as for dataset events. "
            "Filters: dataset, organization, resource."),
        "organization": tk._(
            "Hooks subscribed to this type or to organization/*; an active "
            "organization is seen by everyone, one that is not only by its "
            "members and sysadmins. Filter: organization."),
        "group": tk._(
            "Hooks subscribed to this type or to group/*; an active group "
            "is seen by everyone, one that is not only by its members and "
            "sysadmins. Filter: group."),
        "webhook": tk._(
            "Not a topic: every hook gets these, whatever its topics and "
            "filters."),
    }


def description(message_type: str) -> str:
    return _descriptions().get(message_type, "")


def audience(message_type: str) -> str:
    return _audiences().get(kind_of(message_type), "")


# --- JSON Schema -------------------------------------------------------------

_TEXT = {"type": "string"}
_MAYBE_TEXT = {"type": ["string", "null"]}
_TIME = {"type": "string", "description": "ISO 8601, UTC, as CKAN stores it"}


def _nullable(names: tuple[str, ...]) -> dict[str, Any]:
    return {name: _MAYBE_TEXT for name in names}


def _definitions(ref: Ref) -> dict[str, dict[str, Any]]:
    """The schemas of ``data`` and of ``changes``; ``ref(name)`` points to
    another of them."""
    return {
        "Resource": {
            "type": "object",
            "description": "A resource as resource_show returns it.",
            "required": ["id", "package_id", "url", "state"],
            "properties": dict(
                {"id": _TEXT, "package_id": _TEXT, "url": _TEXT,
                 "state": _TEXT, "position": {"type": "integer"},
                 "created": _TIME, "metadata_modified": _TIME},
                **_nullable(("name", "description", "format", "mimetype",
                             "url_type", "resource_type", "hash"))),
        },
        "Dataset": {
            "type": "object",
            "description": "A dataset as package_show returns it to the "
            "hook's owner.",
            "required": ["id", "name", "title", "type", "state", "private",
                         "owner_org", "metadata_created",
                         "metadata_modified", "resources", "tags",
                         "groups"],
            "properties": dict(
                {"id": _TEXT, "name": _TEXT, "title": _TEXT, "type": _TEXT,
                 "state": _TEXT, "private": {"type": "boolean"},
                 "metadata_created": _TIME, "metadata_modified": _TIME,
                 "num_resources": {"type": "integer"},
                 "num_tags": {"type": "integer"},
                 "organization": {"type": ["object", "null"],
                                  "required": ["id", "name"]},
                 "resources": {"type": "array", "items": ref("Resource")},
                 "tags": {"type": "array", "items": {
                     "type": "object", "required": ["name"],
                     "properties": {"name": _TEXT}}},
                 "extras": {"type": "array", "items": {
                     "type": "object", "required": ["key", "value"],
                     "properties": {"key": _TEXT}}},
                 "groups": {"type": "array", "items": {
                     "type": "object", "required": ["id", "name"],
                     "properties": {"id": _TEXT, "name": _TEXT}}}},
                **_nullable(("owner_org", "notes", "url", "version",
                             "license_id", "author", "author_email",
                             "maintainer", "maintainer_email"))),
        },
        "DeletedDataset": {
            "type": "object",
            "description": "What is left of a deleted or purged dataset.",
            "required": ["id", "name", "state"],
            "properties": dict({"id": _TEXT, "state": {"const": "deleted"}},
                               **_nullable(("name", "title", "type",
                                            "owner_org"))),
            "additionalProperties": False,
        },
        "DeletedResource": {
            "type": "object",
            "description": "What is left of a deleted resource.",
            "required": ["id", "package_id", "state"],
            "properties": dict({"id": _TEXT, "package_id": _TEXT,
                                "state": {"const": "deleted"}},
                               **_nullable(("name",))),
            "additionalProperties": False,
        },
        "Organization": _group_schema(True),
        "Group": _group_schema(False),
        "DeletedOrganization": _deleted_group_schema(True),
        "DeletedGroup": _deleted_group_schema(False),
        "Challenge": {
            "type": "object",
            "required": ["challenge"],
            "properties": {"challenge": _TEXT},
            "additionalProperties": False,
        },
        "Nothing": {"type": "object", "maxProperties": 0},
        "Changes": {
            "type": "object",
            "description": "The fields this change altered, each with its "
            "value before; the value now is in data.",
            "additionalProperties": {
                "type": "object", "required": ["from"],
                "properties": {"from": {}}, "additionalProperties": False},
        },
    }


def _group_schema(is_organization: bool) -> dict[str, Any]:
    show = "organization_show" if is_organization else "group_show"
    return {
        "type": "object",
        "description": "What {} returns to the hook's owner, without the "
        "dataset list.".format(show),
        "required": ["id", "name", "title", "type", "state",
                     "is_organization", "created"],
        "properties": dict(
            {"id": _TEXT, "name": _TEXT, "title": _TEXT, "type": _TEXT,
             "state": _TEXT, "is_organization": {"const": is_organization},
             "created": _TIME, "package_count": {"type": "integer"}},
            **_nullable(("description", "image_url", "approval_status"))),
    }


def _deleted_group_schema(is_organization: bool) -> dict[str, Any]:
    return {
        "type": "object",
        "description": "What is left of a deleted or purged {}.".format(
            "organization" if is_organization else "group"),
        "required": ["id", "name", "state"],
        "properties": dict(
            {"id": _TEXT, "state": {"const": "deleted"},
             "is_organization": {"const": is_organization}},
            **_nullable(("name", "title", "type"))),
        "additionalProperties": False,
    }


# the schema of each type's data (new topics: add theirs here)
_DATA_OF = {
    "dataset/create": "Dataset", "dataset/update": "Dataset",
    "dataset/delete": "DeletedDataset",
    "resource/create": "Resource", "resource/update": "Resource",
    "resource/delete": "DeletedResource",
    "organization/create": "Organization",
    "organization/update": "Organization",
    "organization/delete": "DeletedOrganization",
    "group/create": "Group", "group/update": "Group",
    "group/delete": "DeletedGroup",
    "webhook/verify": "Challenge", "webhook/ping": "Nothing",
}
# the types whose bodies carry ``changes``
_WITH_CHANGES = ("dataset/update", "resource/update")


def schema_name(message_type: str) -> str:
    """The name of a type's message schema: ``DatasetCreateMessage``."""
    return "".join(part.capitalize() for part in
                   message_type.replace("/", "-").split("-")) + "Message"


def _message(message_type: str, ref: Ref) -> dict[str, Any]:
    properties: dict[str, Any] = {
        "id": {"type": "string", "pattern": r"^[^.]+$",
               "description": "The message id, also the webhook-id header; "
               "the same on every attempt."},
        "type": {"const": message_type},
        "timestamp": {"type": "string",
                      "pattern": r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$",
                      "description": "When the event happened, UTC."},
        "hook_id": _TEXT,
        "site_url": _TEXT,
        "data": ref(_DATA_OF[message_type]),
    }
    if message_type in _WITH_CHANGES:
        properties["changes"] = ref("Changes")
    if message_type in schema.TOPICS:
        properties["test"] = {
            "const": True, "description": "Only in test deliveries "
            "(webhook_ping with a topic), whose data is an example."}
    return {
        "title": message_type,
        "description": description(message_type),
        "type": "object",
        "required": ["id", "type", "timestamp", "hook_id", "site_url",
                     "data"],
        "properties": properties,
        "additionalProperties": False,
    }


def topic_schema(message_type: str, schema_id: str) -> dict[str, Any]:
    """A standalone JSON Schema (2020-12) of a type's bodies."""
    document: dict[str, Any] = {"$schema": JSON_SCHEMA, "$id": schema_id}
    document.update(_message(message_type,
                             lambda name: {"$ref": "#/$defs/" + name}))
    document["$defs"] = _definitions(lambda name: {"$ref": "#/$defs/" + name})
    return document


def _header(name: str, text: str) -> dict[str, Any]:
    return {"name": name, "in": "header", "required": True,
            "description": text, "schema": {"type": "string"}}


def openapi(site_url: str, site_title: str,
            schema_url: Callable[[str], str]) -> dict[str, Any]:
    """The whole catalogue as an OpenAPI 3.1 document: one entry of
    ``webhooks`` per type, the schemas under ``components``."""
    def ref(name: str) -> dict[str, Any]:
        return {"$ref": "#/components/schemas/" + name}

    headers = [
        _header("webhook-id", "The message id (the body's id)."),
        _header("webhook-timestamp", "The attempt's time, integer Unix "
                "seconds."),
        _header("webhook-signature", "v1,<base64 HMAC-SHA256> over "
                "{webhook-id}.{webhook-timestamp}.{body}, keyed with the "
                "base64-decoded part of the hook's secret after whsec_; "
                "several, separated by spaces, while a secret is replaced."),
    ]
    schemas = _definitions(ref)
    hooks: dict[str, Any] = {}
    for message_type in message_types():
        name = schema_name(message_type)
        schemas[name] = dict(_message(message_type, ref),
                             externalDocs={"url": schema_url(message_type)})
        example = examples.example_body(message_type)
        content: dict[str, Any] = {"schema": ref(name)}
        if example is not None:
            content["example"] = example
        hooks[message_type] = {"post": {
            "operationId": anchor(message_type),
            "summary": message_type,
            "description": "{} {}".format(description(message_type),
                                          audience(message_type)),
            "parameters": copy.deepcopy(headers),
            "requestBody": {"required": True,
                            "content": {"application/json": content}},
            "responses": {
                "2XX": {"description": "Received (a webhook/verify: the "
                        "challenge echoed)."},
                "410": {"description": "Gone: the hook is deleted."},
            },
        }}
    return {
        "openapi": "3.1.0",
        "jsonSchemaDialect": JSON_SCHEMA,
        "info": {
            "title": "Webhooks of {}".format(site_title),
            "version": __version__,
            "description": "Signed HTTP POSTs (Standard Webhooks) that {} "
            "sends to the address of each hook, one per event. Manage hooks "
            "with the action API (webhook_create and friends).".format(
                site_url),
        },
        "webhooks": hooks,
        "components": {"schemas": schemas},
    }


def entries() -> list[dict[str, Any]]:
    """The catalogue for the page: each type with its description, who gets
    it and its example body, grouped by kind."""
    kinds: dict[str, list[dict[str, Any]]] = {}
    for message_type in message_types():
        kinds.setdefault(kind_of(message_type), []).append({
            "type": message_type,
            "anchor": anchor(message_type),
            "description": description(message_type),
            "audience": audience(message_type),
            "example": examples.example_body(message_type),
        })
    return [{"kind": kind, "types": types} for kind, types in kinds.items()]
