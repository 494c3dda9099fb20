"""Benchmarks of the delivery pipeline: fan-out, slow and hung receivers,
latency, memory, backlogs of many events, keeping up with CKAN.

Every worker is a real ``ckan webhooks worker`` process (started through
bench/probe.py, which counts its SQL statements). Events come from
``package_update`` called in this process (CKAN in-process, plugin on).
Every hook has a receiver of its own (a loopback host 127.0.x.y, see
``benchlib.receiver_host``), so ``max_per_host`` never caps a benchmark that
has 1,000 receivers; one listener answers them all:

* nginx answering ``204`` at once (``benchlib.Nginx``), logging arrivals;
* bench/receiver.py answering after 100 ms (aiohttp on uvloop), with a port
  that accepts and never answers (hung receivers).

The baselines post the same signed bodies to the same addresses: the asyncio
client (bench/client.py, aiohttp, 200 in flight) and ApacheBench (``ab``, C,
one address, the same body size, 200 in flight, keep-alive).

Times run from the moment the first event is committed (its
``package_update`` returned) to the last arrival; a backlog is timed from
the moment the stopped worker (SIGSTOP) is let go (SIGCONT).
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import tempfile
import time
from typing import Any, Optional

import benchlib

MATCHING = 1000
FILLER = 9000
CLIENT_CONCURRENCY = 200


class Bench:
    """A receiver, hooks, datasets; workers come and go."""

    def __init__(self, app: Any, receiver: Any, datasets: int,
                 prefix: str = "bench-fanout"):
        self.app = app
        self.conn = benchlib.connect()
        self.logdir = tempfile.mkdtemp(prefix="webhooks-bench-logs-")
        self.receiver = receiver
        self.names = ["{}-{}".format(prefix, i) for i in range(datasets)]
        self._count = 0
        # package_update without a change records no event
        self._token = benchlib.new_id()
        with benchlib.request_context(self.app):
            import ckan.plugins.toolkit as tk
            pkgs = benchlib.ensure_datasets(self.names, "bench-org",
                                            "bench-group")
            self.pkgs = [tk.get_action("package_show")(
                benchlib.sysadmin_context(), {"id": p["id"]})
                for p in pkgs.values()]
        self.org_id = self.pkgs[0]["owner_org"]

    def address(self, i: int, port: Optional[int] = None) -> str:
        return "http://{}:{}/hook/{}".format(
            benchlib.receiver_host(i), port or self.receiver.port, i)

    def hooks(self, rows: list[dict]) -> None:
        """Exactly these hooks, and nothing delivered yet."""
        benchlib.reset_webhooks(self.conn)
        benchlib.insert_hooks(self.conn, rows)
        self.clear()

    def clear(self) -> None:
        """No deliveries or events left from an earlier measurement."""
        with self.conn.cursor() as cur:
            cur.execute("TRUNCATE webhooks_attempt, webhooks_delivery, "
                        "webhooks_event")
            cur.execute("UPDATE webhooks_hook SET consecutive_failures = 0, "
                        "circuit_until = NULL, failing_since = NULL")
            cur.execute("VACUUM ANALYZE webhooks_delivery")

    def update(self, count: int) -> tuple[float, float]:
        """``count`` package_updates, round robin over the datasets; when
        the first and the last one returned (their events committed)."""
        import ckan.plugins.toolkit as tk
        update = tk.get_action("package_update")
        first = None
        with benchlib.request_context(self.app):
            for _ in range(count):
                self._count += 1
                pkg = self.pkgs[self._count % len(self.pkgs)]
                pkg["notes"] = "fan-out update {} ({})".format(
                    self._count, self._token)
                update(benchlib.sysadmin_context(), dict(pkg))
                if first is None:
                    first = time.time()
        return first, time.time()

    def workers(self, count: int, name: str) -> list[benchlib.Worker]:
        return [benchlib.Worker("{}-{}".format(name, i), self.logdir).start()
                for i in range(count)]

    def delivered(self, hook_ids: Optional[list[str]] = None) -> list:
        """[[message id, body, address, secret]] of what was delivered."""
        with self.conn.cursor() as cur:
            cur.execute("""SELECT d.id, d.body, h.address, h.secret
                           FROM webhooks_delivery d
                           JOIN webhooks_hook h ON h.id = d.hook_id
                           WHERE d.body IS NOT NULL
                             AND d.status = 'succeeded'
                           ORDER BY d.created, d.id""")
            return [list(r) for r in cur.fetchall()]

    def close(self) -> None:
        benchlib.reset_webhooks(self.conn)
        self.conn.close()


def _timeout(deliveries: int) -> float:
    # generous: 100 deliveries/s at worst, and at least a minute
    return max(60.0, deliveries / 100.0)


def _check(arrivals: list[tuple], expected: int) -> None:
    ids = {a[1] for a in arrivals}
    bad = [a for a in arrivals if a[2] != "204"]
    if len(ids) != expected or bad:
        raise RuntimeError("expected {} distinct deliveries answered 204, "
                           "got {} distinct, {} not 204".format(
                               expected, len(ids), len(bad)))


def _settle(bench: Bench, expected: int, timeout: float = 30) -> None:
    """Wait until the worker has recorded ``expected`` successes."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with bench.conn.cursor() as cur:
            cur.execute("SELECT count(*) FROM webhooks_delivery "
                        "WHERE status = 'succeeded'")
            if cur.fetchone()[0] >= expected:
                return
        time.sleep(0.1)
    raise RuntimeError("outcomes not recorded within {}s".format(timeout))


