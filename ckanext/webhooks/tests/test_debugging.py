"""Debugging a delivery through the API: each attempt's request and response
headers, the delivery history filtered and paged, and a hook's health."""
from __future__ import annotations

import datetime
import json

import pytest
import sqlalchemy as sa

import ckan.logic as logic
import ckan.model as model
from ckan.tests import factories, helpers

from ckanext.webhooks.model import Attempt, Message, utcnow
from ckanext.webhooks.pipeline import attempt_log
from ckanext.webhooks.tests.callers import as_user, call
from ckanext.webhooks.tests.receiver import Answer

pytestmark = pytest.mark.usefixtures("webhooks")


def create(address: str, context=None, **data) -> str:
    if "topics" not in data:
        data.setdefault("topic", "dataset/create")
    return call("webhook_create", context, address=address, **data)


def attempts_of(hook_id: str, message_id: str) -> list[dict]:
    model.Session.remove()
    return call("webhook_delivery_show", id=hook_id,
                delivery_id=message_id)["attempt_log"]


def refused(action: str, **data) -> dict:
    with pytest.raises(logic.ValidationError) as raised:
        call(action, **data)
    return raised.value.error_dict


# --- the headers of every attempt ------------------------------------------

def test_each_attempt_keeps_the_request_headers_as_sent(receiver, run_jobs):
    hook_id = create(receiver.url("/sent"))
    secret = call("webhook_show", id=hook_id)["secret"]
    receiver.answer("/sent", Answer(503), Answer(200))
    ping_id = call("webhook_ping", id=hook_id)
    run_jobs()
    call("webhook_redeliver", id=hook_id, delivery_id=ping_id)
    run_jobs()
    got = receiver.wait_for(2, "/sent")

    log = attempts_of(hook_id, ping_id)
    assert len(log) == 2
    for attempt, request in zip(log, got):
        sent = {k.lower(): v for k, v in attempt["request_headers"].items()}
        # exactly what reached the receiver, signature included
        for name in ("webhook-id", "webhook-timestamp", "webhook-signature",
                     "content-type", "user-agent", "content-length"):
            assert sent[name] == request.headers[name], name
        assert sent["webhook-id"] == ping_id
    # what was logged is what the receiver could check
    assert request.verify(secret)["id"] == ping_id
    # the secret itself is stored nowhere in the log
    stored = model.Session.execute(sa.text(
        "SELECT CAST(request_headers AS text), CAST(response_head AS text) "
        "FROM webhooks_attempt")).all()
    key = secret.split("_", 1)[1]
    assert stored and not any(key in (text or "") for row in stored
                              for text in row)


def test_each_attempt_keeps_the_answers_status_line_and_headers(
        receiver, run_jobs):
    hook_id = create(receiver.url("/answered"))
    receiver.answer("/answered", Answer(
        503, b"busy", headers={"Retry-After": "120", "X-Request-Id": "r-1"}))
    ping_id = call("webhook_ping", id=hook_id)
    run_jobs()
    [attempt] = attempts_of(hook_id, ping_id)
    assert attempt["response_status"] == 503
    assert attempt["response_status_line"] == \
        "HTTP/1.0 503 Service Unavailable"
    headers = attempt["response_headers"]
    assert headers["Retry-After"] == "120"
    assert headers["X-Request-Id"] == "r-1"
    assert headers["Content-Length"] == "4"
    assert list(headers)[:2] == ["Server", "Date"]  # in the order received
    assert attempt["response_headers_truncated"] is False
    assert attempt["response_body"] == "busy"


def test_the_answers_headers_are_bounded_to_8_kb(receiver, run_jobs):
    hook_id = create(receiver.url("/big"))
    many = {"X-Filler-{:03d}".format(i): "v" * 100 for i in range(120)}
    receiver.answer("/big", Answer(200, b"", headers=many))
    ping_id = call("webhook_ping", id=hook_id)
    run_jobs()
    [attempt] = attempts_of(hook_id, ping_id)
    headers = attempt["response_headers"]
    assert attempt["response_headers_truncated"] is True
    size = len(attempt["response_status_line"]) + 2 + sum(
        len(name) + len(value) + 4 for name, value in headers.items())
    assert attempt_log.LOGGED_HEAD - 120 < size <= attempt_log.LOGGED_HEAD
    assert "X-Filler-000" in headers and "X-Filler-119" not in headers


