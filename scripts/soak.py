"""Chaos soak: sustained events while workers, Redis and PostgreSQL fail.

    .venv/bin/python scripts/soak.py [--minutes 10] [--rate 5] [--hooks 1000]

Not part of CI. Everything runs on loopback in servers of the script's own
(a PostgreSQL cluster made with initdb on a temporary directory and port, a
Redis server, receivers), so the machine's servers are untouched; it stops
them all when it ends, and it ends (load for ``--minutes``, then at most
``--drain`` seconds for the work left).

- ``--hooks`` hooks: most filter one of ``--datasets`` datasets, a few take
  every dataset update; receivers answer 204, some flap (503 for 20 s of
  every 60 s), some hang (never answer within the timeout).
- ``--rate`` dataset updates a second, made in this process with CKAN's
  ``package_patch``, against the private cluster.
- ``--workers`` ``ckan webhooks worker`` processes; every 30 s a random one
  is SIGKILLed (its process group) and a new one started. Redis is stopped
  for 10 s twice (at 30% and 70% of the run) and PostgreSQL restarted once
  (at 50%).

At the end it reports: every committed update has its event, fanned out to
exactly the hooks it matched; every message the database calls succeeded
reached its receiver with a 2xx (0 lost); duplicates (a message answered 2xx
twice) and how many follow a kill closely enough to be an attempt in flight
at the kill; messages left pending past their schedule.
"""
from __future__ import annotations

import argparse
import collections
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Optional

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)

from ckanext.webhooks.tests import processes  # noqa: E402

TIMEOUT = 3  # seconds per attempt in the soak (ckanext.webhooks.timeout)


class Receivers:
    """HTTP servers on loopback: ``ok``, ``flap`` and ``hung`` kinds, one
    port each (a receiver is scheme, host and port), recording which
    message ids were answered 2xx, and when."""

    def __init__(self, ok_ports: int) -> None:
        self.lock = threading.Lock()
        self.answered: dict[str, list[float]] = collections.defaultdict(list)
        self.requests: collections.Counter = collections.Counter()
        self.servers: dict[str, list[ThreadingHTTPServer]] = {}
        self.started = time.time()
        for kind, count in (("ok", ok_ports), ("flap", 2), ("hung", 2)):
            self.servers[kind] = [self._serve(kind) for _ in range(count)]

    def _serve(self, kind: str) -> ThreadingHTTPServer:
        receivers = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_POST(self):
                length = int(self.headers.get("Content-Length") or 0)
                self.rfile.read(length)
                message_id = self.headers.get("webhook-id", "")
                with receivers.lock:
                    receivers.requests[kind] += 1
                if kind == "hung":
                    time.sleep(TIMEOUT + 2)
                    return  # never answers in time
                status = 204
                if kind == "flap" and \
                        (time.time() - receivers.started) % 60 < 20:
                    status = 503
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()
                if status < 300:
                    with receivers.lock:
                        receivers.answered[message_id].append(time.time())

        server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        server.daemon_threads = True
        threading.Thread(target=server.serve_forever, daemon=True).start()
        return server

    def url(self, kind: str, n: int) -> str:
        servers = self.servers[kind]
        port = servers[n % len(servers)].server_address[1]
        return "http://127.0.0.1:{}/{}/{}".format(port, kind, n)

    def close(self) -> None:
        for servers in self.servers.values():
            for server in servers:
                server.shutdown()


class Redis:
    def __init__(self, home: str) -> None:
        self.port = processes.free_port()
        self.home = home
        self.process: Optional[subprocess.Popen] = None

    def start(self) -> None:
        self.process = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1",
             "--save", "", "--appendonly", "no", "--dir", self.home],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(0.5)

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(10)
            self.process = None


