"""Benchmarks with every hook on ONE receiver host (issue 26).

The other delivery benchmarks give each hook a loopback host of its own
(``benchlib.receiver_host``). Here all 1,000 hooks share one scheme, host
and port, ``http://127.0.0.1:PORT``, each with a path of its own
(``/hook/<i>``), as hooks on Slack, Zapier or one organization's server
do; hung paths (``/hang/<i>``) are on that same host and port
(bench/receiver.py reads them and never answers). The receiver answers
after 100 ms, and samples the number of requests in flight every 100 ms.

- **Throughput**, cold and warm: one event, 1,000 deliveries, against the
  asyncio client (bench/client.py, 200 in flight to the one host; its
  connector has no per-host limit). *Cold*: a running worker (it has
  delivered one event to another host, 127.0.0.2) and a host it has not
  sent to, the host's bound starting where it starts. *Warm*: the same
  worker's next event to the host, as a worker sending to one host all
  day is. *Fresh* (reported): a worker process's first event at all, its
  caches and connections cold too.
- **Hung paths**: every 20th of the 1,000 paths hung; the seconds to the
  950 healthy deliveries against the same 950 in the cold runs; and one
  more hook on the host, for another dataset updated 2 s after the first
  change: its delivery's delay after its change.
- **Slowdown**: a stream of events; after a while every path answers after
  2 s, then after 100 ms again: the requests in flight at the receiver over
  time.
- **ApacheBench** beside them: ``ab -k -c 200`` at one path of the same
  receiver, the same body size; and ``ab -c 1`` for one request's time.
"""
from __future__ import annotations

import os
import statistics
import subprocess
import tempfile
import time
from typing import Any, Optional

import benchlib
from fanout import (Bench, CLIENT_CONCURRENCY, MATCHING, _check,
                    _message_ids, _settle, _timeout, ab_rate, client_rate)

HUNG_EVERY = 20        # every 20th path hangs: 50 of 1,000
OTHER_AFTER = 2.0      # seconds after the first change, the other dataset's
SLOW_MS = 100
SLOWDOWN_MS = 2000
# the old code (one fixed bound per host that counts hung attempts) took
# over a minute to the other hook's delivery (issue 26)
HUNG_TIMEOUT = 300.0


class OneHost(Bench):
    """Hooks on one host and port, each its own path; the benchmark
    datasets and one more, in another organization, for the other hook."""

    def __init__(self, app: Any, receiver: Any, datasets: int):
        super().__init__(app, receiver, datasets, prefix="bench-fanout")
        with benchlib.request_context(self.app):
            import ckan.plugins.toolkit as tk
            (other,) = benchlib.ensure_datasets(
                ["bench-onehost-other"], "bench-org-other").values()
            self.other = tk.get_action("package_show")(
                benchlib.sysadmin_context(), {"id": other["id"]})

    def address(self, i: int, port: Optional[int] = None,
                hung: bool = False) -> str:
        return benchlib.one_host_address(self.receiver.port, i, hung)

    def update_other(self) -> float:
        """package_update of the other dataset: when it returned."""
        import ckan.plugins.toolkit as tk
        with benchlib.request_context(self.app):
            self._count += 1
            self.other["notes"] = "other update {} ({})".format(
                self._count, self._token)
            tk.get_action("package_update")(benchlib.sysadmin_context(),
                                            dict(self.other))
        return time.time()


def _hooks(bench: OneHost, hung_every: int = 0) -> tuple[list, dict]:
    """1,000 hooks matching every update of the benchmark datasets (their
    organization's), every ``hung_every``-th at a hung path; and the other
    hook (the other dataset's). The same ids whatever hangs."""
    row = benchlib.hook_row
    rows = []
    for i in range(MATCHING):
        hung = bool(hung_every) and i % hung_every == hung_every - 1
        rows.append(row("dataset/*" if i % 2 else "dataset/update",
                        bench.address(i, hung=hung),
                        organization=bench.org_id))
    other = row("dataset/update", bench.address(MATCHING),
                dataset=bench.other["id"])
    return rows, other


def _same_ids(rows: list, like: list) -> list:
    for r, o in zip(rows, like, strict=True):
        r["id"], r["secret"] = o["id"], o["secret"]
    return rows