@pytest.mark.ckan_config("ckanext.webhooks.timeout", "1")
@pytest.mark.ckan_config("ckanext.webhooks.retry_schedule", "")
def test_an_attempt_without_an_answer_keeps_what_was_sent(
        receiver, run_jobs):
    hook_id = create(receiver.url("/slow"))
    receiver.answer("/slow", Answer(200, delay=3))
    ping_id = call("webhook_ping", id=hook_id)
    run_jobs()
    [attempt] = attempts_of(hook_id, ping_id)
    assert "timeout" in attempt["error"]
    assert attempt["request_headers"]["webhook-id"] == ping_id
    assert attempt["response_status_line"] is None
    assert attempt["response_headers"] is None

    receiver.close()
    refused_id = call("webhook_ping", id=hook_id)
    run_jobs()
    [attempt] = attempts_of(hook_id, refused_id)
    assert attempt["error"].startswith("connection error")
    assert attempt["request_headers"]["webhook-id"] == refused_id


def test_headers_a_hook_does_not_own_are_kept_by_name_only():
    from ckanext.webhooks.pipeline.sending import Outcome
    outcome = Outcome(200, None, 5, request_headers={
        "webhook-id": "msg_1", "Authorization": "Bearer s3cret"})
    kept = json.loads(attempt_log.request_headers(outcome))
    assert kept == {"webhook-id": "msg_1",
                    "Authorization": attempt_log.HIDDEN_VALUE}


@pytest.mark.ckan_config("ckanext.webhooks.verify_intent", "true")
def test_a_pending_hooks_answers_are_neither_kept_nor_shown(
        receiver, run_jobs):
    receiver.always("/unasked", lambda got: Answer(
        200, b"nothing", headers={"X-Internal": "yes"}))
    hook_id = create(receiver.url("/unasked"))
    run_jobs()
    [challenge] = call("webhook_delivery_list", id=hook_id)
    [attempt] = attempts_of(hook_id, challenge["id"])
    assert attempt["request_headers"]["webhook-id"] == challenge["id"]
    assert attempt["response_headers"] is None
    assert model.Session.query(Attempt.response_head).filter(
        Attempt.response_head.isnot(None)).count() == 0


def test_a_disabled_hooks_answers_are_not_shown(receiver, run_jobs):
    hook_id = create(receiver.url("/off"))
    receiver.answer("/off", Answer(200, b"ok", headers={"X-Seen": "1"}))
    ping_id = call("webhook_ping", id=hook_id)
    run_jobs()
    assert attempts_of(hook_id, ping_id)[0]["response_headers"]["X-Seen"] \
        == "1"
    call("webhook_update", id=hook_id, enabled=False)
    [attempt] = attempts_of(hook_id, ping_id)
    assert attempt["response_headers"] is None
    assert attempt["response_status_line"] is None
    assert attempt["request_headers"]["webhook-id"] == ping_id


# --- the history: filters and paging ----------------------------------------

@pytest.fixture
def history(receiver, run_jobs):
    """A hook with 2 failed dataset/create deliveries, 1 succeeded
    resource/create, and a succeeded ping, created a minute apart (oldest
    first)."""
    hook_id = create(receiver.url("/history"),
                     topics=["dataset/*", "resource/*"])
    receiver.answer("/history", Answer(400), Answer(400))
    dataset = factories.Dataset()
    factories.Dataset()
    run_jobs()
    helpers.call_action("resource_create", package_id=dataset["id"],
                        url="http://example.com/x.csv")
    run_jobs()
    call("webhook_ping", id=hook_id)
    run_jobs()
    model.Session.remove()
    messages = model.Session.query(Message).filter(
        Message.hook_id == hook_id).order_by(Message.created).all()
    start = utcnow() - datetime.timedelta(hours=1)
    for i, message in enumerate(messages):
        message.created = start + datetime.timedelta(minutes=i)
    model.Session.commit()
    return hook_id, [m.id for m in messages], start


def ids(**data) -> list[str]:
    return [d["id"] for d in call("webhook_delivery_list", **data)]


