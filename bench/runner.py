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

import benchlib

SIZES = {
    # CI: about three minutes on the 2-core machine
    "smoke": {"overhead_rounds": 8, "overhead_per_round": 10,
              "matching_iterations": 30, "fanout_events": 3, "fanout_reps": 1,
              "latency_reps": 5, "memory_small": 1000,
              "memory_large": 10000},
    "full": {"overhead_rounds": 30, "overhead_per_round": 20,
             "matching_iterations": 200, "fanout_events": 10,
             "fanout_reps": 3, "latency_reps": 20, "memory_small": 10000,
             "memory_large": 100000},
}

TARGETS = {
    "overhead": 1.05, "matching": 2.0, "one_vs_bare": 1.0,
    "one_vs_bare_aim": 1.5, "two_vs_one": 1.6, "memory": 1.2,
}


def _verdict(ok: bool) -> str:
    return "met" if ok else "MISSED"


def table(results: dict, size: str) -> str:
    o = results["overhead"]
    m = results["matching"]
    f = results["fanout"]
    t, lat, mem = f["throughput"], f["latency"], f["memory"]
    small, large = m["sizes"]["1000"], m["sizes"]["100000"]
    rows = [
        ("1 request overhead",
         "package_update median, plugin on / off ({} hooks, {} matching; "
         "{} updates each)".format(o["hooks"], o["matching"],
                                   o["updates_per_side"]),
         "{:.1f} / {:.1f} ms".format(o["on_median_ms"], o["off_median_ms"]),
         "{:.3f}".format(o["ratio"]), "<= 1.05",
         _verdict(o["ratio"] <= TARGETS["overhead"])),
        ("2 matching",
         "create_messages median, 100,000 / 1,000 hooks ({} matching)".format(
             small["matched"][0]),
         "{:.2f} / {:.2f} ms".format(large["median_ms"], small["median_ms"]),
         "{:.2f}".format(m["ratio"]), "<= 2",
         _verdict(m["ratio"] <= TARGETS["matching"])),
        ("3a fan-out, 1 worker",
         "deliveries/s, 1 worker / bare requests loop ({:,} deliveries)"
         .format(t["deliveries"]),
         "{:.0f} / {:.0f} /s".format(t["one_worker"], t["bare_loop"]),
         "{:.2f}".format(t["one_vs_bare"]), ">= 1.0 (aim 1.5)",
         _verdict(t["one_vs_bare"] >= TARGETS["one_vs_bare"])
         + (" (aim met)" if t["one_vs_bare"] >= TARGETS["one_vs_bare_aim"]
            else "")),
        ("3b fan-out, 2 workers",
         "deliveries/s, 2 workers / 1 worker",
         "{:.0f} / {:.0f} /s".format(t["two_workers"], t["one_worker"]),
         "{:.2f}".format(t["two_vs_one"]), ">= 1.6",
         _verdict(t["two_vs_one"] >= TARGETS["two_vs_one"])),
        ("4 latency",
         "package_update returned -> last of 1,000 deliveries ({} runs)"
         .format(lat["repetitions"]),
         "p50 {:.0f} ms, p99 {:.0f} ms".format(lat["last_p50_ms"],
                                               lat["last_p99_ms"]),
         "first p50 {:.0f} ms".format(lat["first_p50_ms"]), "report",
         "reported"),
        ("5 memory",
         "worker VmRSS after {:,} / {:,} deliveries".format(
             mem["large"], mem["small"]),
         "{:,} / {:,} KiB".format(mem["rss_kib"][mem["large"]],
                                  mem["rss_kib"][mem["small"]]),
         "{:.3f}".format(mem["ratio"]), "<= 1.2",
         _verdict(mem["ratio"] <= TARGETS["memory"])),
    ]
    headers = ("benchmark", "what", "measured", "ratio", "target", "")
    widths = [max(len(str(r[i])) for r in rows + [headers])
              for i in range(len(headers))]
    line = "  ".join("-" * w for w in widths)
    out = [line, "  ".join(h.ljust(w) for h, w in zip(headers, widths)),
           line]
    out += ["  ".join(str(c).ljust(w) for c, w in zip(r, widths))
            for r in rows]
    out.append(line)
    return "\n".join(out)


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
                        "matching, throughput, latency, memory (fanout = the "
                        "last three); raw JSON, no table")
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
    only = set(args.only.split(",")) if args.only else None
    if only and "fanout" in only:
        only |= {"throughput", "latency", "memory"}
    results: dict = {"size": args.size, "machine": machine, "code": code}

    from request_overhead import run as run_overhead
    from matching import run as run_matching
    from fanout import run as run_fanout

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
    parts = [p for p in ("throughput", "latency", "memory")
             if only is None or p in only]
    if parts:
        benchlib.log("fan-out: " + ", ".join(parts))
        results["fanout"] = run_fanout(app, size, parts)
    results["seconds"] = round(time.monotonic() - started)

    if only is not None:
        print(json.dumps(results, indent=2, default=str))
        return

    text = header(args.size, machine, code) + table(results, args.size)
    text += "\n\ntook {} s\n".format(results["seconds"])
    details = _details(results)
    print(text)
    os.makedirs(os.path.join(benchlib.BENCH, "results"), exist_ok=True)
    stamp = datetime.date.today().isoformat()
    name = stamp if args.size == "full" else "{}-{}".format(stamp, args.size)
    path = os.path.join(benchlib.BENCH, "results", name + ".txt")
    with open(path, "w") as f:
        f.write(text + "\n" + details)
    benchlib.log("written to " + os.path.relpath(path, benchlib.ROOT))


def _commit(code: str) -> str:
    """`` (commit abc1234[, with uncommitted changes])`` for a git work tree."""
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
    """Every sample behind the table, and the matching query plans."""
    f = results["fanout"]
    lines = ["details", "-------",
             "request overhead: " + json.dumps(results["overhead"]),
             "fan-out throughput (per repetition, deliveries/s): "
             + json.dumps({k: [round(x) for x in v]
                           for k, v in f["throughput"]["all"].items()}),
             "latency to the last delivery (ms, each run): "
             + json.dumps(f["latency"]["last_all_ms"]),
             "worker VmRSS by deliveries (KiB): "
             + json.dumps(f["memory"]["rss_kib"]), ""]
    for size, r in results["matching"]["sizes"].items():
        lines.append("matching plan with {} hooks (median {:.2f} ms):".format(
            size, r["median_ms"]))
        lines += ["    " + p for p in r["plan"]]
        lines.append("")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
