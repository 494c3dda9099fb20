"""Benchmark 1: what the plugin adds to a ``package_update`` request.

Two CKAN processes run side by side, one with ``webhooks`` in ckan.plugins and
one without, both indexing each update into the same real Solr (bench/run
starts it; WEBHOOKS_BENCH_SOLR=none gives both the no-Solr stand-in instead,
as before the benchmarks had a Solr). The parent lets them take turns,
a round of updates each, so both see the same machine state, and compares the
medians. With the plugin on, 10,000 hooks are registered and 1,000 of them
match the updated dataset; no worker runs, so the request pays only for
recording the event (one INSERT that also notifies the workers' dispatcher),
as it would in production.

Run as ``python bench/request_overhead.py --child on|off`` it is one of those
processes: it reads ``run N`` lines and answers ``RESULT [seconds, ...]``.
"""
from __future__ import annotations

import json
import subprocess
import sys
import time

import benchlib


def child(mode: str) -> None:
    webhooks_on = mode == "on"
    app = benchlib.make_app(webhooks_on=webhooks_on)
    import ckan.plugins as plugins
    import ckan.plugins.toolkit as tk
    assert plugins.plugin_loaded("webhooks") == webhooks_on
    with benchlib.request_context(app):
        name = "bench-overhead-" + mode
        benchlib.ensure_datasets([name], "bench-org", "bench-group")
        context = benchlib.sysadmin_context
        pkg = tk.get_action("package_show")(context(), {"id": name})
        update = tk.get_action("package_update")
        counter = [0]
        # package_update without a change records no event
        token = benchlib.new_id()

        def one() -> float:
            counter[0] += 1
            pkg["notes"] = "update {} of the {} side ({})".format(
                counter[0], mode, token)
            started = time.perf_counter()
            update(context(), dict(pkg))
            return time.perf_counter() - started

        for _ in range(20):
            one()
        print("READY " + json.dumps({"dataset_id": pkg["id"],
                                     "organization_id": pkg["owner_org"]}),
              flush=True)
        for line in sys.stdin:
            parts = line.split()
            if not parts or parts[0] != "run":
                break
            times = [one() for _ in range(int(parts[1]))]
            print("RESULT " + json.dumps(times), flush=True)


class _Side:
    def __init__(self, mode: str):
        self.mode = mode
        self.proc = subprocess.Popen(
            [benchlib.PYTHON, __file__, "--child", mode],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            stderr=open("/tmp/webhooks-bench-overhead-{}.log".format(mode),
                        "w"),
            text=True, bufsize=1)
        self.info = json.loads(self._answer("READY"))

    def _answer(self, tag: str) -> str:
        while True:
            line = self.proc.stdout.readline()
            if not line:
                raise SystemExit("the {} side died: see /tmp/webhooks-bench-"
                                 "overhead-{}.log".format(self.mode,
                                                          self.mode))
            if line.startswith(tag + " "):
                return line[len(tag) + 1:]

    def run(self, count: int) -> list[float]:
        self.proc.stdin.write("run {}\n".format(count))
        self.proc.stdin.flush()
        return json.loads(self._answer("RESULT"))

    def stop(self) -> None:
        try:
            self.proc.stdin.write("stop\n")
            self.proc.stdin.close()
            self.proc.wait(30)
        except Exception:
            self.proc.kill()
            self.proc.wait(5)


def _hooks(dataset_id: str, organization_id: str, address: str) -> list[dict]:
    """10,000 hooks, 1,000 of which match an update of ``dataset_id``."""
    row = benchlib.hook_row
    matching = []
    for i in range(1000):
        if i < 400:
            matching.append(row("dataset/update" if i % 2 else "dataset/*",
                                address))
        elif i < 800:
            matching.append(row("dataset/update", address,
                                dataset=dataset_id))
        else:
            matching.append(row("dataset/*", address,
                                organization=organization_id))
    return matching + benchlib.filler_hooks(9000, address)


def run(rounds: int, per_round: int) -> dict:
    conn = benchlib.connect()
    benchlib.reset_webhooks(conn)
    on = _Side("on")
    off = _Side("off")
    try:
        benchlib.insert_hooks(conn, _hooks(
            on.info["dataset_id"], on.info["organization_id"],
            "http://127.0.0.1:9/unused"))
        with conn.cursor() as cur:
            cur.execute("SELECT count(*) FROM webhooks_hook")
            hooks = cur.fetchone()[0]
        # one discarded round each with the hooks in place
        on.run(per_round)
        off.run(per_round)
        times = {"on": [], "off": []}
        for i in range(rounds):
            # alternate who goes first, so neither always follows the other
            order = (on, off) if i % 2 == 0 else (off, on)
            for side in order:
                times[side.mode].extend(side.run(per_round))
        with conn.cursor() as cur:
            cur.execute("SELECT count(*) FROM webhooks_event")
            events = cur.fetchone()[0]
    finally:
        on.stop()
        off.stop()
        benchlib.reset_webhooks(conn)
        conn.close()
    on_median = benchlib.median(times["on"])
    off_median = benchlib.median(times["off"])
    return {
        "solr": "none (stand-in)" if benchlib.NO_SOLR else "real",
        "hooks": hooks, "matching": 1000, "updates_per_side": len(times["on"]),
        "events_recorded": events,
        "on_median_ms": on_median * 1000, "off_median_ms": off_median * 1000,
        "on_p90_ms": benchlib.percentile(times["on"], 90) * 1000,
        "off_p90_ms": benchlib.percentile(times["off"], 90) * 1000,
        "ratio": on_median / off_median,
    }


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--child":
        child(sys.argv[2])
    else:
        print(json.dumps(run(int(sys.argv[1]) if len(sys.argv) > 1 else 5,
                             int(sys.argv[2]) if len(sys.argv) > 2 else 10),
                         indent=2))
