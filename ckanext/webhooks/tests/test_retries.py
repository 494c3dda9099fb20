"""The retry delay: the schedule, jitter both ways, Retry-After (table
driven, with the jitter injected); and that real retries are spread."""
from __future__ import annotations

import pytest

from ckan.tests import factories

from ckanext.webhooks.model import Message
from ckanext.webhooks.pipeline import retries
from ckanext.webhooks.tests.factories import HookFactory
from ckanext.webhooks.tests.receiver import Answer

SCHEDULE = (5.0, 300.0, 1800.0)


@pytest.mark.parametrize("name, attempts, retry_after, jitter, expected", [
    ("first-retry-on-schedule", 1, None, 0.0, 5.0),
    ("third-retry-on-schedule", 3, None, 0.0, 1800.0),
    ("schedule-used-up", 4, None, 0.0, None),
    ("schedule-used-up-with-retry-after", 4, 60.0, 0.0, None),
    ("jitter-makes-it-later", 2, None, 0.2, 360.0),
    ("jitter-makes-it-earlier", 2, None, -0.2, 240.0),
    ("retry-after-replaces-the-schedule", 1, 60.0, 0.0, 60.0),
    ("retry-after-jitter-only-adds", 1, 60.0, -0.2, 72.0),
    ("retry-after-jitter-adds-up-to-a-fifth", 1, 60.0, 0.2, 72.0),
    ("retry-after-capped", 1, 7200.0, 0.0, 3600.0),
    ("retry-after-zero", 1, 0.0, 0.2, 0.0),
    ("retry-after-negative-is-now", 1, -5.0, 0.0, 0.0),
])
def test_delay(name, attempts, retry_after, jitter, expected):
    got = retries.delay(SCHEDULE, attempts, retry_after, 3600.0,
                        draw=lambda: jitter)
    if expected is None:
        assert got is None, name
    else:
        assert got == pytest.approx(expected), name


def test_no_schedule_means_no_retry():
    assert retries.delay((), 1, None, 3600.0) is None


def test_jitter_is_drawn_within_a_fifth_both_ways():
    drawn = [retries.jitter() for _ in range(2000)]
    assert -retries.JITTER <= min(drawn) < -0.15
    assert 0.15 < max(drawn) <= retries.JITTER


def _waits(hook_ids: list[str]) -> list[float]:
    from ckan import model
    model.Session.remove()
    rows = model.Session.query(Message).filter(
        Message.hook_id.in_(hook_ids)).all()
    assert rows and all(m.status == "pending" for m in rows)
    return [(m.next_attempt - m.last_attempt).total_seconds() for m in rows]


@pytest.mark.usefixtures("webhooks")
@pytest.mark.ckan_config("ckanext.webhooks.retry_schedule", "100")
@pytest.mark.parametrize("retry_after", [None, "100"])
def test_messages_failing_together_are_retried_apart(receiver, run_jobs,
                                                     retry_after):
    """Twenty hooks whose receiver is down together: their retries come
    back spread over plus or minus a fifth of the delay (a Retry-After:
    never earlier than it asks), not at one moment."""
    headers = {"Retry-After": retry_after} if retry_after else {}
    hooks = [HookFactory(receiver=receiver, path="/down{}".format(i))["id"]
             for i in range(20)]
    for i in range(20):
        receiver.always("/down{}".format(i),
                        lambda got: Answer(503, headers=headers))
    factories.Dataset()
    run_jobs()
    waits = _waits(hooks)
    assert len(waits) == 20
    # whole seconds are not enough to tell them apart; milliseconds are
    assert len({round(w, 3) for w in waits}) > 10
    # measured from the attempt's claim; the retry is scheduled when its
    # outcome is recorded, a moment later
    if retry_after:
        assert 99.9 <= min(waits) and max(waits) <= 125
    else:
        assert 79.9 <= min(waits) < 100 < max(waits) <= 125
    assert max(waits) - min(waits) > 5