def ab_latency(url: str, body: str, requests: int = 20) -> float:
    """ApacheBench one request at a time: the mean milliseconds per
    request (the receiver's delay plus HTTP)."""
    fd, path = tempfile.mkstemp(suffix=".json")
    with os.fdopen(fd, "w") as f:
        f.write(body)
    try:
        out = subprocess.run(
            ["ab", "-q", "-k", "-n", str(requests), "-c", "1", "-p", path,
             "-T", "application/json", "-H", "webhook-id: ab", url],
            capture_output=True, text=True, timeout=120)
    finally:
        os.unlink(path)
    for line in out.stdout.splitlines():
        if line.startswith("Time per request:"):
            return float(line.split()[3])
    raise RuntimeError("ab: " + out.stdout + out.stderr)


def _one_event(bench: OneHost, seen: set) -> dict:
    """One update to the 1,000 hooks: its rate, the seconds to the healthy
    950 (the paths that hang in the hung runs), its messages, and how the
    requests in flight at the receiver grew (every 100 ms)."""
    slow = bench.receiver
    slow.mark()
    first, _ = bench.update(1)
    arrivals = slow.wait_for(MATCHING, _timeout(MATCHING))
    _check(arrivals, MATCHING)
    samples = slow.in_flight()
    _settle(bench, len(seen) + MATCHING)
    messages = [m for m in bench.delivered() if m[0] not in seen]
    seen.update(m[0] for m in messages)
    healthy = _message_ids(bench, bench.healthy_ids) & {
        m[0] for m in messages}
    last = max(a[0] for a in arrivals)
    return {"rate": MATCHING / (last - first),
            "healthy_seconds": max(a[0] for a in arrivals
                                   if a[1] in healthy) - first,
            "first_answer_ms": (min(a[0] for a in arrivals) - first) * 1000,
            "seconds": last - first,
            # from the update returning to the last arrival
            "in_flight": [n for t, n, _ in samples if first <= t <= last],
            "messages": messages}


def _ramp(run: dict) -> dict:
    return {"first_answer_ms": round(run["first_answer_ms"]),
            "seconds": round(run["seconds"], 3),
            "in_flight": " ".join(map(str, run["in_flight"]))}


def throughput(bench: OneHost, reps: int) -> dict:
    """Cold and warm runs, each against the client; ab once a rep."""
    cold, warm, fresh, client, healthy, ab = [], [], [], [], [], []
    ramps: dict[str, list] = {"fresh": [], "cold": [], "warm": []}
    body = None
    for rep in range(reps):
        # a fresh worker process: its first event at all (reported)
        bench.hooks(bench.plain)
        benchlib.log("one host rep {}: a fresh worker".format(rep + 1))
        (worker,) = bench.workers(1, "onehost-fresh{}".format(rep))
        try:
            time.sleep(1)
            run = _one_event(bench, set())
            fresh.append(run["rate"])
            ramps["fresh"].append(_ramp(run))
        finally:
            worker.stop()
        # a running worker (it has delivered to another host) and a host
        # it has not sent to: the host's bound starts where it starts
        bench.hooks(bench.plain_and_warmup)
        benchlib.log("one host rep {}: a running worker, a cold host".format(
            rep + 1))
        (worker,) = bench.workers(1, "onehost{}".format(rep))
        try:
            time.sleep(1)
            seen: set = set()
            bench.receiver.mark()
            bench.update_other()
            _check(bench.receiver.wait_for(1, 30), 1)
            _settle(bench, 1)
            seen.update(m[0] for m in bench.delivered())
            run = _one_event(bench, seen)
            cold.append(run["rate"])
            healthy.append(run["healthy_seconds"])
            ramps["cold"].append(_ramp(run))
            body = run["messages"][0][1]
            client.append(client_rate(bench, run["messages"]))
            benchlib.log("one host rep {}: the same worker, warm".format(
                rep + 1))
            run = _one_event(bench, seen)
            warm.append(run["rate"])
            ramps["warm"].append(_ramp(run))
            client.append(client_rate(bench, run["messages"]))
        finally:
            worker.stop()
        ab.append(ab_rate(bench.receiver.url + "/hook/0", body, 4000))
        benchlib.log("  fresh {:.0f}/s, cold {:.0f}/s, warm {:.0f}/s, "
                     "client {:.0f}, {:.0f}/s, ab {:.0f}/s; 950 in {:.3f} s"
                     .format(fresh[-1], cold[-1], warm[-1], client[-2],
                             client[-1], ab[-1]["rate"], healthy[-1]))
        for kind in ("fresh", "cold", "warm"):
            benchlib.log("  {}: first answer after {:.0f} ms, in flight "
                         "every 100 ms: {}".format(
                             kind, ramps[kind][-1]["first_answer_ms"],
                             ramps[kind][-1]["in_flight"]))
    m = benchlib.median
    result = {"repetitions": reps, "deliveries": MATCHING,
              "delay_ms": SLOW_MS, "cold": m(cold), "warm": m(warm),
              "fresh": m(fresh),
              "client": m(client), "ab": m([a["rate"] for a in ab]),
              "ab_body_bytes": ab[0]["body_bytes"],
              "ab_failed": sum(a["failed"] for a in ab),
              "healthy_seconds": m(healthy),
              "ab_latency_ms": ab_latency(bench.receiver.url + "/hook/0",
                                          body),
              "all": {"fresh": fresh, "cold": cold, "warm": warm,
                      "client": client,
                      "ab": [a["rate"] for a in ab],
                      "healthy_seconds": healthy},
              "ramps": ramps}
    result["cold_vs_client"] = result["cold"] / result["client"]
    result["warm_vs_client"] = result["warm"] / result["client"]
    result["fresh_vs_client"] = result["fresh"] / result["client"]
    return result