def client_rate(bench: Bench, messages: list) -> float:
    """bench/client.py posting ``messages``: deliveries per second."""
    path = os.path.join(bench.logdir, "messages.json")
    with open(path, "w") as f:
        json.dump(messages, f)
    bench.receiver.mark()
    out = subprocess.run(
        [benchlib.PYTHON, os.path.join(benchlib.BENCH, "client.py"), path,
         str(CLIENT_CONCURRENCY)], capture_output=True, text=True,
        check=True, timeout=600)
    result = json.loads(out.stdout)
    arrivals = bench.receiver.wait_for(len(messages), 60)
    if result["failed"]:
        raise RuntimeError("the client failed {} posts".format(
            result["failed"]))
    last = max(a[0] for a in arrivals)
    return len(messages) / (last - result["started"])


def ab_rate(url: str, body: str, requests: int) -> dict:
    """ApacheBench: the same body size, one address, 200 in flight,
    keep-alive: requests per second."""
    fd, path = tempfile.mkstemp(suffix=".json")
    with os.fdopen(fd, "w") as f:
        f.write(body)
    try:
        out = subprocess.run(
            ["ab", "-q", "-k", "-n", str(requests), "-c",
             str(CLIENT_CONCURRENCY), "-p", path, "-T", "application/json",
             "-H", "webhook-id: ab", url],
            capture_output=True, text=True, timeout=300)
    finally:
        os.unlink(path)
    rate = failed = None
    for line in out.stdout.splitlines():
        if line.startswith("Requests per second:"):
            rate = float(line.split()[3])
        if line.startswith("Failed requests:"):
            failed = int(line.split()[2])
        if line.startswith("Non-2xx responses:"):
            failed = (failed or 0) + int(line.split()[2])
    if rate is None:
        raise RuntimeError("ab: " + out.stdout + out.stderr)
    return {"rate": rate, "failed": failed or 0, "requests": requests,
            "body_bytes": len(body.encode())}


# --- issue 12: 1,000 receivers -----------------------------------------------

def _receiver_hooks(bench: Bench, count: int, hung: int = 0,
                    filler: int = 0) -> list[dict]:
    """``count`` hooks matching every update of the benchmark datasets, one
    receiver each; the last ``hung`` of them at the hung port."""
    row = benchlib.hook_row
    hooks = []
    for i in range(count):
        port = getattr(bench.receiver, "hung_port", None) \
            if i >= count - hung else None
        address = bench.address(i, port)
        if i % 2:
            hooks.append(row("dataset/*" if i % 4 == 1
                             else "dataset/update", address))
        else:
            hooks.append(row("dataset/update", address,
                             organization=bench.org_id))
    return hooks + benchlib.filler_hooks(filler, bench.address(count))


