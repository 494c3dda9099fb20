"""Benchmarks 3-5: fan-out throughput, end-to-end latency, worker memory.

The receiver is nginx answering ``204`` on loopback and logging each arrival
with ``$msec``. The workers are real ``ckan webhooks worker`` processes. Events
come from ``package_update`` called in this process (CKAN in-process, plugin
on). 10,000 hooks are registered; 1,000 of them match every update of the
benchmark datasets, the rest (``benchlib.filler_hooks``) match nothing.

* throughput: a burst of ``events`` updates (1,000 deliveries each); deliveries
  per second from the first update to the last arrival, for one and two
  workers, against a bare loop that posts the same signed bodies to the same
  addresses through one ``requests.Session``;
* latency: one update at a time; from ``package_update`` returning to the
  first and to the last of its 1,000 deliveries arriving;
* memory: VmRSS of one worker after 10,000 and after 100,000 deliveries.
"""
from __future__ import annotations

import tempfile
import time
from typing import Any

import benchlib

MATCHING = 1000
FILLER = 9000


class Bench:
    """nginx, the hooks and the datasets; workers come and go."""

    def __init__(self, app: Any, datasets: int):
        self.app = app
        self.conn = benchlib.connect()
        self.logdir = tempfile.mkdtemp(prefix="webhooks-bench-logs-")
        self.nginx = benchlib.Nginx().start()
        self.names = ["bench-fanout-{}".format(i) for i in range(datasets)]
        self._count = 0
        # package_update without a change records no event
        self._token = benchlib.new_id()

    def setup(self) -> None:
        import ckan.plugins.toolkit as tk
        benchlib.reset_webhooks(self.conn)
        with benchlib.request_context(self.app):
            pkgs = benchlib.ensure_datasets(self.names, "bench-org",
                                            "bench-group")
            self.pkgs = [tk.get_action("package_show")(
                benchlib.sysadmin_context(), {"id": p["id"]})
                for p in pkgs.values()]
        org_id = self.pkgs[0]["owner_org"]
        row = benchlib.hook_row
        hooks = []
        for i in range(MATCHING):
            address = "{}/hook/{}".format(self.nginx.url, i)
            if i % 2:
                hooks.append(row("dataset/*" if i % 4 == 1
                                 else "dataset/update", address))
            else:
                hooks.append(row("dataset/update", address,
                                 organization=org_id))
        hooks += benchlib.filler_hooks(FILLER, self.nginx.url + "/filler")
        benchlib.insert_hooks(self.conn, hooks)
        self.clear()

    def clear(self) -> None:
        """No deliveries, events or jobs left from an earlier measurement."""
        with self.conn.cursor() as cur:
            cur.execute("TRUNCATE webhooks_delivery, webhooks_event")
            cur.execute("VACUUM ANALYZE webhooks_delivery")
        benchlib.flush_redis()

    def update(self, count: int) -> float:
        """``count`` package_updates, round robin over the datasets; returns
        the wall-clock time when the first one started."""
        import ckan.plugins.toolkit as tk
        update = tk.get_action("package_update")
        started = time.time()
        with benchlib.request_context(self.app):
            for _ in range(count):
                self._count += 1
                pkg = self.pkgs[self._count % len(self.pkgs)]
                pkg["notes"] = "fan-out update {} ({})".format(
                    self._count, self._token)
                update(benchlib.sysadmin_context(), dict(pkg))
        return started

    def workers(self, count: int, name: str) -> list[benchlib.Worker]:
        return [benchlib.Worker("{}-{}".format(name, i), self.logdir).start()
                for i in range(count)]

    def close(self) -> None:
        self.nginx.stop()
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


def worker_throughput(bench: Bench, workers: int, events: int) -> float:
    """Deliveries per second: first update started to last arrival."""
    bench.clear()
    running = bench.workers(workers, "throughput{}".format(workers))
    try:
        time.sleep(1)
        bench.nginx.mark()
        started = bench.update(events)
        expected = events * MATCHING
        arrivals = bench.nginx.wait_for(expected, _timeout(expected))
        _check(arrivals, expected)
        last = max(a[0] for a in arrivals)
    finally:
        for worker in running:
            worker.stop()
    return expected / (last - started)