def hung_paths(bench: OneHost, reps: int) -> dict:
    """Every 20th path hung; the other dataset updated 2 s after."""
    slow = bench.receiver
    healthy_secs, other_delays, hanging = [], [], []
    hung = MATCHING // HUNG_EVERY
    for rep in range(reps):
        bench.hooks(bench.hung)
        benchlib.log("one host, {} hung paths, rep {}".format(hung, rep + 1))
        (worker,) = bench.workers(1, "onehost-hung{}".format(rep))
        try:
            time.sleep(1)
            slow.mark()
            first, _ = bench.update(1)
            time.sleep(max(0.0, first + OTHER_AFTER - time.time()))
            other_returned = bench.update_other()
            arrivals = slow.wait_for(MATCHING - hung + 1, HUNG_TIMEOUT)
            _check(arrivals, MATCHING - hung + 1)
            healthy = _message_ids(bench, bench.healthy_ids)
            (other,) = _message_ids(bench, [bench.other_hook["id"]])
            healthy_secs.append(max(a[0] for a in arrivals
                                    if a[1] in healthy) - first)
            other_delays.append(
                [a[0] for a in arrivals if a[1] == other][0] - other_returned)
            hanging.append(max(s[2] for s in slow.in_flight()))
            benchlib.log("  950 healthy in {:.3f} s; the other hook {:.0f} "
                         "ms after its change; {} hung at most".format(
                             healthy_secs[-1], other_delays[-1] * 1000,
                             hanging[-1]))
        finally:
            # the hung attempts would hold a gentle stop for the timeout
            worker.kill()
    m = benchlib.median
    return {"repetitions": reps, "hung": hung,
            "healthy_seconds": m(healthy_secs),
            "other_delay_ms": m(other_delays) * 1000,
            "other_after_s": OTHER_AFTER,
            "all": {"healthy_seconds": healthy_secs,
                    "other_delay_ms": [round(d * 1000, 1)
                                       for d in other_delays],
                    "hanging_at_most": hanging}}


def slowdown(bench: OneHost, phases: tuple, reps: int) -> dict:
    """A stream of events to the 1,000 paths; after ``fast`` seconds every
    path answers after 2 s for ``slow`` seconds, then after 100 ms again
    for ``again`` seconds: the requests in flight at the receiver."""
    fast, slow_s, again, events = phases
    slow = bench.receiver
    runs = []
    for rep in range(reps):
        bench.hooks(bench.plain)
        benchlib.log("one host slows to {} ms, rep {}".format(SLOWDOWN_MS,
                                                             rep + 1))
        (worker,) = bench.workers(1, "onehost-slowdown{}".format(rep))
        try:
            time.sleep(1)
            slow.mark()
            started = time.time()
            bench.update(events)
            time.sleep(max(0.0, started + fast - time.time()))
            slow.delay(SLOWDOWN_MS)
            slowed = time.time()
            time.sleep(slow_s)
            slow.delay(SLOW_MS)
            fast_again = time.time()
            time.sleep(again)
            ended = time.time()
            samples = slow.in_flight()
            arrivals = slow.arrivals()
        finally:
            slow.delay(SLOW_MS)
            worker.stop()
        run = _summary(samples, arrivals, started, slowed, fast_again, ended,
                       events * MATCHING)
        runs.append(run)
        benchlib.log("  in flight: peak before {}, level before {}, least "
                     "during {}, end of slow {}, after {}; recovered in {} "
                     "s".format(run["peak_before"], run["level_before"],
                                run["min_during"], run["level_end_slow"],
                                run["level_after"], run["recover_seconds"]))
        benchlib.log("  per second: " + run["compact"])
    return {"repetitions": reps, "phases_s": [fast, slow_s, again],
            "events": events, "slow_ms": SLOWDOWN_MS, "runs": runs}


