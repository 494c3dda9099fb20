"""How delivery is doing, in one place: ``ckan webhooks status``.

Everything comes from PostgreSQL (the messages, the events, the hooks and
the workers' heartbeats, ``pipeline.heartbeat``). Delivery is **stuck**
when:

- the webhooks tables are missing or outdated (nothing is recorded), or
- work is due (a message, or an event waiting for fan-out) and no worker
  has been seen for ``heartbeat.ALIVE`` seconds, or
- the oldest due message nobody holds has been due, or the oldest event has
  waited for fan-out, for more than ``stuck_after`` seconds (default 120): a
  worker looks every second, so that is far behind even under load.
"""
from __future__ import annotations

import datetime
from typing import Any, Optional

import sqlalchemy as sa

import ckan.model as model

from ckanext.webhooks import tables
from ckanext.webhooks.model import utcnow
from ckanext.webhooks.pipeline import heartbeat

STUCK_AFTER = 120.0


def _age(now: datetime.datetime,
         then: Optional[datetime.datetime]) -> Optional[float]:
    return None if then is None else round((now - then).total_seconds(), 1)


def _iso(value: Optional[datetime.datetime]) -> Optional[str]:
    return None if value is None else value.isoformat() + "Z"


def delivery_status(stuck_after: float = STUCK_AFTER) -> dict[str, Any]:
    """The report ``ckan webhooks status`` prints; ``stuck`` and
    ``problems`` say whether (and why) delivery is not healthy."""
    engine = model.meta.engine
    assert engine is not None  # CKAN's environment is loaded
    with engine.connect() as connection:
        schema = tables.state(connection)
        if schema != "ready":
            return {"schema": schema, "stuck": True,
                    "problems": [tables.problem(schema)]}
        return _from_database(connection, utcnow(), stuck_after)


def _from_database(connection: Any, now: datetime.datetime,
                   stuck_after: float) -> dict[str, Any]:
    def one(sql: str, **params: Any) -> Any:
        return connection.execute(sa.text(sql), dict(params, now=now)).one()

    pending, oldest_pending, leased = one("""
        SELECT count(*), min(created), count(*) FILTER (
            WHERE lease_until > :now)
        FROM webhooks_delivery WHERE status = 'pending'""")
    due, oldest_due = one("""
        SELECT count(*), min(next_attempt) FROM webhooks_delivery
        WHERE status = 'pending' AND next_attempt <= :now
          AND (lease_until IS NULL OR lease_until <= :now)""")
    retries, next_retry = one("""
        SELECT count(*), min(next_attempt) FROM webhooks_delivery
        WHERE status = 'pending' AND attempts > 0 AND next_attempt > :now""")
    events, oldest_event = one("""
        SELECT count(*), min(created) FROM webhooks_event
        WHERE fanned_out IS NULL""")
    failing, circuit_open, disabled = one("""
        SELECT count(*) FILTER (WHERE status = 'active'
                                  AND failing_since IS NOT NULL),
               count(*) FILTER (WHERE status = 'active'
                                  AND circuit_until > :now),
               count(*) FILTER (WHERE status = 'disabled')
        FROM webhooks_hook""")
    rows = connection.execute(sa.text("""
        SELECT id, hostname, pid, started, last_seen, listening, in_flight,
               last_sweep
        FROM webhooks_worker ORDER BY started""")).fetchall()

    alive_since = now - datetime.timedelta(seconds=heartbeat.ALIVE)
    workers = [{
        "id": row.id, "hostname": row.hostname, "pid": row.pid,
        "started": _iso(row.started), "last_seen": _iso(row.last_seen),
        "seen_ago": _age(now, row.last_seen),
        "alive": row.last_seen >= alive_since,
        "listening": bool(row.listening) and row.last_seen >= alive_since,
        "in_flight": row.in_flight, "last_sweep": _iso(row.last_sweep),
    } for row in rows]
    alive = [w for w in workers if w["alive"]]
    sweeps = [row.last_sweep for row in rows if row.last_sweep]
    last_sweep = max(sweeps) if sweeps else None

    report: dict[str, Any] = {
        "schema": "ready",
        "pending": pending,
        "oldest_pending_age": _age(now, oldest_pending),
        "in_flight": leased,
        "due": due,
        "oldest_due_overdue": _age(now, oldest_due),
        "scheduled_retries": retries,
        "next_retry": _iso(next_retry),
        "events_waiting": events,
        "oldest_event_age": _age(now, oldest_event),
        "hooks_failing": failing,
        "hooks_circuit_open": circuit_open,
        "hooks_disabled": disabled,
        "workers": workers,
        "workers_alive": len(alive),
        "workers_listening": [w["id"] for w in alive if w["listening"]],
        "last_sweep": _iso(last_sweep),
        "last_sweep_age": _age(now, last_sweep),
        "stuck_after": stuck_after,
    }
    problems = []
    if (due or events) and not alive:
        problems.append(
            "work is due and no worker was seen in the last {:.0f} s: start "
            "`ckan webhooks worker`".format(heartbeat.ALIVE))
    if due and report["oldest_due_overdue"] > stuck_after:
        problems.append(
            "the oldest due message has waited {:.0f} s for a worker "
            "(more than {:.0f} s)".format(report["oldest_due_overdue"],
                                          stuck_after))
    if events and report["oldest_event_age"] > stuck_after:
        problems.append(
            "the oldest event has waited {:.0f} s to be fanned out "
            "(more than {:.0f} s)".format(report["oldest_event_age"],
                                         stuck_after))
    report["problems"] = problems
    report["stuck"] = bool(problems)
    return report


def as_text(report: dict[str, Any]) -> str:
    """The report for people."""
    def seconds(value: Optional[float]) -> str:
        return "-" if value is None else "{:.0f} s".format(value)

    lines = ["schema: " + report["schema"]]
    if report["schema"] == "ready":
        lines += [
            "pending messages: {} (oldest {} old, {} in flight)".format(
                report["pending"], seconds(report["oldest_pending_age"]),
                report["in_flight"]),
            "due now, not held: {} (oldest due for {})".format(
                report["due"], seconds(report["oldest_due_overdue"])),
            "scheduled retries: {} (next at {})".format(
                report["scheduled_retries"], report["next_retry"] or "-"),
            "events waiting for fan-out: {} (oldest {} old)".format(
                report["events_waiting"], seconds(report["oldest_event_age"])),
            "hooks failing: {}, circuit open: {}, disabled: {}".format(
                report["hooks_failing"], report["hooks_circuit_open"],
                report["hooks_disabled"]),
            "workers alive: {} (listening: {})".format(
                report["workers_alive"],
                ", ".join(report["workers_listening"]) or "none"),
        ]
        for w in report["workers"]:
            lines.append(
                "  {id}  {state}  seen {seen} ago  in flight {in_flight}"
                "{listening}".format(**dict(
                    w, state="alive" if w["alive"] else "GONE",
                    seen=seconds(w["seen_ago"]),
                    listening="  listening" if w["listening"] else "")))
        lines.append("last sweep: {} ago".format(
            seconds(report["last_sweep_age"])))
    lines.append("delivery: " + ("STUCK" if report["stuck"] else "ok"))
    lines += ["  " + problem for problem in report["problems"]]
    return "\n".join(lines)
