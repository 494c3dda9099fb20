"""Tables of the webhooks extension.

Tables exist only through the migrations in ``migration/webhooks``; this module
maps them. There are no foreign keys to CKAN's core tables: a hook names
datasets, organizations and users by id only.
"""
from __future__ import annotations

import datetime
import secrets
import uuid
from typing import Any, Optional

import sqlalchemy as sa
from sqlalchemy import orm
# the annotations type the columns for mypy (SQLAlchemy 2.0 reads them too,
# so the names they use are imported at run time)
from sqlalchemy.orm import Mapped
from sqlalchemy.dialects.postgresql import JSONB, ARRAY

import ckan.plugins.toolkit as tk

from ckanext.webhooks.addresses import normalized

STATUS_PENDING = "pending"
STATUS_ACTIVE = "active"
STATUS_DISABLED = "disabled"
# the status_reason of a hook its owner paused (webhook_update enabled=false):
# a successful ping does not re-enable it
REASON_DISABLED_BY_OWNER = "disabled by its owner"

# the types of messages without an event
TYPE_PING = "webhook/ping"
TYPE_VERIFY = "webhook/verify"

MESSAGE_PENDING = "pending"
MESSAGE_SUCCEEDED = "succeeded"
MESSAGE_FAILED = "failed"

FILTER_NAMES = ("dataset", "organization", "group", "resource")


def utcnow() -> datetime.datetime:
    """Naive UTC, the way CKAN stores its own timestamps."""
    return datetime.datetime.now(datetime.timezone.utc).replace(tzinfo=None)


def new_hook_id() -> str:
    """256 random bits, URL-safe, 43 characters, never starting with "-"
    (a command line would read such an id as an option)."""
    while True:
        hook_id = secrets.token_urlsafe(32)
        if not hook_id.startswith("-"):
            return hook_id


def new_secret() -> str:
    import base64
    return "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()


def new_message_id() -> str:
    # Standard Webhooks style; no "." so it cannot break the signed content
    return "msg_" + uuid.uuid4().hex


class Hook(tk.BaseModel):
    """A subscription: a topic, a callback address and optional filters."""

    __tablename__ = "webhooks_hook"

    id: Mapped[str] = sa.Column(
        sa.UnicodeText, primary_key=True, default=new_hook_id)
    topics: Mapped[list[str]] = sa.Column(
        ARRAY(sa.UnicodeText), nullable=False)
    description: Mapped[Optional[str]] = sa.Column(
        sa.UnicodeText, nullable=True)
    address: Mapped[str] = sa.Column(sa.UnicodeText, nullable=False)
    # what the per-address cap counts; kept in step with ``address``
    normalized_address: Mapped[str] = sa.Column(sa.UnicodeText, nullable=False)
    owner_id: Mapped[Optional[str]] = sa.Column(sa.UnicodeText, nullable=True)
    secret: Mapped[str] = sa.Column(
        sa.UnicodeText, nullable=False, default=new_secret)
    status: Mapped[str] = sa.Column(
        sa.UnicodeText, nullable=False, default=STATUS_ACTIVE)
    status_reason: Mapped[Optional[str]] = sa.Column(
        sa.UnicodeText, nullable=True)
    filter_dataset: Mapped[Optional[str]] = sa.Column(
        sa.UnicodeText, nullable=True)
    filter_organization: Mapped[Optional[str]] = sa.Column(
        sa.UnicodeText, nullable=True)
    filter_group: Mapped[Optional[str]] = sa.Column(
        sa.UnicodeText, nullable=True)
    filter_resource: Mapped[Optional[str]] = sa.Column(
        sa.UnicodeText, nullable=True)
    created: Mapped[datetime.datetime] = sa.Column(
        sa.DateTime, nullable=False, default=utcnow)
    client_errors: Mapped[int] = sa.Column(
        sa.Integer, nullable=False, default=0)
    last_success: Mapped[Optional[datetime.datetime]] = sa.Column(
        sa.DateTime, nullable=True)
    failing_since: Mapped[Optional[datetime.datetime]] = sa.Column(
        sa.DateTime, nullable=True)
    # when the hook answered its challenge; null while it never did
    verified: Mapped[Optional[datetime.datetime]] = sa.Column(
        sa.DateTime, nullable=True)
    # the circuit breaker: failures in a row, and until when new messages wait
    consecutive_failures: Mapped[int] = sa.Column(
        sa.Integer, nullable=False, default=0)
    circuit_until: Mapped[Optional[datetime.datetime]] = sa.Column(
        sa.DateTime, nullable=True)
    # the challenge is sent at most three times, and on request at most once
    # every ten minutes
    challenges_sent: Mapped[int] = sa.Column(
        sa.Integer, nullable=False, default=0)
    last_challenge: Mapped[Optional[datetime.datetime]] = sa.Column(
        sa.DateTime, nullable=True)
    last_recover: Mapped[Optional[datetime.datetime]] = sa.Column(
        sa.DateTime, nullable=True)
    # the sysadmin who paused the hook (a sysadmin's pause is not the
    # owner's); deferred: loading a hook works before the migration that
    # adds it has run
    disabled_by: Mapped[Optional[str]] = orm.deferred(sa.Column(
        sa.UnicodeText, nullable=True))

    @orm.validates("address")
    def _keep_normalized_address(self, key: str, address: str) -> str:
        self.normalized_address = normalized(address) \
            if isinstance(address, str) else address
        return address

    @property
    def topic(self) -> "str | None":
        """The only topic, or None when the hook has several."""
        topics = self.topics or []
        return topics[0] if len(topics) == 1 else None

    @classmethod
    def get(cls, hook_id) -> "Hook | None":
        if not isinstance(hook_id, str) or not hook_id:
            return None
        from ckan.model import Session
        return Session.get(cls, hook_id)

    @property
    def filters(self) -> dict:
        return {name: getattr(self, "filter_" + name) for name in FILTER_NAMES}


