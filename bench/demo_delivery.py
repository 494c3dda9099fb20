"""The demo's time to its first verified delivery, as a new user meets it.

Runs ``make demo`` (its own Solr included, or DEMO_SOLR as set) on free
ports in a temporary directory, runs ``.demo/try.py`` as soon as the demo
says it is up, and reports the seconds from ``make demo`` to: the demo up,
try.py done (the hook verified and the dataset created), the receiver's
VERIFIED line for the dataset's ``dataset/create`` delivery. Then it stops
the demo with a TERM, as Ctrl-C would.

    .venv/bin/python bench/demo_delivery.py [RUNS]

The venv and Solr should be installed already (``make demo`` once): the
figure is a warm start, not the first one. The demo's database and Redis
db are ckan_demo and 2, the demo's own, unless DEMO_DATABASE_URL and
DEMO_REDIS_URL say otherwise.
"""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_for(predicate, timeout: float, what: str) -> float:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise SystemExit("timed out waiting for " + what)
        time.sleep(0.05)
    return time.monotonic()


def one_run() -> dict:
    with tempfile.TemporaryDirectory(prefix="webhooks-demo-bench-") as tmp:
        demo_dir = Path(tmp) / "demo"
        log_path = Path(tmp) / "make-demo.log"
        env = dict(os.environ, DEMO_DIR=str(demo_dir),
                   DEMO_PORT=str(_free_port()),
                   DEMO_RECEIVER_PORT=str(_free_port()),
                   DEMO_SOLR_PORT=str(_free_port()))
        env.pop("MAKEFLAGS", None)
        started = time.monotonic()
        make = subprocess.Popen(
            ["make", "--no-print-directory", "demo"], cwd=ROOT, env=env,
            stdin=subprocess.DEVNULL, stdout=open(log_path, "w"),
            stderr=subprocess.STDOUT, start_new_session=True)
        try:
            up = _wait_for(lambda: "receiver output (deliveries)"
                           in log_path.read_text(), 300, "the demo")
            tried = subprocess.run(
                [sys.executable, str(demo_dir / "try.py")],
                capture_output=True, text=True, timeout=120)
            if tried.returncode:
                raise SystemExit(tried.stdout + tried.stderr)
            try_done = time.monotonic()
            receiver_log = demo_dir / "receiver.log"
            verified = _wait_for(lambda: any(
                "VERIFIED" in line and "dataset/create" in line
                for line in receiver_log.read_text().splitlines()),
                60, "the dataset's verified delivery")
        finally:
            os.killpg(make.pid, signal.SIGTERM)
            make.wait(60)
        return {"up_s": round(up - started, 1),
                "try_py_done_s": round(try_done - started, 1),
                "first_verified_delivery_s": round(verified - started, 1),
                "after_try_py_s": round(verified - try_done, 2),
                "solr": env.get("DEMO_SOLR", "local")}


if __name__ == "__main__":
    for _ in range(int(sys.argv[1]) if len(sys.argv) > 1 else 1):
        print(json.dumps(one_run()), flush=True)
