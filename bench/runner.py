"""Run every benchmark, print the results table, write bench/results/.

Called by ``bench/run`` after it has prepared the database; see
docs/benchmarks.rst.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import signal
import time
from typing import Optional

import benchlib

SIZES = {
    # a smoke run: under two minutes on the 2-core machine
    "smoke": {"overhead_rounds": 2, "overhead_per_round": 10,
              "matching_iterations": 10, "fanout_events": 2,
              "fanout_reps": 1, "slow_reps": 1, "hung_reps": 1,
              "latency_reps": 2, "memory_small": 1000,
              "memory_large": 2000, "many_events": 20,
              # one host (issue 26): cold and warm reps, hung reps, and
              # the slowdown: seconds fast, slow, fast again; events
              "onehost_reps": 1, "onehost_hung_reps": 1,
              "onehost_slowdown_reps": 1, "onehost_slowdown": (3, 5, 5, 15)},
    "full": {"overhead_rounds": 30, "overhead_per_round": 20,
             "matching_iterations": 200, "fanout_events": 10,
             "fanout_reps": 3, "slow_reps": 5, "hung_reps": 3,
             "latency_reps": 20, "memory_small": 10000,
             "memory_large": 100000, "many_events": 300,
             "onehost_reps": 5, "onehost_hung_reps": 3,
             "onehost_slowdown_reps": 2, "onehost_slowdown": (6, 16, 16, 40)},
}

TARGETS = {
    "overhead": 1.05, "matching": 2.0, "nginx_one_vs_client": 0.7,
    "two_vs_one": 1.6, "memory": 1.2, "slow_one_vs_client": 0.8,
    "hung": 1.2, "many_owners": 0.5, "many_anonymous": 0.7, "live_ms": 1000,
    "onehost_vs_client": 0.8, "onehost_hung": 1.2, "onehost_other_ms": 1000,
}


def _verdict(ok: bool) -> str:
    return "met" if ok else "MISSED"


def table(results: dict, size: str) -> str:
    rows = []
    if "overhead" in results:
        o = results["overhead"]
        rows.append((
            "1 request overhead",
            "package_update median, plugin on / off ({} hooks, {} matching; "
            "{} updates each; Solr: {})".format(
                o["hooks"], o["matching"], o["updates_per_side"],
                o.get("solr", "none (stand-in)")),
            "{:.1f} / {:.1f} ms".format(o["on_median_ms"],
                                        o["off_median_ms"]),
            "{:.3f}".format(o["ratio"]), "<= 1.05",
            _verdict(o["ratio"] <= TARGETS["overhead"])))
    if "matching" in results:
        m = results["matching"]
        small, large = m["sizes"]["1000"], m["sizes"]["100000"]
        rows.append((
            "2 matching",
            "create_messages median, 100,000 / 1,000 hooks ({} matching)"
            .format(small["matched"][0]),
            "{:.2f} / {:.2f} ms".format(large["median_ms"],
                                        small["median_ms"]),
            "{:.2f}".format(m["ratio"]), "<= 2",
            _verdict(m["ratio"] <= TARGETS["matching"])))
    f = results.get("fanout", {})
    if "nginx" in f:
        t = f["nginx"]
        rows += [
            ("3a nginx, 1 worker",
             "deliveries/s, 1 worker / asyncio client, 200 in flight "
             "({:,} deliveries, 1,000 receivers)".format(t["deliveries"]),
             "{:.0f} / {:.0f} /s".format(t["one_worker"], t["client"]),
             "{:.2f}".format(t["one_vs_client"]), ">= 0.7",
             _verdict(t["one_vs_client"] >= TARGETS["nginx_one_vs_client"])),
            ("3b nginx, 2 workers", "deliveries/s, 2 workers / 1 worker",
             "{:.0f} / {:.0f} /s".format(t["two_workers"], t["one_worker"]),
             "{:.2f}".format(t["two_vs_one"]), ">= 1.6",
             _verdict(t["two_vs_one"] >= TARGETS["two_vs_one"])),
            ("3c nginx, the limit",
             "ApacheBench, same body size ({} B), 200 in flight, keep-alive;"
             " ratio: 1 worker / 2 workers / client to it".format(
                 t["ab_body_bytes"]),
             "{:.0f} /s".format(t["ab"]),
             "{:.2f} / {:.2f} / {:.2f}".format(
                 t["one_worker"] / t["ab"], t["two_workers"] / t["ab"],
                 t["client"] / t["ab"]), "report", "reported"),
        ]
    if "latency" in f:
        lat = f["latency"]
        rows.append((
            "4 latency",
            "package_update returned -> last of 1,000 deliveries ({} runs)"
            .format(lat["repetitions"]),
            "p50 {:.0f} ms, p99 {:.0f} ms".format(lat["last_p50_ms"],
                                                  lat["last_p99_ms"]),
            "first p50 {:.0f} ms".format(lat["first_p50_ms"]), "report",
            "reported"))
    if "memory" in f:
        mem = f["memory"]
        rows.append((
            "5 memory",
            "worker VmRSS after {:,} / {:,} deliveries".format(
                mem["large"], mem["small"]),
            "{:,} / {:,} KiB".format(mem["rss_kib"][mem["large"]],
                                     mem["rss_kib"][mem["small"]]),
            "{:.3f}".format(mem["ratio"]), "<= 1.2",
            _verdict(mem["ratio"] <= TARGETS["memory"])))
    if "slow" in f:
        s = f["slow"]
        rows += [
            ("6a 100 ms receivers",
             "deliveries/s, 1 worker / asyncio client, 200 in flight "
             "(1 event, 1,000 receivers)",
             "{:.0f} / {:.0f} /s".format(s["one_worker"], s["client"]),
             "{:.2f}".format(s["one_vs_client"]), ">= 0.8",
             _verdict(s["one_vs_client"] >= TARGETS["slow_one_vs_client"])),
            ("6b 5% hung",
             "seconds to the 950 healthy deliveries, {} hung / none".format(
                 s["hung"]),
             "{:.3f} / {:.3f} s".format(s["hung_healthy_seconds"],
                                        s["healthy_seconds"]),
             "{:.2f}".format(s["hung_vs_healthy"]), "<= 1.2",
             _verdict(s["hung_vs_healthy"] <= TARGETS["hung"])),
        ]
    if "many" in f:
        n = f["many"]
        e = n["events"]
        for key, label, target in (("owners", "5 owners", "many_owners"),
                                   ("anonymous", "anonymous",
                                    "many_anonymous")):
            r = n[key]
            rows.append((
                "7{} backlog, {}".format("a" if key == "owners" else "b",
                                         label),
                "deliveries/s, {} events x 10 hooks / 1 event x {:,} hooks"
                .format(e, 10 * e),
                "{:.0f} / {:.0f} /s".format(r["many_events"]["rate"],
                                            r["one_event"]["rate"]),
                "{:.2f}".format(r["ratio"]), ">= {}".format(TARGETS[target]),
                _verdict(r["ratio"] >= TARGETS[target])))
        live = n["live"]
        rows.append((
            "7c live", "{} updates x 10 hooks ({:.0f} updates/s): last "
            "delivery after the last update".format(
                live["events"], live["updates_per_second"] or 0),
            "{:.0f} ms".format(live["lag_ms"]), "", "<= 1000 ms",
            _verdict(live["lag_ms"] <= TARGETS["live_ms"])))
        rows.append((
            "7d cost per event",
            "worker CPU ms and SQL statements per event: backlog 5 owners /"
            " anonymous / live",
            " / ".join("{:.1f} ms, {:.1f}".format(
                x["cpu_ms_per_event"], x["statements_per_event"])
                for x in (n["owners"]["many_events"],
                          n["anonymous"]["many_events"], live)),
            "", "report", "reported"))
    if "onehost" in f:
        rows += _onehost_rows(f["onehost"])
    headers = ("benchmark", "what", "measured", "ratio", "target", "")
    widths = [max(len(str(r[i])) for r in rows + [headers])
              for i in range(len(headers))]
    line = "  ".join("-" * w for w in widths)
    out = [line, "  ".join(h.ljust(w) for h, w in
                           zip(headers, widths, strict=True)),
           line]
    out += ["  ".join(str(c).ljust(w) for c, w in
                      zip(r, widths, strict=True)).rstrip()
            for r in rows]
    out.append(line)
    return "\n".join(out)


def _onehost_rows(o: dict) -> list[tuple]:
    """Issue 26: every hook on one host and port, a path each."""
    t, h, sd = o["throughput"], o["hung"], o["slowdown"]
    m = benchlib.median
    runs = sd["runs"]

    def med(key: str) -> Optional[float]:
        values = [r[key] for r in runs if r[key] is not None]
        return m(values) if values else None

    before, after = med("level_before"), med("level_after")
    end_slow, least = med("level_end_slow"), med("min_during")
    recover = med("recover_seconds")
    # the bound came down (at most half the level before by the end of
    # the slow phase) and recovered (at least 0.9 of it after)
    down = bool(before and end_slow is not None and end_slow <= before / 2)
    back = bool(before and after is not None and after >= 0.9 * before)
    fmt = lambda x: "-" if x is None else "{:.0f}".format(x)  # noqa: E731
    return [
        ("8a one host, cold",
         "deliveries/s, a running worker's first event to the host / asyncio"
         " client, 200 in flight (1 event, 1,000 hooks on one host and port,"
         " a path each, {} ms; a fresh worker process: {:.0f} /s, {:.2f})"
         .format(t["delay_ms"], t["fresh"], t["fresh_vs_client"]),
         "{:.0f} / {:.0f} /s".format(t["cold"], t["client"]),
         "{:.2f}".format(t["cold_vs_client"]), ">= 0.8",
         _verdict(t["cold_vs_client"] >= TARGETS["onehost_vs_client"])),
        ("8b one host, warm",
         "deliveries/s, the same worker's next event to the host / asyncio "
         "client",
         "{:.0f} / {:.0f} /s".format(t["warm"], t["client"]),
         "{:.2f}".format(t["warm_vs_client"]), ">= 0.8",
         _verdict(t["warm_vs_client"] >= TARGETS["onehost_vs_client"])),
        ("8c one host, the limit",
         "ApacheBench at one path of the host, same body size ({} B), 200 "
         "in flight, keep-alive; ratio: cold / warm / client to it".format(
             t["ab_body_bytes"]),
         "{:.0f} /s".format(t["ab"]),
         "{:.2f} / {:.2f} / {:.2f}".format(
             t["cold"] / t["ab"], t["warm"] / t["ab"], t["client"] / t["ab"]),
         "report", "reported"),
        ("8d one host, 5% hung",
         "seconds to the 950 healthy deliveries, {} hung paths / none (cold;"
         " ab: 950 posts at its rate)".format(h["hung"]),
         "{:.3f} / {:.3f} s (ab {:.3f} s)".format(
             h["healthy_seconds"], t["healthy_seconds"],
             (t["deliveries"] - h["hung"]) / t["ab"]),
         "{:.2f}".format(h["hung_vs_healthy"]), "<= 1.2",
         _verdict(h["hung_vs_healthy"] <= TARGETS["onehost_hung"])),
        ("8e one host, other hook",
         "another dataset's hook on the host, updated {:.0f} s after the "
         "first change: its delivery after its change (ratio: to ab -c 1, "
         "{:.0f} ms a post)".format(h["other_after_s"], t["ab_latency_ms"]),
         "{:.0f} ms".format(h["other_delay_ms"]),
         "{:.1f}".format(h["other_delay_ms"] / t["ab_latency_ms"]),
         "<= 1000 ms",
         _verdict(h["other_delay_ms"] <= TARGETS["onehost_other_ms"])),
        ("8f one host slows to 2 s",
         "requests in flight at the receiver (median of {} runs): level "
         "before / least during / end of slow / after; seconds to 0.9 of "
         "before (ab -c 200 keeps 200)".format(len(runs)),
         "{} / {} / {} / {}; {} s".format(
             fmt(before), fmt(least), fmt(end_slow), fmt(after),
             "-" if recover is None else "{:.1f}".format(recover)),
         "", "down, back",
         "{}, {}".format("down" if down else "NOT DOWN",
                         "back" if back else "NOT BACK")),
    ]


def header(size: str, machine: dict, code: str) -> str:
    return "\n".join([
        "ckanext-webhooks benchmarks, size {}, {}".format(
            size, datetime.datetime.now().strftime("%Y-%m-%d %H:%M")),
        "machine: {cores} cores ({cpu}), {memory} memory; PostgreSQL "
        "{postgresql}, Redis {redis}, nginx {nginx}; Python {python}, "
        "CKAN {ckan}".format(**machine),
        "code measured: " + code,
        "The load generator (this process), nginx, PostgreSQL, Redis and "
        "the worker(s) share these {} cores; ratios are taken within this "
        "one run.".format(machine["cores"]),
        "",
    ])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--size", choices=sorted(SIZES), default="smoke")
    parser.add_argument("--only", help="comma separated: overhead, "
                        "matching, nginx, slow, latency, memory, many, "
                        "onehost (fanout = the last six); the table of "
                        "those")
    args = parser.parse_args()
    size = SIZES[args.size]
    # SIGTERM (CI's timeout, kill) unwinds like Ctrl-C: workers and nginx
    # are stopped by the finally blocks
    signal.signal(signal.SIGTERM, _terminate)
    leftover = benchlib.live_workers()
    if leftover:
        raise SystemExit("bench: webhooks workers of an earlier run are still "
                         "running (pids {}); stop them first".format(
                             " ".join(map(str, leftover))))
    started = time.monotonic()

    import ckanext.webhooks
    code = os.path.dirname(os.path.dirname(os.path.dirname(
        os.path.abspath(ckanext.webhooks.__file__))))
    code += _commit(code)
    machine = benchlib.machine()
    from fanout import PARTS, run as run_fanout
    only = set(args.only.split(",")) if args.only else None
    if only and "fanout" in only:
        only |= set(PARTS)
    results: dict = {"size": args.size, "machine": machine, "code": code}

    from request_overhead import run as run_overhead
    from matching import run as run_matching

    if only is None or "overhead" in only:
        benchlib.log("request overhead")
        results["overhead"] = run_overhead(size["overhead_rounds"],
                                           size["overhead_per_round"])
        benchlib.log("  ratio {:.3f}".format(results["overhead"]["ratio"]))
    app = benchlib.make_app(webhooks_on=True)
    if only is None or "matching" in only:
        benchlib.log("matching")
        results["matching"] = run_matching(
            app, size["matching_iterations"])
        benchlib.log("  ratio {:.2f}".format(results["matching"]["ratio"]))
    parts = [p for p in PARTS if only is None or p in only]
    if parts:
        results["fanout"] = run_fanout(app, size, parts)
    results["seconds"] = round(time.monotonic() - started)

    text = header(args.size, machine, code) + table(results, args.size)
    text += "\n\ntook {} s\n".format(results["seconds"])
    details = _details(results)
    print(text)
    os.makedirs(os.path.join(benchlib.BENCH, "results"), exist_ok=True)
    stamp = datetime.date.today().isoformat()
    name = stamp if args.size == "full" else "{}-{}".format(stamp, args.size)
    if only is not None:
        name += "-only-" + "-".join(sorted(only))
    path = os.path.join(benchlib.BENCH, "results", name + ".txt")
    with open(path, "w") as f:
        f.write(text + "\n" + details)
    benchlib.log("written to " + os.path.relpath(path, benchlib.ROOT))


def _commit(code: str) -> str:
    """`` (commit abc1234[, with uncommitted changes])`` for a git work
    tree."""
    import subprocess
    run = lambda *a: subprocess.run(  # noqa: E731
        ["git", "-C", code, *a], capture_output=True, text=True)
    head = run("rev-parse", "--short", "HEAD")
    if head.returncode != 0:
        return ""
    dirty = run("status", "--porcelain", "--", "ckanext").stdout.strip()
    return " (commit {}{})".format(
        head.stdout.strip(), ", with uncommitted changes" if dirty else "")


def _terminate(signum, frame):
    raise KeyboardInterrupt("SIGTERM")


def _details(results: dict) -> str:
    """Every sample behind the table (JSON), and the matching query plans."""
    lines = ["details", "-------"]
    for key in ("overhead", "fanout"):
        if key in results:
            lines.append("{}: {}".format(key, json.dumps(
                results[key], default=str)))
    lines.append("")
    for size, r in results.get("matching", {}).get("sizes", {}).items():
        lines.append("matching plan with {} hooks (median {:.2f} ms):".format(
            size, r["median_ms"]))
        lines += ["    " + p for p in r["plan"]]
        lines.append("")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
