"""Input schemas of the webhook actions (marshmallow).

``load`` turns marshmallow's errors into CKAN's ``ValidationError`` naming the
field, so bad input is a 409 through the API, never a 500.
"""
from __future__ import annotations

from typing import Any

from marshmallow import (
    EXCLUDE, RAISE, Schema, ValidationError as SchemaError, fields,
    pre_load, validate, validates,
)

import ckan.plugins.toolkit as tk

from ckanext.webhooks import addresses

TOPICS = (
    "dataset/create", "dataset/update", "dataset/delete", "dataset/*",
    "resource/create", "resource/update", "resource/delete", "resource/*",
    "organization/create", "organization/update", "organization/delete",
    "organization/*",
    "group/create", "group/update", "group/delete", "group/*",
)

class Text(fields.String):
    """A string PostgreSQL can store: no NUL characters."""

    def _deserialize(self, value: Any, attr: Any, data: Any,
                     **kwargs: Any) -> Any:
        text = super()._deserialize(value, attr, data, **kwargs)
        if text is not None and "\x00" in text:
            raise SchemaError(tk._("Must not contain NUL characters"))
        return text


# any string may be looked up: unknown ids of any shape are simply NotFound
_ID = Text(required=True)


class _Base(Schema):
    class Meta:
        unknown = EXCLUDE


class HookCreateSchema(Schema):
    class Meta:
        unknown = RAISE

    topic = Text(required=True)
    address = Text(required=True)
    dataset = Text(load_default=None, allow_none=True,
                            validate=validate.Length(max=200))
    organization = Text(load_default=None, allow_none=True,
                                 validate=validate.Length(max=200))
    group = Text(load_default=None, allow_none=True,
                          validate=validate.Length(max=200))
    resource = Text(load_default=None, allow_none=True,
                             validate=validate.Length(max=200))

    @pre_load
    def _blank_filters_are_none(self, data: Any, **kwargs: Any) -> Any:
        if isinstance(data, dict):
            data = dict(data)
            for name in ("dataset", "organization", "group", "resource"):
                if isinstance(data.get(name), str) and not data[name].strip():
                    data[name] = None
        return data

    @validates("topic")
    def _known_topic(self, value: str, **kwargs: Any) -> None:
        if value not in TOPICS:
            raise SchemaError(tk._("Unknown topic; use one of: {0}").format(
                ", ".join(TOPICS)))

    @validates("address")
    def _usable_address(self, value: str, **kwargs: Any) -> None:
        problem = addresses.syntax_problem(value)
        if problem:
            raise SchemaError(problem)


class HookIdSchema(_Base):
    id = _ID


class DeliveryListSchema(_Base):
    id = _ID
    limit = fields.Integer(load_default=20,
                           validate=validate.Range(min=1, max=100))


class RedeliverSchema(_Base):
    id = _ID
    delivery_id = Text(required=True)


class HookListSchema(_Base):
    limit = fields.Integer(load_default=100,
                           validate=validate.Range(min=1, max=1000))
    offset = fields.Integer(load_default=0, validate=validate.Range(min=0))
    mine = fields.Boolean(load_default=False)


def load(schema: type[Schema], data_dict: Any) -> dict[str, Any]:
    """Validated input, or ``tk.ValidationError`` naming each bad field."""
    if not isinstance(data_dict, dict):
        raise tk.ValidationError({"__input": [tk._("Expected an object")]})
    try:
        return schema().load(data_dict)
    except SchemaError as e:
        messages = e.messages if isinstance(e.messages, dict) \
            else {"__input": e.messages}
        raise tk.ValidationError({
            field: [str(m) for m in (msgs if isinstance(msgs, list)
                                     else [msgs])]
            for field, msgs in messages.items()})