def bare_loop_throughput(bench: Bench) -> tuple[float, int]:
    """The same signed bodies, posted one after another on one Session."""
    import requests
    from ckanext.webhooks import delivery
    with bench.conn.cursor() as cur:
        cur.execute("""SELECT d.id, d.body, h.address, h.secret
                       FROM webhooks_delivery d
                       JOIN webhooks_hook h ON h.id = d.hook_id
                       WHERE d.body IS NOT NULL ORDER BY d.created""")
        messages = cur.fetchall()
    session = requests.Session()
    session.trust_env = False
    bench.nginx.mark()
    started = time.time()
    for message_id, body, address, secret in messages:
        timestamp = int(time.time())
        response = session.post(address, data=body.encode(), headers={
            "Content-Type": "application/json",
            "User-Agent": delivery.USER_AGENT,
            "webhook-id": message_id,
            "webhook-timestamp": str(timestamp),
            "webhook-signature": delivery.sign(message_id, timestamp, body,
                                               [secret]),
        }, timeout=10, allow_redirects=False)
        response.close()
        if response.status_code != 204:
            raise RuntimeError("nginx answered {}".format(
                response.status_code))
    elapsed = time.time() - started
    session.close()
    return len(messages) / elapsed, len(messages)


def latency(bench: Bench, repetitions: int) -> dict:
    bench.clear()
    (worker,) = bench.workers(1, "latency")
    firsts, lasts = [], []
    try:
        time.sleep(1)
        for _ in range(repetitions):
            bench.nginx.mark()
            bench.update(1)
            returned = time.time()
            arrivals = bench.nginx.wait_for(MATCHING, _timeout(MATCHING))
            _check(arrivals, MATCHING)
            firsts.append(min(a[0] for a in arrivals) - returned)
            lasts.append(max(a[0] for a in arrivals) - returned)
            # let the worker record the outcomes before the next event
            time.sleep(0.5)
    finally:
        worker.stop()
    return {"repetitions": repetitions,
            "first_p50_ms": benchlib.percentile(firsts, 50) * 1000,
            "last_p50_ms": benchlib.percentile(lasts, 50) * 1000,
            "last_p99_ms": benchlib.percentile(lasts, 99) * 1000,
            "last_max_ms": max(lasts) * 1000,
            "last_all_ms": [round(x * 1000, 1) for x in lasts]}


def memory(bench: Bench, small: int, large: int) -> dict:
    """Worker VmRSS after ``small`` and after ``large`` deliveries."""
    bench.clear()
    (worker,) = bench.workers(1, "memory")
    readings = {}
    delivered = 0
    per_step = 10  # events (10,000 deliveries) between waits
    try:
        readings[0] = worker.rss_kib()
        # whole events of MATCHING deliveries each, small first
        step = max(MATCHING, (large - small) // 4 // MATCHING * MATCHING)
        marks = sorted({small, large} | set(range(small, large, step)))
        for mark in marks:
            while delivered < mark:
                events = max(1, min(per_step,
                                    (mark - delivered) // MATCHING))
                bench.nginx.mark()
                bench.update(events)
                expected = events * MATCHING
                _check(bench.nginx.wait_for(expected, _timeout(expected)),
                       expected)
                delivered += expected
            time.sleep(1.5)  # outcomes recorded, worker idle
            readings[delivered] = worker.rss_kib()
            benchlib.log("memory: {} deliveries, VmRSS {} KiB".format(
                delivered, readings[delivered]))
    finally:
        worker.stop()
    return {"rss_kib": readings, "small": small, "large": large,
            "ratio": readings[large] / readings[small]}


def run(app: Any, size: dict,
        parts=("throughput", "latency", "memory")) -> dict:
    bench = Bench(app, datasets=10)
    results: dict[str, Any] = {}
    try:
        bench.setup()
        if "throughput" in parts:
            results["throughput"] = throughput(bench, size)
        if "latency" in parts:
            benchlib.log("latency")
            results["latency"] = latency(bench, size["latency_reps"])
        if "memory" in parts:
            benchlib.log("memory")
            results["memory"] = memory(bench, size["memory_small"],
                                       size["memory_large"])
    finally:
        bench.close()
    results["logs"] = bench.logdir
    return results


def throughput(bench: Bench, size: dict) -> dict:
    one, two, bare = [], [], []
    for rep in range(size["fanout_reps"]):
        benchlib.log("fan-out rep {}: one worker".format(rep + 1))
        one.append(worker_throughput(bench, 1, size["fanout_events"]))
        benchlib.log("fan-out rep {}: bare loop".format(rep + 1))
        rate, count = bare_loop_throughput(bench)
        bare.append(rate)
        benchlib.log("fan-out rep {}: two workers".format(rep + 1))
        two.append(worker_throughput(bench, 2, size["fanout_events"]))
        benchlib.log("  1 worker {:.0f}/s, bare {:.0f}/s, 2 workers "
                     "{:.0f}/s".format(one[-1], bare[-1], two[-1]))
    result = {
        "deliveries": size["fanout_events"] * MATCHING,
        "repetitions": size["fanout_reps"],
        "one_worker": benchlib.median(one), "two_workers":
        benchlib.median(two), "bare_loop": benchlib.median(bare),
        "all": {"one": one, "two": two, "bare": bare},
    }
    result["one_vs_bare"] = result["one_worker"] / result["bare_loop"]
    result["two_vs_one"] = result["two_workers"] / result["one_worker"]
    return result