def test_deliveries_filter_by_status_and_type(history):
    hook_id, oldest_first, _ = history
    newest_first = oldest_first[::-1]
    assert ids(id=hook_id) == newest_first
    statuses = {d["id"]: (d["type"], d["status"])
                for d in call("webhook_delivery_list", id=hook_id)}
    assert sorted(statuses.values()) == [
        ("dataset/create", "failed"), ("dataset/create", "failed"),
        ("resource/create", "succeeded"), ("webhook/ping", "succeeded")]
    assert ids(id=hook_id, status="failed") == [
        i for i in newest_first if statuses[i][1] == "failed"]
    assert ids(id=hook_id, type="resource/create") == [
        i for i in newest_first if statuses[i][0] == "resource/create"]
    assert ids(id=hook_id, type="dataset/*", status="failed") == [
        i for i in newest_first if statuses[i][0] == "dataset/create"]
    assert ids(id=hook_id, type="webhook/ping") == [newest_first[0]]
    assert ids(id=hook_id, status="pending") == []
    # an empty filter (a form's "any") is no filter
    assert ids(id=hook_id, status="", type="") == newest_first


def test_deliveries_page_and_filter_by_time(history):
    hook_id, oldest_first, start = history
    newest_first = oldest_first[::-1]
    assert ids(id=hook_id, limit=2) == newest_first[:2]
    assert ids(id=hook_id, limit=2, offset=2) == newest_first[2:]
    assert ids(id=hook_id, limit=2, offset=4) == []
    minute = datetime.timedelta(minutes=1)
    assert ids(id=hook_id, since=(start + minute).isoformat()) == \
        newest_first[:3]
    assert ids(id=hook_id, until=(start + minute).isoformat()) == \
        [oldest_first[0]]
    # with an offset, in another time zone
    assert ids(id=hook_id, since=(start + minute).isoformat() + "+00:00",
               until=(start + 3 * minute).replace(
                   tzinfo=datetime.timezone.utc).astimezone(
                   datetime.timezone(datetime.timedelta(hours=2)))
               .isoformat()) == [oldest_first[2], oldest_first[1]]


@pytest.mark.parametrize("data, field", [
    ({"status": "done"}, "status"),
    ({"type": "dataset/explode"}, "type"),
    ({"since": "yesterday"}, "since"),
    ({"until": "2026-13-01"}, "until"),
    ({"since": "2026-06-02T00:00:00", "until": "2026-06-01T00:00:00"},
     "until"),
    ({"offset": -1}, "offset"),
    ({"offset": "x"}, "offset"),
    ({"limit": 101}, "limit"),
])
def test_bad_filters_are_refused_naming_the_field(receiver, data, field):
    hook_id = create(receiver.url("/bad"))
    errors = refused("webhook_delivery_list", id=hook_id, **data)
    assert list(errors) == [field]


# --- health -----------------------------------------------------------------

def _age_attempts(hook_id: str, durations_and_ages: list) -> None:
    """Give the hook's attempts (oldest first) these durations and ages."""
    model.Session.remove()
    rows = model.Session.query(Attempt).filter(
        Attempt.hook_id == hook_id).order_by(Attempt.id).all()
    assert len(rows) == len(durations_and_ages)
    now = utcnow()
    for row, (duration, age) in zip(rows, durations_and_ages):
        row.duration_ms, row.at = duration, now - age
    model.Session.commit()


