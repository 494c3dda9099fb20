"""``ckan`` with a statement counter: how the benchmarks start workers.

    python bench/probe.py COUNTS_FILE -c INI webhooks worker

Runs the ``ckan`` command as is, and every 0.2 s writes to COUNTS_FILE how
many SQL statements this process has sent so far (SQLAlchemy's
``before_cursor_execute``, on every engine). The worker's payload helpers
(spawned: they import this module again as ``__mp_main__``) write theirs to
COUNTS_FILE.PID. CPU time comes from /proc/PID/stat, read by the benchmark.
"""
import os
import sys
import threading
import time

import sqlalchemy as sa
from sqlalchemy.engine import Engine

_count = [0]


@sa.event.listens_for(Engine, "before_cursor_execute")
def _counted(conn, cursor, statement, parameters, context, many):
    _count[0] += 1


def _write(path: str) -> None:
    while True:
        with open(path + ".tmp", "w") as f:
            f.write(str(_count[0]))
        os.replace(path + ".tmp", path)
        time.sleep(0.2)


if __name__ == "__mp_main__" and os.environ.get("WEBHOOKS_BENCH_COUNTS"):
    # a payload helper of the worker
    threading.Thread(target=_write, args=("{}.{}".format(
        os.environ["WEBHOOKS_BENCH_COUNTS"], os.getpid()),),
        daemon=True).start()

if __name__ == "__main__":
    path = sys.argv.pop(1)
    os.environ["WEBHOOKS_BENCH_COUNTS"] = path
    threading.Thread(target=_write, args=(path,), daemon=True).start()
    sys.argv[0] = "ckan"
    from ckan.cli.cli import ckan
    sys.exit(ckan())