def nginx_fanout(app: Any, size: dict) -> dict:
    """Receivers answering at once: one worker, two workers, the asyncio
    client, ApacheBench."""
    nginx = benchlib.Nginx().start()
    bench = Bench(app, nginx, datasets=10)
    one, two, client, ab = [], [], [], []
    events = size["fanout_events"]
    expected = events * MATCHING
    try:
        bench.hooks(_receiver_hooks(bench, MATCHING, filler=FILLER))
        for rep in range(size["fanout_reps"]):
            for workers, rates in ((1, one), (2, two)):
                bench.clear()
                benchlib.log("nginx rep {}: {} worker(s)".format(
                    rep + 1, workers))
                running = bench.workers(workers, "nginx{}".format(workers))
                try:
                    time.sleep(1)
                    nginx.mark()
                    first, _ = bench.update(events)
                    arrivals = nginx.wait_for(expected, _timeout(expected))
                    _check(arrivals, expected)
                    rates.append(expected / (max(a[0] for a in arrivals)
                                             - first))
                    _settle(bench, expected)
                finally:
                    for worker in running:
                        worker.stop()
                if workers == 1:
                    messages = bench.delivered()
                    benchlib.log("nginx rep {}: asyncio client".format(
                        rep + 1))
                    client.append(client_rate(bench, messages))
                    benchlib.log("nginx rep {}: ab".format(rep + 1))
                    ab.append(ab_rate(nginx.url + "/hook/0", messages[0][1],
                                      max(expected, 20000)))
            benchlib.log("  1 worker {:.0f}/s, 2 workers {:.0f}/s, client "
                         "{:.0f}/s, ab {:.0f}/s".format(
                             one[-1], two[-1], client[-1], ab[-1]["rate"]))
    finally:
        bench.close()
        nginx.stop()
    m = benchlib.median
    result = {"deliveries": expected, "repetitions": size["fanout_reps"],
              "one_worker": m(one), "two_workers": m(two),
              "client": m(client), "ab": m([a["rate"] for a in ab]),
              "ab_body_bytes": ab[0]["body_bytes"],
              "ab_failed": sum(a["failed"] for a in ab),
              "all": {"one": one, "two": two, "client": client,
                      "ab": [a["rate"] for a in ab]}}
    result["one_vs_client"] = result["one_worker"] / result["client"]
    result["two_vs_one"] = result["two_workers"] / result["one_worker"]
    return result