class Event(tk.BaseModel):
    """A committed change of a dataset or resource, waiting to be fanned out.

    Written in the same transaction as the change itself (a transactional
    outbox): it exists exactly when the change committed.
    """

    __tablename__ = "webhooks_event"

    id: Mapped[str] = sa.Column(sa.UnicodeText, primary_key=True,
                   default=lambda: uuid.uuid4().hex)
    topic: Mapped[str] = sa.Column(sa.UnicodeText, nullable=False)
    entity_id: Mapped[str] = sa.Column(sa.UnicodeText, nullable=False)
    # null for organization and group events
    package_id: Mapped[Optional[str]] = sa.Column(
        sa.UnicodeText, nullable=True)
    organization_id: Mapped[Optional[str]] = sa.Column(
        sa.UnicodeText, nullable=True)
    group_ids: Mapped[list[str]] = sa.Column(
        ARRAY(sa.UnicodeText), nullable=False, default=list)
    # private or not active when the event happened
    restricted: Mapped[bool] = sa.Column(
        sa.Boolean, nullable=False, default=False)
    # what a deletion delivers, and what access is judged on once purged
    snapshot: Mapped[dict[str, Any]] = sa.Column(
        JSONB, nullable=False, default=dict)
    created: Mapped[datetime.datetime] = sa.Column(
        sa.DateTime, nullable=False, default=utcnow)
    fanned_out: Mapped[Optional[datetime.datetime]] = sa.Column(
        sa.DateTime, nullable=True)
    # updates: {field: value before} of what the change altered
    changes: Mapped[Optional[dict[str, Any]]] = sa.Column(JSONB, nullable=True)


