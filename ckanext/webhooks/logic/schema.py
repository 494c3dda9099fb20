"""Input schemas of the webhook actions (marshmallow).

``load`` turns marshmallow's errors into CKAN's ``ValidationError`` naming the
field, so bad input is a 409 through the API, never a 500.
"""
from __future__ import annotations

import datetime
from typing import Any

from marshmallow import (
    EXCLUDE, RAISE, Schema, ValidationError as SchemaError, fields,
    pre_load, validate, validates_schema,
)

import ckan.plugins.toolkit as tk

from ckanext.webhooks import addresses
from ckanext.webhooks.model import FILTER_NAMES

TOPICS = (
    "dataset/create", "dataset/update", "dataset/delete", "dataset/*",
    "resource/create", "resource/update", "resource/delete", "resource/*",
    "organization/create", "organization/update", "organization/delete",
    "organization/*",
    "group/create", "group/update", "group/delete", "group/*",
)

FILTERS = FILTER_NAMES
# what a delivery can be: the topics, and the messages of the hook itself
HOOK_MESSAGE_TYPES = ("webhook/verify", "webhook/ping")
MESSAGE_TYPES = TOPICS + HOOK_MESSAGE_TYPES
DELIVERY_STATUSES = ("pending", "succeeded", "failed")
DESCRIPTION_LENGTH = 200
# OFFSET is a bigint in PostgreSQL
MAX_OFFSET = 2 ** 63 - 1


def is_wildcard(topic: str) -> bool:
    return topic.endswith("/*")


def matches(subscribed: list[str], topic: str) -> bool:
    """Whether a hook subscribed to ``subscribed`` receives ``topic``."""
    return topic in subscribed or \
        topic.split("/")[0] + "/*" in subscribed


class Text(fields.String):
    """A string PostgreSQL can store: valid Unicode (no lone surrogates from
    ``"\\ud800"`` in JSON) without NUL characters."""

    def _deserialize(self, value: Any, attr: Any, data: Any,
                     **kwargs: Any) -> Any:
        text = super()._deserialize(value, attr, data, **kwargs)
        if text is None:
            return text
        if "\x00" in text:
            raise SchemaError(tk._("Must not contain NUL characters"))
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            raise SchemaError(tk._(
                "Must be valid Unicode text (a lone surrogate is not)")) \
                from None
        return text


class UTCDateTime(fields.DateTime):
    """An ISO 8601 time, as naive UTC (the way the tables store times); a
    time without an offset is taken as UTC."""

    def _deserialize(self, value: Any, attr: Any, data: Any,
                     **kwargs: Any) -> Any:
        moment = super()._deserialize(value, attr, data, **kwargs)
        if moment.tzinfo is not None:
            try:
                moment = moment.astimezone(datetime.timezone.utc)
            except OverflowError:
                raise SchemaError(tk._("Not a valid time")) from None
            moment = moment.replace(tzinfo=None)
        return moment


def _known_topic(value: str) -> None:
    if value not in TOPICS:
        raise SchemaError(tk._("Unknown topic; use one of: {0}").format(
            ", ".join(TOPICS)))


def _usable_address(value: str) -> None:
    if not value.strip():
        raise SchemaError(tk._(
            "Enter the address of your receiver, e.g. "
            "https://example.com/ckan-webhook"))
    problem = addresses.syntax_problem(value)
    if problem:
        raise SchemaError(problem)


# any string may be looked up: unknown ids of any shape are simply NotFound
_ID = Text(required=True)


def _filter() -> Text:
    return Text(allow_none=True, validate=validate.Length(max=200))


def _no_topic_twice(topics: list[str]) -> None:
    """A topic its wildcard already covers is a mistake (the hook would
    look as if it got that event twice)."""
    covered = [t for t in topics if not is_wildcard(t)
               and t.split("/")[0] + "/*" in topics]
    if covered:
        raise SchemaError(tk._(
            "{topics} already covered by {wildcards}: choose either the "
            "wildcard or single events").format(
            topics=", ".join(covered), wildcards=", ".join(sorted(
                {t.split("/")[0] + "/*" for t in covered}))))


def _topics() -> fields.List:
    return fields.List(Text(validate=_known_topic),
                       validate=[validate.Length(min=1, max=len(TOPICS)),
                                 _no_topic_twice])


class _Base(Schema):
    class Meta:
        unknown = EXCLUDE