def test_show_gives_success_rate_and_latency_over_a_day_and_a_week(
        receiver, run_jobs):
    hook_id = create(receiver.url("/health"))
    empty = call("webhook_show", id=hook_id)["health"]
    assert empty["last_24h"] == {"attempts": 0, "succeeded": 0,
                                 "success_rate": None, "p50_ms": None,
                                 "p95_ms": None}
    assert empty["last_success"] is None and empty["last_failure"] is None

    receiver.answer("/health", *[Answer(200)] * 6 + [Answer(500)] * 4)
    for _ in range(10):
        call("webhook_ping", id=hook_id)
    call("webhook_ping", id=hook_id)  # sent later, answered 204
    run_jobs()
    receiver.wait_for(11, "/health")
    hour, day = datetime.timedelta(hours=1), datetime.timedelta(days=1)
    # (duration, age) in the order the attempts were made: the 200s, the
    # 500s and the 204; two of them older than a day, one than a week
    by_order = [(10, hour), (20, hour), (30, hour), (40, hour), (50, hour),
                (60, 2 * day),
                (100, hour), (200, hour), (300, 3 * day), (400, 8 * day),
                (5, datetime.timedelta(minutes=1))]
    # the attempts' order in the log is not the order of the answers:
    # match each row to the status it got
    model.Session.remove()
    rows = model.Session.query(Attempt).filter(
        Attempt.hook_id == hook_id).all()
    statuses = sorted(rows, key=lambda r: (r.response_status != 200,
                                           r.response_status == 204, r.id))
    now = utcnow()
    for row, (duration, age) in zip(statuses, by_order):
        row.duration_ms, row.at = duration, now - age
    model.Session.commit()

    shown = call("webhook_show", id=hook_id)
    health = shown["health"]
    # the last day: 200s of 10-50 ms, 500s of 100 and 200 ms, the 204
    assert health["last_24h"] == {
        "attempts": 8, "succeeded": 6, "success_rate": 0.75,
        "p50_ms": 30, "p95_ms": 200}
    assert health["last_7d"] == {
        "attempts": 10, "succeeded": 7, "success_rate": 0.7,
        "p50_ms": 40, "p95_ms": 300}
    assert health["last_success"] == (now - datetime.timedelta(
        minutes=1)).isoformat()
    assert health["last_failure"] == (now - hour).isoformat()
    assert shown["last_failure"] == health["last_failure"]
    assert shown["last_success"] >= health["last_success"]


def test_health_reads_only_indexes(receiver, run_jobs):
    """Each part of the health query is an index scan of the hook's own
    attempts (checked with sequential scans ruled out, as a table of
    millions of attempts would have the planner choose)."""
    from ckanext.webhooks.logic import queries
    hook_id = create(receiver.url("/plan"))
    call("webhook_ping", id=hook_id)
    run_jobs()
    now = utcnow()
    params = {"ids": [hook_id], "oldest": now - queries.WEEK,
              "last_24h": now - queries.DAY, "last_7d": now - queries.WEEK}
    session = model.Session
    session.execute(sa.text("SET LOCAL enable_seqscan = off"))
    plans = ["\n".join(row[0] for row in session.execute(
        sa.text("EXPLAIN " + str(query)), params))
        for query in (queries._HEALTH, queries._LAST)]
    session.rollback()
    for plan in plans:
        assert "Seq Scan on webhooks_attempt" not in plan, plan
        assert "ix_webhooks_attempt_hook_succeeded" in plan, plan
        assert "ix_webhooks_attempt_hook_failed" in plan, plan


def test_list_gives_health_owners_to_sysadmins_and_searches(
        receiver, run_jobs):
    owner = factories.User(name="hook-owner")
    sysadmin = factories.Sysadmin()
    mine = create(receiver.url("/listed"), as_user(owner),
                  description="Search index feeder")
    anonymous = create("http://example.com/other")
    call("webhook_ping", id=mine)
    run_jobs()

    [own] = call("webhook_list", as_user(owner))
    assert own["health"]["last_24h"]["attempts"] == 1
    assert own["health"]["last_24h"]["success_rate"] == 1.0
    assert "owner" not in own

    every = {h["id"]: h for h in call("webhook_list", as_user(sysadmin))}
    assert every[mine]["owner"] == "hook-owner"
    assert every[anonymous]["owner"] is None

    def found(q):
        return {h["id"] for h in call("webhook_list", as_user(sysadmin),
                                      q=q)}
    assert found("SEARCH INDEX") == {mine}
    assert found("example.com/oth") == {anonymous}
    assert found("hook-owner") == {mine}
    assert found(mine[:10]) == {mine}
    assert found("100%") == set()


def test_a_pause_by_a_sysadmin_is_not_called_the_owners(receiver):
    owner = factories.User()
    sysadmin = factories.Sysadmin()
    hook_id = create(receiver.url("/paused"), as_user(owner))
    call("webhook_update", as_user(sysadmin), id=hook_id, enabled=False)
    shown = call("webhook_show", id=hook_id)
    assert shown["status"] == "disabled"
    assert shown["status_reason"] == "disabled by a sysadmin"
    call("webhook_update", as_user(owner), id=hook_id, enabled=True)
    call("webhook_update", as_user(owner), id=hook_id, enabled=False)
    assert call("webhook_show", id=hook_id)["status_reason"] == \
        "disabled by its owner"
