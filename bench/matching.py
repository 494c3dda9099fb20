"""Benchmark 2: selecting the hooks of one event, 1,000 vs 100,000 hooks.

Times ``pipeline.matching.create_messages`` (the ``_MATCHING_INSERT``
statement: match and insert the pending messages) for a ``dataset/update``
event, rolled back after every call so each call does the same work. The
number of matching hooks is the same (100) at every size; only the hooks
that do not match grow:

* matching (100): 40 without filters (topic ``dataset/update`` or
  ``dataset/*``), 30 filtered on the event's dataset, 20 on its organization,
  10 on one of its groups;
* not matching (the rest), see ``benchlib.filler_hooks``: 60% filtered on
  other datasets (about 10 hooks per dataset), 15% on other organizations
  (about 100 per organization), 5% on other groups, 10% on resources of other
  datasets, 10% without filters on other topics (``dataset/create``,
  ``resource/*``, ...).
"""
from __future__ import annotations

import json
import sys
import time
import uuid

import sqlalchemy as sa

import benchlib

MATCHING = 100


def _matching_hooks(dataset_id: str, org_id: str, group_id: str,
                    address: str) -> list[dict]:
    row = benchlib.hook_row
    hooks = []
    for i in range(MATCHING):
        topic = "dataset/update" if i % 2 else "dataset/*"
        if i < 40:
            hooks.append(row(topic, address))
        elif i < 70:
            hooks.append(row(topic, address, dataset=dataset_id))
        elif i < 90:
            hooks.append(row(topic, address, organization=org_id))
        else:
            hooks.append(row(topic, address, group=group_id))
    return hooks


def _time_size(conn, total: int, iterations: int) -> dict:
    import ckan.model as model
    from ckanext.webhooks.pipeline import matching as jobs
    from ckanext.webhooks.model import Event, utcnow

    dataset_id, org_id, group_id = (str(uuid.uuid4()) for _ in range(3))
    address = "http://127.0.0.1:9/unused"
    with conn.cursor() as cur:
        cur.execute("TRUNCATE webhooks_attempt, webhooks_delivery, "
                    "webhooks_event, "
                    "webhooks_hook CASCADE")
    benchlib.insert_hooks(
        conn, _matching_hooks(dataset_id, org_id, group_id, address)
        + benchlib.filler_hooks(total - MATCHING, address))
    with conn.cursor() as cur:
        cur.execute("VACUUM ANALYZE webhooks_hook")

    event = Event(id=uuid.uuid4().hex, topic="dataset/update",
                  entity_id=dataset_id, package_id=dataset_id,
                  organization_id=org_id, group_ids=[group_id],
                  restricted=False, snapshot={}, created=utcnow())
    times = []
    matched = set()
    for i in range(iterations + 5):
        started = time.perf_counter()
        count = jobs.create_messages(event)
        elapsed = time.perf_counter() - started
        model.Session.rollback()
        matched.add(count)
        if i >= 5:  # the first few warm the caches
            times.append(elapsed)

    plan = _explain(lambda: jobs.create_messages(event))
    model.Session.rollback()
    return {"hooks": total, "matched": sorted(matched),
            "median_ms": benchlib.median(times) * 1000,
            "p90_ms": benchlib.percentile(times, 90) * 1000,
            "plan": plan}


def _explain(call) -> list[str]:
    """EXPLAIN ANALYZE of the statement ``call`` sends, as it sends it."""
    import ckan.model as model
    seen = []

    def capture(conn, cursor, statement, parameters, context, many):
        if "INSERT INTO webhooks_delivery" in statement:
            seen.append((statement, parameters))

    engine = model.Session.get_bind()
    sa.event.listen(engine, "before_cursor_execute", capture)
    try:
        call()
    finally:
        sa.event.remove(engine, "before_cursor_execute", capture)
    model.Session.rollback()
    statement, parameters = seen[-1]
    cursor = model.Session.connection().connection.cursor()
    cursor.execute("EXPLAIN (ANALYZE, BUFFERS) " + statement, parameters)
    return [row[0] for row in cursor.fetchall()]


def run(app, iterations: int, sizes=(1000, 100000)) -> dict:
    conn = benchlib.connect()
    results = {}
    try:
        with benchlib.request_context(app):
            for size in sizes:
                benchlib.log("matching: {} hooks".format(size))
                results[str(size)] = _time_size(conn, size, iterations)
    finally:
        benchlib.reset_webhooks(conn)
        conn.close()
    small, large = results[str(sizes[0])], results[str(sizes[-1])]
    return {"sizes": results,
            "ratio": large["median_ms"] / small["median_ms"]}


if __name__ == "__main__":
    out = run(benchlib.make_app(webhooks_on=True),
              int(sys.argv[1]) if len(sys.argv) > 1 else 50)
    print(json.dumps(out, indent=2))