def slow_receivers(app: Any, size: dict) -> dict:
    """Receivers answering after 100 ms: 1,000 hooks, one event, one worker
    against the asyncio client; then 5% of the receivers hung.

    Every run, with or without hung receivers, starts a worker of its own,
    so every run opens its 1,000 connections: like for like. (Until
    2026-12-02 the runs without hung receivers shared one worker and, after
    the first, reused its kept-alive connections, while each hung run
    started cold; that made 6b look about 1.3 where it is about 1.0.)
    """
    slow = benchlib.SlowReceiver(100).start()
    bench = Bench(app, slow, datasets=10)
    worker_rates, client_rates, healthy_secs = [], [], []
    hung_secs = []
    hung = MATCHING // 20
    try:
        hooks = _receiver_hooks(bench, MATCHING)
        healthy_ids = [h["id"] for h in hooks[:MATCHING - hung]]
        bench.hooks(hooks)
        reps = max(size["slow_reps"], size["hung_reps"])
        for rep in range(reps):
            if rep < size["slow_reps"]:
                benchlib.log("slow rep {}: one worker".format(rep + 1))
                _move(bench, hooks[MATCHING - hung:], None)
                bench.clear()
                (worker,) = bench.workers(1, "slow{}".format(rep))
                try:
                    time.sleep(1)
                    slow.mark()
                    first, _ = bench.update(1)
                    arrivals = slow.wait_for(MATCHING, _timeout(MATCHING))
                    _check(arrivals, MATCHING)
                    worker_rates.append(
                        MATCHING / (max(a[0] for a in arrivals) - first))
                    _settle(bench, MATCHING)
                finally:
                    worker.stop()
                # the same 950 receivers that stay healthy below
                healthy = _message_ids(bench, healthy_ids)
                healthy_secs.append(max(a[0] for a in arrivals
                                        if a[1] in healthy) - first)
                benchlib.log("slow rep {}: asyncio client".format(rep + 1))
                client_rates.append(client_rate(bench, bench.delivered()))
                benchlib.log("  worker {:.0f}/s, client {:.0f}/s, 950 "
                             "healthy in {:.3f}s".format(
                                 worker_rates[-1], client_rates[-1],
                                 healthy_secs[-1]))
            if rep < size["hung_reps"]:
                # 5% hung: the last 50 hooks move to the port that never
                # answers
                benchlib.log("hung rep {}".format(rep + 1))
                _move(bench, hooks[MATCHING - hung:], slow.hung_port)
                bench.clear()
                (worker,) = bench.workers(1, "hung{}".format(rep))
                try:
                    time.sleep(1)
                    slow.mark()
                    first, _ = bench.update(1)
                    arrivals = slow.wait_for(MATCHING - hung,
                                             _timeout(MATCHING))
                    hung_secs.append(max(a[0] for a in arrivals) - first)
                    benchlib.log("  950 healthy in {:.3f}s".format(
                        hung_secs[-1]))
                finally:
                    # the hung attempts would hold a gentle stop for the
                    # timeout
                    worker.kill()
    finally:
        bench.close()
        slow.stop()
    m = benchlib.median
    result = {"deliveries": MATCHING, "delay_ms": 100,
              "repetitions": size["slow_reps"],
              "one_worker": m(worker_rates), "client": m(client_rates),
              "healthy_seconds": m(healthy_secs),
              "hung": hung, "hung_repetitions": size["hung_reps"],
              "hung_healthy_seconds": m(hung_secs),
              "all": {"one": worker_rates, "client": client_rates,
                      "healthy_seconds": healthy_secs,
                      "hung_healthy_seconds": hung_secs}}
    result["one_vs_client"] = result["one_worker"] / result["client"]
    result["hung_vs_healthy"] = (result["hung_healthy_seconds"]
                                 / result["healthy_seconds"])
    return result


def _move(bench: Bench, hooks: list[dict], port: Optional[int]) -> None:
    """Point ``hooks`` at ``port`` of the receiver (None: its own port)."""
    with bench.conn.cursor() as cur:
        for h in hooks:
            address = bench.address(int(h["address"].rsplit("/", 1)[1]),
                                    port)
            cur.execute("UPDATE webhooks_hook SET address = %s, "
                        "normalized_address = %s WHERE id = %s",
                        (address, address, h["id"]))


def _message_ids(bench: Bench, hook_ids: list[str]) -> set[str]:
    with bench.conn.cursor() as cur:
        cur.execute("SELECT id FROM webhooks_delivery WHERE hook_id = "
                    "ANY(%s)", (hook_ids,))
        return {r[0] for r in cur.fetchall()}


# --- the existing table: latency and memory ----------------------------------

def latency(app: Any, repetitions: int) -> dict:
    nginx = benchlib.Nginx().start()
    bench = Bench(app, nginx, datasets=10)
    firsts, lasts = [], []
    try:
        bench.hooks(_receiver_hooks(bench, MATCHING, filler=FILLER))
        (worker,) = bench.workers(1, "latency")
        try:
            time.sleep(1)
            for _ in range(repetitions):
                nginx.mark()
                _, returned = bench.update(1)
                arrivals = nginx.wait_for(MATCHING, _timeout(MATCHING))
                _check(arrivals, MATCHING)
                firsts.append(min(a[0] for a in arrivals) - returned)
                lasts.append(max(a[0] for a in arrivals) - returned)
                # let the worker record the outcomes before the next event
                time.sleep(0.5)
        finally:
            worker.stop()
    finally:
        bench.close()
        nginx.stop()
    return {"repetitions": repetitions,
            "first_p50_ms": benchlib.percentile(firsts, 50) * 1000,
            "last_p50_ms": benchlib.percentile(lasts, 50) * 1000,
            "last_p99_ms": benchlib.percentile(lasts, 99) * 1000,
            "last_max_ms": max(lasts) * 1000,
            "last_all_ms": [round(x * 1000, 1) for x in lasts]}