class Message(tk.BaseModel):
    """One message to one hook, with the outcome of its latest attempt."""

    __tablename__ = "webhooks_delivery"

    id: Mapped[str] = sa.Column(
        sa.UnicodeText, primary_key=True, default=new_message_id)
    hook_id: Mapped[str] = sa.Column(
        sa.UnicodeText,
        sa.ForeignKey("webhooks_hook.id", ondelete="CASCADE"),
        nullable=False)
    event_id: Mapped[Optional[str]] = sa.Column(sa.UnicodeText, nullable=True)
    type: Mapped[str] = sa.Column(sa.UnicodeText, nullable=False)
    # for messages without an event (webhook/ping, webhook/verify)
    data: Mapped[Optional[dict[str, Any]]] = sa.Column(JSONB, nullable=True)
    body: Mapped[Optional[str]] = sa.Column(sa.UnicodeText, nullable=True)
    status: Mapped[str] = sa.Column(sa.UnicodeText, nullable=False,
                       default=MESSAGE_PENDING)
    attempts: Mapped[int] = sa.Column(sa.Integer, nullable=False, default=0)
    response_status: Mapped[Optional[int]] = sa.Column(
        sa.Integer, nullable=True)
    error: Mapped[Optional[str]] = sa.Column(sa.UnicodeText, nullable=True)
    duration_ms: Mapped[Optional[int]] = sa.Column(sa.Integer, nullable=True)
    created: Mapped[datetime.datetime] = sa.Column(
        sa.DateTime, nullable=False, default=utcnow)
    last_attempt: Mapped[Optional[datetime.datetime]] = sa.Column(
        sa.DateTime, nullable=True)
    next_attempt: Mapped[Optional[datetime.datetime]] = sa.Column(
        sa.DateTime, nullable=True, default=utcnow)
    lease_until: Mapped[Optional[datetime.datetime]] = sa.Column(
        sa.DateTime, nullable=True)
    # the claim that holds the message while ``lease_until`` lasts: outcomes,
    # renewals and releases touch the message only while it still does
    lease_id: Mapped[Optional[str]] = sa.Column(sa.UnicodeText, nullable=True)
    # the dataset (organization, group) a message of an event is about: a
    # hook's messages of one sequence go out one after another
    sequence: Mapped[Optional[str]] = sa.Column(
        sa.UnicodeText, nullable=True)
    # how often a person asked for it again (redeliver, recover): a request
    # made during an attempt wins over that attempt's outcome
    redeliveries: Mapped[int] = sa.Column(
        sa.Integer, nullable=False, default=0)
    # a test delivery ("test": true in the body, example data)
    test: Mapped[bool] = sa.Column(sa.Boolean, nullable=False, default=False)


class Secret(tk.BaseModel):
    """A secret the hook retired: it signs beside the current one until it
    expires (24 hours after its rotation)."""

    __tablename__ = "webhooks_secret"

    id: Mapped[int] = sa.Column(
        sa.BigInteger, primary_key=True, autoincrement=True)
    hook_id: Mapped[str] = sa.Column(
        sa.UnicodeText,
        sa.ForeignKey("webhooks_hook.id", ondelete="CASCADE"),
        nullable=False)
    secret: Mapped[str] = sa.Column(sa.UnicodeText, nullable=False)
    retired: Mapped[datetime.datetime] = sa.Column(
        sa.DateTime, nullable=False, default=utcnow)
    expires: Mapped[datetime.datetime] = sa.Column(
        sa.DateTime, nullable=False)


class Attempt(tk.BaseModel):
    """One attempt of a message: when, how long, and what came back."""

    __tablename__ = "webhooks_attempt"

    id: Mapped[int] = sa.Column(
        sa.BigInteger, primary_key=True, autoincrement=True)
    message_id: Mapped[str] = sa.Column(
        sa.UnicodeText,
        sa.ForeignKey("webhooks_delivery.id", ondelete="CASCADE"),
        nullable=False)
    at: Mapped[datetime.datetime] = sa.Column(sa.DateTime, nullable=False)
    duration_ms: Mapped[Optional[int]] = sa.Column(sa.Integer, nullable=True)
    response_status: Mapped[Optional[int]] = sa.Column(
        sa.Integer, nullable=True)
    error: Mapped[Optional[str]] = sa.Column(sa.UnicodeText, nullable=True)
    response_body: Mapped[Optional[str]] = sa.Column(
        sa.UnicodeText, nullable=True)
    # the hook's health is read from its attempts by these two
    hook_id: Mapped[str] = sa.Column(sa.UnicodeText, nullable=False)
    succeeded: Mapped[bool] = sa.Column(
        sa.Boolean, nullable=False, default=False)
    # {name: value} as sent (never the secret); the answer's
    # {"status_line", "headers": [[name, value]...], "truncated"}
    request_headers: Mapped[Optional[dict[str, str]]] = sa.Column(
        sa.JSON, nullable=True)
    response_head: Mapped[Optional[dict[str, Any]]] = sa.Column(
        sa.JSON, nullable=True)