class _HookFields(Schema):
    """What create and update share: a misspelt field is an error, not
    silently ignored."""

    class Meta:
        unknown = RAISE

    topic = Text(validate=_known_topic)
    topics = _topics()
    address = Text(validate=_usable_address)
    dataset = _filter()
    organization = _filter()
    group = _filter()
    resource = _filter()
    description = Text(allow_none=True, validate=validate.Length(
        max=DESCRIPTION_LENGTH))

    @pre_load
    def _blank_is_none(self, data: Any, **kwargs: Any) -> Any:
        """A blank filter or description means none; a description is
        kept without surrounding space."""
        if isinstance(data, dict):
            data = dict(data)
            if isinstance(data.get("description"), str):
                data["description"] = data["description"].strip()
            for name in FILTERS + ("description",):
                if isinstance(data.get(name), str) and not data[name].strip():
                    data[name] = None
        return data

    @validates_schema(pass_original=True, skip_on_field_errors=False)
    def _one_way_to_give_topics(self, data: dict[str, Any], original: Any,
                                **kwargs: Any) -> None:
        if "topic" in original and "topics" in original:
            raise SchemaError(tk._("Give either topic or topics, not both"),
                              "topics")


class HookCreateSchema(_HookFields):
    address = Text(required=True, validate=_usable_address)

    @validates_schema(pass_original=True, skip_on_field_errors=False)
    def _some_topic(self, data: dict[str, Any], original: Any,
                    **kwargs: Any) -> None:
        if "topic" not in original and "topics" not in original:
            raise SchemaError(tk._("Missing data for required field."),
                              "topic")


class HookUpdateSchema(_HookFields):
    id = _ID
    enabled = fields.Boolean()


def topics_of(data: dict[str, Any]) -> list[str] | None:
    """The topics ``topic`` or ``topics`` give, each once; None if neither."""
    if "topics" in data:
        return list(dict.fromkeys(data["topics"]))
    if "topic" in data:
        return [data["topic"]]
    return None


class HookIdSchema(_Base):
    id = _ID


class PingSchema(_Base):
    id = _ID
    topic = Text(load_default=None, allow_none=True, validate=_known_topic)


def _known_delivery_status(value: str) -> None:
    if value not in DELIVERY_STATUSES:
        raise SchemaError(tk._("Unknown status; use one of: {0}").format(
            ", ".join(DELIVERY_STATUSES)))


def _known_message_type(value: str) -> None:
    if value not in MESSAGE_TYPES:
        raise SchemaError(tk._("Unknown type; use one of: {0}").format(
            ", ".join(MESSAGE_TYPES)))


class DeliveryListSchema(_Base):
    id = _ID
    limit = fields.Integer(load_default=20,
                           validate=validate.Range(min=1, max=100))
    offset = fields.Integer(load_default=0,
                            validate=validate.Range(min=0, max=MAX_OFFSET))
    status = Text(load_default=None, allow_none=True,
                  validate=_known_delivery_status)
    # a topic (a wildcard: every type it covers), webhook/ping or
    # webhook/verify
    type = Text(load_default=None, allow_none=True,
                validate=_known_message_type)
    since = UTCDateTime(load_default=None, allow_none=True)
    until = UTCDateTime(load_default=None, allow_none=True)

    @pre_load
    def _blank_is_none(self, data: Any, **kwargs: Any) -> Any:
        """An empty filter (a form's "any" choice) is no filter."""
        if isinstance(data, dict):
            data = {name: None if name in self._FILTERS
                    and isinstance(value, str) and not value.strip()
                    else value for name, value in data.items()}
        return data

    _FILTERS = ("status", "type", "since", "until")

    @validates_schema(skip_on_field_errors=True)
    def _since_before_until(self, data: dict[str, Any],
                            **kwargs: Any) -> None:
        if data.get("since") and data.get("until") \
                and data["since"] >= data["until"]:
            raise SchemaError(tk._("Must be later than since"), "until")


class DeliverySchema(_Base):
    id = _ID
    delivery_id = Text(required=True)


class RecoverSchema(_Base):
    id = _ID
    since = UTCDateTime(required=True)


class HookListSchema(_Base):
    limit = fields.Integer(load_default=100,
                           validate=validate.Range(min=1, max=1000))
    offset = fields.Integer(load_default=0,
                            validate=validate.Range(min=0, max=MAX_OFFSET))
    mine = fields.Boolean(load_default=False)
    q = Text(load_default=None, allow_none=True,
             validate=validate.Length(max=200))


def _texts(messages: Any) -> list[str]:
    """marshmallow's messages of one field (nested for list items) as text."""
    if isinstance(messages, dict):
        return ["{0}: {1}".format(key, text) for key, value in
                messages.items() for text in _texts(value)]
    if isinstance(messages, list):
        return [text for m in messages for text in _texts(m)]
    return [str(messages)]


def load(schema: type[Schema], data_dict: Any) -> dict[str, Any]:
    """Validated input, or ``tk.ValidationError`` naming each bad field."""
    if not isinstance(data_dict, dict):
        raise tk.ValidationError({"__input": [tk._("Expected an object")]})
    try:
        return schema().load(data_dict)
    except SchemaError as e:
        messages = e.messages if isinstance(e.messages, dict) \
            else {"__input": e.messages}
        errors: dict[str, Any] = {
            str(field): _texts(msgs) for field, msgs in messages.items()}
        raise tk.ValidationError(errors) from None