def memory(app: Any, small: int, large: int) -> dict:
    """Worker VmRSS after ``small`` and after ``large`` deliveries."""
    nginx = benchlib.Nginx().start()
    bench = Bench(app, nginx, datasets=10)
    readings = {}
    delivered = 0
    per_step = 10  # events (10,000 deliveries) between waits
    try:
        bench.hooks(_receiver_hooks(bench, MATCHING, filler=FILLER))
        (worker,) = bench.workers(1, "memory")
        try:
            readings[0] = worker.rss_kib()
            step = max(MATCHING, (large - small) // 4 // MATCHING * MATCHING)
            marks = sorted({small, large} | set(range(small, large, step)))
            for mark in marks:
                while delivered < mark:
                    events = max(1, min(per_step,
                                        (mark - delivered) // MATCHING))
                    nginx.mark()
                    bench.update(events)
                    expected = events * MATCHING
                    _check(nginx.wait_for(expected, _timeout(expected)),
                           expected)
                    delivered += expected
                time.sleep(1.5)  # outcomes recorded, worker idle
                readings[delivered] = worker.rss_kib()
                benchlib.log("memory: {} deliveries, VmRSS {} KiB".format(
                    delivered, readings[delivered]))
        finally:
            worker.stop()
    finally:
        bench.close()
        nginx.stop()
    return {"rss_kib": readings, "small": small, "large": large,
            "ratio": readings[large] / readings[small]}


# --- issue 20: many events, owners, keeping up -------------------------------

OWNERS = 5


def _owners() -> list[str]:
    """Ids of the benchmark's hook owners (plain users, created once)."""
    import ckan.model as model
    ids = []
    for i in range(OWNERS):
        name = "bench-owner-{}".format(i)
        user = model.User.get(name)
        if user is None:
            user = model.User(name=name, email=name + "@example.com",
                              password=benchlib.new_id())
            model.Session.add(user)
            model.Session.commit()
        ids.append(user.id)
    return ids


def _owned_hooks(bench: Bench, count: int, owners: list) -> list[dict]:
    """``count`` unfiltered ``dataset/update`` hooks, one receiver each,
    owned in turn by ``owners`` (None: anonymous)."""
    return [benchlib.hook_row("dataset/update", bench.address(i),
                              owner_id=owners[i % len(owners)])
            for i in range(count)]


def _drained(bench: Bench, worker: benchlib.Worker, expected: int,
             cpu: float, statements: int) -> tuple[float, float, int]:
    """Once ``expected`` deliveries arrived and were recorded: the last
    arrival, and the worker's CPU seconds and statements since ``cpu`` and
    ``statements`` were read."""
    arrivals = bench.receiver.wait_for(expected, _timeout(expected))
    _check(arrivals, expected)
    _settle(bench, expected)
    return (max(a[0] for a in arrivals), worker.cpu_seconds() - cpu,
            worker.statements() - statements)


def _backlog(bench: Bench, hooks: list[dict], events: int) -> dict:
    """``events`` updates made while the worker is stopped (SIGSTOP), then
    drained: deliveries per second from SIGCONT to the last arrival, and the
    worker's CPU time and SQL statements per event meanwhile."""
    bench.hooks(hooks)
    expected = events * len(hooks)
    (worker,) = bench.workers(1, "backlog")
    try:
        time.sleep(1)
        os.kill(worker.proc.pid, signal.SIGSTOP)
        try:
            bench.update(events)
        finally:
            cpu, statements = worker.cpu_seconds(), worker.statements()
            bench.receiver.mark()
            started = time.time()
            os.kill(worker.proc.pid, signal.SIGCONT)
        last, cpu, statements = _drained(bench, worker, expected, cpu,
                                         statements)
    finally:
        worker.stop()
    return {"events": events, "hooks": len(hooks), "deliveries": expected,
            "rate": expected / (last - started), "seconds": last - started,
            "cpu_ms_per_event": cpu * 1000 / events,
            "statements_per_event": statements / events,
            "cpu_us_per_delivery": cpu * 1e6 / expected}


def _live(bench: Bench, hooks: list[dict], events: int) -> dict:
    """The worker running while CKAN updates as fast as it can here: how
    long after the last update returned its last delivery arrives."""
    bench.hooks(hooks)
    expected = events * len(hooks)
    (worker,) = bench.workers(1, "live")
    try:
        time.sleep(1)
        cpu, statements = worker.cpu_seconds(), worker.statements()
        bench.receiver.mark()
        first, last_update = bench.update(events)
        last, cpu, statements = _drained(bench, worker, expected, cpu,
                                         statements)
    finally:
        worker.stop()
    return {"events": events, "hooks": len(hooks), "deliveries": expected,
            "updates_per_second": (events - 1) / (last_update - first)
            if events > 1 else None,
            "lag_ms": (last - last_update) * 1000,
            "cpu_ms_per_event": cpu * 1000 / events,
            "statements_per_event": statements / events}


def many_events(app: Any, size: dict) -> dict:
    """Issue 20: E events x 10 hooks (5 owners, or anonymous) against one
    event x 10*E hooks, both drained from a backlog; and live."""
    events = size["many_events"]
    nginx = benchlib.Nginx().start()
    # a dataset per event: messages of one hook about one dataset go out
    # in order, one at a time; distinct datasets measure the pipeline
    bench = Bench(app, nginx, datasets=events, prefix="bench-many")
    results: dict[str, Any] = {"events": events, "owners": OWNERS}
    try:
        with benchlib.request_context(app):
            owners = _owners()
        for label, who in (("owners", owners), ("anonymous", [None])):
            benchlib.log("backlog, {}: 1 event x {} hooks".format(
                label, 10 * events))
            one = _backlog(bench, _owned_hooks(bench, 10 * events, who), 1)
            benchlib.log("backlog, {}: {} events x 10 hooks".format(
                label, events))
            many = _backlog(bench, _owned_hooks(bench, 10, who), events)
            results[label] = {"one_event": one, "many_events": many,
                              "ratio": many["rate"] / one["rate"]}
            benchlib.log("  {:.0f}/s vs {:.0f}/s: {:.2f}".format(
                many["rate"], one["rate"], results[label]["ratio"]))
        benchlib.log("live: {} updates x 10 hooks".format(events))
        results["live"] = _live(bench, _owned_hooks(bench, 10, owners),
                                events)
        benchlib.log("  last delivery {:.0f} ms after the last update".format(
            results["live"]["lag_ms"]))
    finally:
        bench.close()
        nginx.stop()
    return results


PARTS = ("nginx", "slow", "latency", "memory", "many", "onehost")


def run(app: Any, size: dict, parts=PARTS) -> dict:
    results: dict[str, Any] = {}
    if "nginx" in parts:
        benchlib.log("receivers answering at once (nginx)")
        results["nginx"] = nginx_fanout(app, size)
    if "slow" in parts:
        benchlib.log("receivers answering after 100 ms, and 5% hung")
        results["slow"] = slow_receivers(app, size)
    if "latency" in parts:
        benchlib.log("latency")
        results["latency"] = latency(app, size["latency_reps"])
    if "memory" in parts:
        benchlib.log("memory")
        results["memory"] = memory(app, size["memory_small"],
                                   size["memory_large"])
    if "many" in parts:
        benchlib.log("many events (issue 20)")
        results["many"] = many_events(app, size)
    if "onehost" in parts:
        import onehost
        benchlib.log("one host and port, a path per hook (issue 26)")
        results["onehost"] = onehost.run(app, size)
    return results