def log(message: str) -> None:
    print("[soak {}] {}".format(time.strftime("%H:%M:%S"), message),
          flush=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--minutes", type=float, default=10)
    parser.add_argument("--rate", type=float, default=5)
    parser.add_argument("--hooks", type=int, default=1000)
    parser.add_argument("--datasets", type=int, default=50)
    parser.add_argument("--every-dataset-hooks", type=int, default=10)
    parser.add_argument("--workers", type=int, default=3)
    parser.add_argument("--kill-every", type=float, default=30)
    parser.add_argument("--drain", type=float, default=180)
    args = parser.parse_args()

    home = tempfile.mkdtemp(prefix="webhooks-soak-")
    postgres = processes.OwnPostgres()
    redis_server = Redis(home)
    receivers = Receivers(ok_ports=20)
    workers: list[subprocess.Popen] = []
    try:
        return _soak(args, home, postgres, redis_server, receivers, workers)
    finally:
        for worker in workers:
            processes.stop(worker)
        receivers.close()
        redis_server.stop()
        try:
            postgres.stop()
        except subprocess.CalledProcessError:
            pass
        postgres.remove()


def _soak(args, home, postgres, redis_server, receivers, workers) -> int:
    postgres.create()
    redis_server.start()
    ini = processes.write_ini(
        os.path.join(ROOT, "test.ini"), Path(home, "soak.ini"), **{
            "sqlalchemy.url": postgres.url,
            "ckan.redis.url": "redis://127.0.0.1:{}/0".format(
                redis_server.port),
            "ckanext.webhooks.timeout": TIMEOUT,
            "ckanext.webhooks.retry_schedule": "2 5 10 20 30",
            "ckanext.webhooks.max_hooks_per_address": 0,
            "ckanext.webhooks.user_create_limit": 0,
            "ckanext.webhooks.sweep_interval": 10,
        })
    for command in (["db", "init"], ["db", "upgrade", "-p", "webhooks"]):
        subprocess.run([processes.CKAN, "-c", str(ini), *command],
                       check=True, stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL)
    log("private PostgreSQL on {}, Redis on {}".format(
        postgres.port, redis_server.port))

    # CKAN in this process, against the private cluster
    from ckan.cli import load_config
    from ckan.config.middleware import make_app
    app = make_app(load_config(str(ini)))
    from ckan.lib.search import index
    for name in ("index_package", "update_dict", "remove_dict",
                 "insert_dict", "delete_package", "commit"):
        setattr(index.PackageSearchIndex, name, lambda *a, **k: None)
    import ckan.model as model
    import ckan.plugins.toolkit as tk
    import sqlalchemy as sa

    with app._wsgi_app.test_request_context():
        user = tk.get_action("get_site_user")({"ignore_auth": True}, {})

        def act(action, **data):
            return tk.get_action(action)(
                {"user": user["name"], "ignore_auth": True}, data)

        datasets = [act("package_create", name="soak-{}".format(n))["id"]
                    for n in range(args.datasets)]
        # which hooks each dataset's update must reach
        expected: dict[str, set] = {d: set() for d in datasets}
        every = []
        for n in range(args.hooks):
            kind = "hung" if n % 100 == 1 else \
                "flap" if n % 100 == 2 else "ok"
            if n < args.every_dataset_hooks:
                hook = act("webhook_create", topic="dataset/update",
                           address=receivers.url(kind, n))
                every.append(hook)
            else:
                dataset = datasets[n % len(datasets)]
                hook = act("webhook_create", topic="dataset/update",
                           dataset=dataset, address=receivers.url(kind, n))
                expected[dataset].add(hook)
        for dataset in datasets:
            expected[dataset].update(every)
        model.Session.execute(sa.text("DELETE FROM webhooks_event"))
        model.Session.commit()
        log("{} hooks, {} datasets".format(args.hooks, len(datasets)))

        def start_worker():
            n = len(workers)
            workers.append(processes.start(
                [processes.CKAN, "-c", str(ini), "webhooks", "worker"],
                os.path.join(home, "worker{}.log".format(n))))
        alive: list[subprocess.Popen] = []
        for _ in range(args.workers):
            start_worker()
            alive.append(workers[-1])
        processes.wait_until_listening(*alive, timeout=60)

        duration = args.minutes * 60
        began = time.monotonic()
        plan = sorted([
            (duration * 0.3, "redis"), (duration * 0.7, "redis"),
            (duration * 0.5, "postgres"),
        ] + [(t, "kill") for t in range(int(args.kill_every),
                                         int(duration), int(args.kill_every))])
        kills: list[float] = []
        restarts: list[tuple[float, float]] = []  # PostgreSQL down, up
        chaos_log: list[str] = []

        def chaos():
            for at, what in plan:
                time.sleep(max(0, began + at - time.monotonic()))
                if what == "kill":
                    victim = random.choice(alive)
                    alive.remove(victim)
                    kills.append(time.time())
                    processes.stop(victim)
                    start_worker()
                    alive.append(workers[-1])
                elif what == "redis":
                    redis_server.stop()
                    time.sleep(10)
                    redis_server.start()
                else:
                    down = time.time()
                    postgres.restart()
                    restarts.append((down, time.time()))
                chaos_log.append("{:.0f}s {}".format(at, what))
                log("chaos: " + what)

        threading.Thread(target=chaos, daemon=True).start()

        committed: collections.Counter = collections.Counter()
        write_errors = 0
        n = 0
        while time.monotonic() - began < duration:
            due = began + n / args.rate
            time.sleep(max(0, due - time.monotonic()))
            dataset = random.choice(datasets)
            try:
                act("package_patch", id=dataset,
                    notes="update {}".format(n))
                committed[dataset] += 1
            except Exception:  # PostgreSQL restarting: nothing committed
                write_errors += 1
                model.Session.rollback()
                model.Session.remove()
            n += 1
        log("load done: {} updates committed, {} refused".format(
            sum(committed.values()), write_errors))

        # drain: until nothing is due, fanned out or held (retries of hung
        # receivers may still be scheduled)
        deadline = time.monotonic() + args.drain
        while time.monotonic() < deadline:
            left = model.Session.execute(sa.text("""
                SELECT (SELECT count(*) FROM webhooks_event
                        WHERE fanned_out IS NULL)
                     + (SELECT count(*) FROM webhooks_delivery
                        WHERE status = 'pending'
                          AND next_attempt <= now() at time zone 'utc'
                                              - interval '1 second')
                """)).scalar()
            model.Session.commit()
            if not left:
                break
            time.sleep(2)
        time.sleep(TIMEOUT + 3)  # answers of attempts in flight
        report = _account(model, sa, expected, committed, receivers, kills,
                          restarts, chaos_log, write_errors, args)
    print(json.dumps(report, indent=2))
    ok = report["lost"] == 0 and report["fan_out_mismatches"] == 0 and \
        report["pending_past_schedule"] == 0 and \
        report["events_missing"] == 0 and \
        report["duplicates_unexplained"] == 0
    log("RESULT: " + ("PASS" if ok else "FAIL"))
    return 0 if ok else 1


def _account(model, sa, expected, committed, receivers, kills, restarts,
             chaos_log, write_errors, args) -> dict:
    session = model.Session
    events = session.execute(sa.text("""
        SELECT package_id, count(*) FROM webhooks_event
        WHERE topic = 'dataset/update' GROUP BY package_id""")).fetchall()
    events_by_dataset = dict(events)
    events_missing = sum(max(0, count - events_by_dataset.get(d, 0))
                         for d, count in committed.items())
    per_event = session.execute(sa.text("""
        SELECT e.package_id, e.id, array_agg(d.hook_id)
        FROM webhooks_event e LEFT JOIN webhooks_delivery d
          ON d.event_id = e.id
        WHERE e.topic = 'dataset/update'
        GROUP BY e.package_id, e.id""")).fetchall()
    mismatches = sum(
        1 for dataset, _, hooks in per_event
        if set(h for h in hooks if h) != expected[dataset])
    statuses = dict(session.execute(sa.text(
        "SELECT status, count(*) FROM webhooks_delivery "
        "WHERE event_id IS NOT NULL GROUP BY status")).fetchall())
    succeeded = [row[0] for row in session.execute(sa.text(
        "SELECT id FROM webhooks_delivery WHERE status = 'succeeded' "
        "AND event_id IS NOT NULL"))]
    past_schedule = session.execute(sa.text("""
        SELECT count(*) FROM webhooks_delivery WHERE status = 'pending'
          AND next_attempt < now() at time zone 'utc'
                             - interval '30 seconds'""")).scalar()
    session.commit()
    lost = [m for m in succeeded if m not in receivers.answered]
    duplicates = {m: times for m, times in receivers.answered.items()
                  if len(times) > 1}
    # A message is answered 2xx twice when the worker that sent it could
    # not record the answer before its lease ran out (the lease is
    # 2 * (timeout + 1) + 5 s, renewed while the worker lives and reaches
    # the database): the worker was killed within a lease of the first
    # answer, or PostgreSQL was away then (the answer waits to be recorded
    # while the leases lapse).
    lease = 2 * (TIMEOUT + 1) + 5
    by_kill = by_restart = 0
    unexplained = []
    for times in duplicates.values():
        first = times[0]
        if any(first - TIMEOUT <= k <= first + lease for k in kills):
            by_kill += 1
        elif any(down - lease <= first <= up + 3 * lease
                 for down, up in restarts):
            by_restart += 1
        else:
            unexplained.append(times)
    started = receivers.started
    explained = by_kill + by_restart
    return {
        "minutes": args.minutes, "rate": args.rate, "hooks": args.hooks,
        "workers": args.workers, "chaos": chaos_log,
        "updates_committed": sum(committed.values()),
        "updates_refused_while_postgres_restarted": write_errors,
        "events_missing": events_missing,
        "messages": sum(statuses.values()),
        "messages_by_status": statuses,
        "fan_out_mismatches": mismatches,
        "requests_by_receiver_kind": dict(receivers.requests),
        "lost": len(lost),
        "duplicates": len(duplicates),
        "duplicates_explained_by_kills": by_kill,
        "duplicates_explained_by_postgres_restart": by_restart,
        "duplicates_unexplained": len(duplicates) - explained,
        # seconds into the run of the unexplained ones' answers (20 at most)
        "unexplained_answers_at": [
            [round(t - started, 1) for t in times]
            for times in sorted(unexplained)[:20]],
        "pending_past_schedule": past_schedule,
    }


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, lambda *a: sys.exit(1))
    sys.exit(main())
