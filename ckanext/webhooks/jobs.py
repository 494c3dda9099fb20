"""Background-job entry points on the ``ckanext.webhooks.queue`` queue.

Delivery itself needs no job: every ``ckan webhooks worker`` runs an engine
(``pipeline.engine``) that finds its work in PostgreSQL. These jobs remain
for whoever enqueues them (and for ``ckan jobs`` users): each fans out or
wakes the engine of the worker that runs it; without one running in this
process, it delivers everything due itself and returns.
"""
from __future__ import annotations

from typing import Optional

from ckanext.webhooks.pipeline import listening, matching
from ckanext.webhooks.pipeline.composing import TYPE_PING, TYPE_VERIFY
from ckanext.webhooks.pipeline.engine import Engine, run_burst

__all__ = ["TYPE_PING", "TYPE_VERIFY", "enqueue_delivery", "fan_out_event",
           "deliver_messages"]


def enqueue_delivery(message_ids: list[str],
                     delay: Optional[float] = None) -> bool:
    """Tell the workers these messages are due (their ``next_attempt``
    says when); the notification goes out when the caller commits, and the
    workers look by themselves every second in any case."""
    listening.notify_wake()
    from ckan import model
    model.Session.commit()
    return True


def _deliver_now(events: bool) -> None:
    engine = Engine.current
    if engine is not None:
        engine.wake(events=events)
    else:
        run_burst()


def fan_out_event(event_id: str) -> None:
    """Job: create the messages of one event and have them delivered."""
    matching.fan_out_event(event_id)
    _deliver_now(events=True)


def deliver_messages(message_ids: list[str]) -> None:
    """Job: have due messages delivered."""
    _deliver_now(events=False)