def _summary(samples: list, arrivals: list, started: float, slowed: float,
             fast_again: float, ended: float, total: int) -> dict:
    """The in-flight samples per second, and what they say."""
    drained = None
    if len(arrivals) >= total:
        drained = max(a[0] for a in arrivals)
    end = min(ended, drained) if drained else ended
    seconds: dict[int, list] = {}
    for t, n, _ in samples:
        if started <= t < ended:
            seconds.setdefault(int(t - started), []).append(n)
    per_second = [round(statistics.mean(seconds[s]))
                  for s in sorted(seconds)]
    rates: dict[int, int] = {}
    for t, *_ in arrivals:
        if started <= t < ended:
            rates[int(t - started)] = rates.get(int(t - started), 0) + 1
    per_second_rate = [rates.get(s, 0) for s in sorted(seconds)]

    def window(a: float, b: float) -> list:
        return [n for t, n, _ in samples if a <= t < b]

    def level(a: float, b: float) -> Optional[int]:
        values = window(a, b)
        return round(statistics.median(values)) if values else None

    before = window(started, slowed)
    level_before = level(slowed - 2, slowed)
    during = [per_second[s] for s in sorted(seconds)
              if slowed - started <= s and s + 1 <= fast_again - started]
    recover = None
    for s in sorted(seconds):
        if s + started >= fast_again and level_before and \
                per_second[s] >= 0.9 * level_before:
            recover = round(s + 1 - (fast_again - started), 1)
            break
    s_slow = int(slowed - started)
    s_fast = int(fast_again - started)
    compact = "{} | 2 s from {} s: {} | 100 ms from {} s: {}".format(
        " ".join(map(str, per_second[:s_slow])), s_slow,
        " ".join(map(str, per_second[s_slow:s_fast])), s_fast,
        " ".join(map(str, per_second[s_fast:])))
    return {
        "peak_before": max(before) if before else None,
        "level_before": level_before,
        "min_during": min(during) if during else None,
        "level_end_slow": level(fast_again - 2, fast_again),
        "level_after": level(end - 3, end),
        "recover_seconds": recover,
        "drained_at_s": round(drained - started, 1) if drained else None,
        "rate_before": len([a for a in arrivals if started <= a[0] < slowed])
        / (slowed - started),
        "rate_slow": len([a for a in arrivals
                          if slowed + 2 <= a[0] < fast_again])
        / (fast_again - slowed - 2),
        "rate_after": len([a for a in arrivals
                           if fast_again + 2 <= a[0] < end])
        / max(0.001, end - fast_again - 2),
        "switch_s": [round(slowed - started, 1),
                     round(fast_again - started, 1)],
        "per_second": per_second, "per_second_rate": per_second_rate,
        "compact": compact,
    }


def run(app: Any, size: dict) -> dict:
    slow = benchlib.SlowReceiver(SLOW_MS).start()
    bench = OneHost(app, slow, datasets=10)
    try:
        plain, other = _hooks(bench)
        hung = _same_ids(_hooks(bench, HUNG_EVERY)[0], plain)
        bench.other_hook = other
        bench.plain = plain + [other]
        # the other dataset's hook on another host (127.0.0.2): a running
        # worker's delivery before a cold host's
        bench.plain_and_warmup = plain + [benchlib.hook_row(
            "dataset/update", "http://127.0.0.2:{}/warmup".format(
                slow.port), dataset=bench.other["id"])]
        bench.hung = hung + [other]
        bench.healthy_ids = [h["id"] for i, h in enumerate(plain)
                             if i % HUNG_EVERY != HUNG_EVERY - 1]
        results = {"layout": "one host and port, a path per hook",
                   "client_concurrency": CLIENT_CONCURRENCY}
        results["throughput"] = throughput(bench, size["onehost_reps"])
        results["hung"] = hung_paths(bench, size["onehost_hung_reps"])
        results["hung"]["hung_vs_healthy"] = (
            results["hung"]["healthy_seconds"]
            / results["throughput"]["healthy_seconds"])
        results["slowdown"] = slowdown(bench, size["onehost_slowdown"],
                                       size["onehost_slowdown_reps"])
    finally:
        bench.close()
        slow.stop()
    return results
