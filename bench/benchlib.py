"""What every benchmark shares: paths, CKAN in-process, bulk hooks, nginx.

The benchmarks talk to their own database (ckan_bench) and Redis db (9), both
named in bench/bench.ini (or in the config that WEBHOOKS_BENCH_INI names), and
reset the webhooks tables between benchmarks. CKAN indexes into the Solr that
bench/run starts (CKAN_SOLR_URL); with WEBHOOKS_BENCH_SOLR=none the stand-in
plugin webhooks_demo_nosolr is added on every side instead.
"""
from __future__ import annotations

import glob
import io
import json
import os
import re
import secrets
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from typing import Any, Iterable, Optional

BENCH = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(BENCH)
INI = os.path.abspath(os.environ.get("WEBHOOKS_BENCH_INI")
                      or os.path.join(BENCH, "bench.ini"))
VENV_BIN = os.path.join(ROOT, ".venv", "bin")
PYTHON = os.path.join(VENV_BIN, "python")
CKAN = os.path.join(VENV_BIN, "ckan")



def _from_ini(key: str) -> str:
    import configparser
    parser = configparser.ConfigParser(interpolation=None)
    parser.read(INI)
    return parser.get("app:main", key)


DSN = dict(host="127.0.0.1", user="ckan_default", password="pass",
           dbname=_from_ini("sqlalchemy.url").rsplit("/", 1)[1])
REDIS_URL = _from_ini("ckan.redis.url")
# "none": no Solr, the stand-in plugin on every side (today's figures before
# the benchmarks had a Solr)
NO_SOLR = os.environ.get("WEBHOOKS_BENCH_SOLR") == "none"


def log(*parts: Any) -> None:
    print("[bench {}]".format(time.strftime("%H:%M:%S")), *parts,
          file=sys.stderr, flush=True)


# --- statistics --------------------------------------------------------------

def percentile(values: list[float], q: float) -> float:
    """Linear interpolation between closest ranks (numpy's default)."""
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    pos = (len(ordered) - 1) * q / 100.0
    low = int(pos)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (pos - low)


def median(values: list[float]) -> float:
    return statistics.median(values)


# --- CKAN in-process ---------------------------------------------------------

def plugin_list(webhooks_on: bool) -> str:
    from ckan.cli import load_config
    plugins = load_config(INI)["ckan.plugins"].split()
    if not webhooks_on:
        plugins = [p for p in plugins if p != "webhooks"]
    if NO_SOLR:
        plugins.append("webhooks_demo_nosolr")
    return " ".join(plugins)


def make_app(webhooks_on: bool = True):
    """CKAN's WSGI app from bench.ini, with or without the webhooks plugin."""
    from ckan.cli import load_config
    from ckan.config.middleware import make_app as ckan_make_app
    conf = load_config(INI)
    conf["ckan.plugins"] = plugin_list(webhooks_on)
    return ckan_make_app(conf)


def request_context(app):
    """A Flask request context of CKAN's app, as actions expect."""
    flask_app = getattr(app, "_wsgi_app", app)
    return flask_app.test_request_context()


def sysadmin_context() -> dict[str, Any]:
    import ckan.plugins.toolkit as tk
    site_user = tk.get_action("get_site_user")({"ignore_auth": True}, {})
    return {"user": site_user["name"], "ignore_auth": False}


def ensure_datasets(names: Iterable[str], org_name: str,
                    group_name: Optional[str] = None) -> dict[str, dict]:
    """Create (once) an organization, a group and datasets with resources."""
    import ckan.plugins.toolkit as tk
    context = sysadmin_context
    # made directly in the model, as when there was no Solr here
    # (organization_create and group_create call package_search)
    org = _group(org_name, is_organization=True)
    group = _group(group_name, is_organization=False) if group_name else None
    datasets = {}
    for name in names:
        try:
            pkg = tk.get_action("package_show")(context(), {"id": name})
        except tk.ObjectNotFound:
            pkg = tk.get_action("package_create")(context(), {
                "name": name, "title": "Benchmark " + name,
                "owner_org": org["id"], "notes": "created by bench/run",
                "tags": [{"name": "bench"}, {"name": "webhooks"}],
                "extras": [{"key": "source", "value": "bench"}],
                "groups": [{"id": group["id"]}] if group else [],
                "resources": [
                    {"url": "http://example.com/data.csv", "name": "data",
                     "format": "CSV"},
                    {"url": "http://example.com/api", "name": "api",
                     "format": "JSON"},
                ]})
        datasets[name] = pkg
    return datasets


def _group(name: str, is_organization: bool) -> dict:
    import ckan.model as model
    group = model.Group.get(name)
    if group is None:
        group = model.Group(
            name=name, title=name,
            type="organization" if is_organization else "group",
            is_organization=is_organization)
        model.Session.add(group)
        model.Session.commit()
    return {"id": group.id, "name": group.name}


# --- the database ------------------------------------------------------------

def connect():
    import psycopg2
    conn = psycopg2.connect(**DSN)
    conn.autocommit = True
    return conn


def reset_webhooks(conn) -> None:
    """Forget every hook, event and delivery, and every queued job."""
    with conn.cursor() as cur:
        # CASCADE: and whatever else refers to the hooks (their retired
        # signing secrets, webhooks_secret)
        cur.execute("TRUNCATE webhooks_attempt, webhooks_delivery, "
                    "webhooks_event, webhooks_hook CASCADE")
    flush_redis()


def flush_redis() -> None:
    import redis
    redis.Redis.from_url(REDIS_URL).flushdb()


def new_secret() -> str:
    import base64
    return "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()


_HOOK_COLUMNS = ("id", "topics", "address", "normalized_address",
                 "owner_id", "secret", "status",
                 "filter_dataset", "filter_organization", "filter_group",
                 "filter_resource", "created", "client_errors")


def hook_row(topic: str, address: str, **filters: Optional[str]) -> dict:
    """A hook on one topic (``topics`` as a PostgreSQL array literal)."""
    from ckanext.webhooks import addresses
    return {"id": secrets.token_urlsafe(32), "topics": "{%s}" % topic,
            "address": address,
            "normalized_address": addresses.normalized(address),
            "owner_id": filters.pop("owner_id", None), "secret": new_secret(),
            "status": filters.pop("status", "active"),
            "filter_dataset": filters.get("dataset"),
            "filter_organization": filters.get("organization"),
            "filter_group": filters.get("group"),
            "filter_resource": filters.get("resource"),
            "created": "2026-01-01 00:00:00", "client_errors": 0}


def insert_hooks(conn, rows: list[dict]) -> None:
    """Bulk insert with COPY (the action has a rate limit and an address
    cap)."""
    buf = io.StringIO()
    for row in rows:
        buf.write("\t".join(
            "\\N" if row[c] is None else str(row[c]) for c in _HOOK_COLUMNS))
        buf.write("\n")
    buf.seek(0)
    with conn.cursor() as cur:
        cur.copy_from(buf, "webhooks_hook", columns=_HOOK_COLUMNS)
        cur.execute("ANALYZE webhooks_hook")


def filler_hooks(count: int, address: str) -> list[dict]:
    """Hooks that match nothing the benchmarks do: filtered elsewhere, or
    other topics. The mix is the one described in docs/benchmarks.rst."""
    rows = []
    other_datasets = max(1, count // 10)
    other_orgs = max(1, count // 100)
    other_groups = max(1, count // 200)
    for i in range(count):
        share = i % 20
        if share < 12:      # 60%: another dataset
            rows.append(hook_row(
                "dataset/*" if i % 2 else "dataset/update", address,
                dataset="ds-%d" % (i % other_datasets)))
        elif share < 15:    # 15%: another organization
            rows.append(hook_row("dataset/update", address,
                                 organization="org-%d" % (i % other_orgs)))
        elif share < 16:    # 5%: another group
            rows.append(hook_row("dataset/*", address,
                                 group="group-%d" % (i % other_groups)))
        elif share < 18:    # 10%: a resource of another dataset
            rows.append(hook_row("resource/*", address,
                                 resource="res-%d" % i))
        else:               # 10%: no filter, another topic
            rows.append(hook_row(
                ("dataset/create", "dataset/delete", "resource/create",
                 "resource/update", "resource/*")[i % 5], address))
    return rows


# --- nginx, the fast receiver ------------------------------------------------

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


_NGINX_CONF = """\
daemon off;
master_process on;
worker_processes 1;
worker_rlimit_nofile 16384;
pid {dir}/nginx.pid;
error_log {dir}/error.log warn;
events {{ worker_connections 4096; }}
http {{
    client_body_temp_path {dir}/body;
    proxy_temp_path {dir}/proxy;
    fastcgi_temp_path {dir}/fastcgi;
    uwsgi_temp_path {dir}/uwsgi;
    scgi_temp_path {dir}/scgi;
    client_max_body_size 1m;
    client_body_buffer_size 256k;
    keepalive_requests 1000000;
    keepalive_timeout 300s;
    log_format arrivals '$msec $http_webhook_id $status';
    access_log {dir}/access.log arrivals;
    server {{
        # every 127.x.y.z reaches it: one receiver (host) per hook
        listen 0.0.0.0:{port} backlog=4096;
        location / {{ return 204; }}
    }}
}}
"""


class Nginx:
    """nginx from Debian answering 204 to anything, logging arrival times."""

    def __init__(self):
        self.dir = tempfile.mkdtemp(prefix="webhooks-bench-nginx-")
        os.chmod(self.dir, 0o755)
        self.port = free_port()
        self.access_log = os.path.join(self.dir, "access.log")
        self.proc: Optional[subprocess.Popen] = None
        self._offset = 0

    @property
    def url(self) -> str:
        return "http://127.0.0.1:{}".format(self.port)

    def start(self) -> "Nginx":
        nginx = shutil.which("nginx") or "/usr/sbin/nginx"
        if not os.path.exists(nginx):
            raise SystemExit("nginx is not installed: apt-get install -y "
                             "nginx-light")
        conf = os.path.join(self.dir, "nginx.conf")
        with open(conf, "w") as f:
            f.write(_NGINX_CONF.format(dir=self.dir, port=self.port))
        open(self.access_log, "w").close()
        self.proc = subprocess.Popen(
            [nginx, "-c", conf, "-p", self.dir, "-e",
             os.path.join(self.dir, "error.log")],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
            stderr=open(os.path.join(self.dir, "stderr.log"), "w"))
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise SystemExit("nginx did not start: see " + self.dir)
            try:
                socket.create_connection(("127.0.0.1", self.port), 0.2).close()
                return self
            except OSError:
                time.sleep(0.05)
        raise SystemExit("nginx did not listen within 10s: see " + self.dir)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.proc = None
        shutil.rmtree(self.dir, ignore_errors=True)

    def mark(self) -> None:
        """Arrivals from now on are the ones ``wait_for`` counts."""
        self._offset = os.path.getsize(self.access_log)

    def arrivals(self) -> list[tuple[float, str, str]]:
        return self._read_from(self._offset)[0]

    def _read_from(self, offset: int) -> tuple[list, int]:
        """The whole lines logged after ``offset``, and where they end."""
        with open(self.access_log, "rb") as f:
            f.seek(offset)
            data = f.read()
        data = data[:data.rfind(b"\n") + 1]
        out = []
        for line in data.decode().splitlines():
            msec, message_id, status = line.split(" ")
            out.append((float(msec), message_id, status))
        return out, offset + len(data)

    def wait_for(self, count: int, timeout: float) -> list[tuple]:
        """The arrivals since ``mark`` once there are ``count``, or a
        timeout error naming how many came.

        Reads only what is new, every 50 ms: the arrival times come from
        nginx ($msec), so polling costs the measured processes little CPU
        and does not change the times.
        """
        deadline = time.monotonic() + timeout
        got: list[tuple] = []
        offset = self._offset
        while time.monotonic() < deadline:
            new, offset = self._read_from(offset)
            got.extend(new)
            if len(got) >= count:
                return got
            time.sleep(0.05)
        raise TimeoutError("{} of {} deliveries arrived within {}s".format(
            len(got), count, timeout))


def receiver_host(i: int) -> str:
    """The ``i``-th of many loopback hosts (127.0.1.1, 127.0.1.2, ...): a
    receiver of its own for ``max_per_host``, one listener behind them all."""
    return "127.0.{}.{}".format(1 + i // 250, 1 + i % 250)


def one_host_address(port: int, i: int, hung: bool = False) -> str:
    """The ``i``-th hook's address when all hooks share one host and port
    (127.0.0.1:``port``), each with a path of its own; ``hung``: a path
    that bench/receiver.py reads and never answers."""
    return "http://127.0.0.1:{}/{}/{}".format(
        port, "hang" if hung else "hook", i)


class SlowReceiver:
    """bench/receiver.py: answers after ``delay_ms`` on one port, never on
    another (hung) nor on paths under /hang/; every 127.x.y.z reaches both.
    Same interface as Nginx, and the answer delay can change at run time."""

    def __init__(self, delay_ms: int):
        self.delay_ms = delay_ms
        self.port = free_port()
        self.hung_port = free_port()
        self.proc: Optional[subprocess.Popen] = None

    @property
    def url(self) -> str:
        return "http://127.0.0.1:{}".format(self.port)

    def start(self) -> "SlowReceiver":
        self.proc = subprocess.Popen(
            [PYTHON, os.path.join(BENCH, "receiver.py"), str(self.port),
             str(self.hung_port), str(self.delay_ms)],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, text=True)
        if self.proc.stdout.readline().strip() != "READY":
            raise SystemExit("bench/receiver.py did not start")
        return self

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)
        self.proc = None

    def _get(self, path: str) -> str:
        import urllib.request
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        with opener.open(self.url + path, timeout=30) as response:
            return response.read().decode()

    def mark(self) -> None:
        """Arrivals and in-flight samples from now on."""
        self._get("/_mark")

    def delay(self, ms: int) -> None:
        """POSTs arriving from now on are answered after ``ms``."""
        self._get("/_delay?ms={:d}".format(ms))

    def in_flight(self) -> list[tuple[float, int, int]]:
        """Samples since the mark, every 100 ms: (unix time, POSTs in
        flight, of them on hung paths)."""
        return [tuple(s) for s in json.loads(self._get("/_inflight"))]

    def arrivals(self) -> list[tuple[float, str, str]]:
        return [(t, i, "204") for t, i in json.loads(self._get("/_arrivals"))]

    def wait_for(self, count: int, timeout: float) -> list[tuple]:
        deadline = time.monotonic() + timeout
        got = 0
        while time.monotonic() < deadline:
            got = int(self._get("/_count"))
            if got >= count:
                return self.arrivals()
            time.sleep(0.05)
        raise TimeoutError("{} of {} deliveries arrived within {}s".format(
            got, count, timeout))


# --- the worker process ------------------------------------------------------

class Worker:
    """A real ``ckan webhooks worker`` process on bench.ini."""

    def __init__(self, name: str, logdir: str, prefix: tuple = ()):
        self.name = name
        self.counts_path = os.path.join(logdir, "statements-{}".format(name))
        # e.g. ("py-spy", "record", ..., "--") to profile the worker
        self.prefix = list(prefix)
        self.log_path = os.path.join(logdir, "worker-{}.log".format(name))
        self.proc: Optional[subprocess.Popen] = None

    def start(self) -> "Worker":
        self._log = open(self.log_path, "w")
        self.proc = subprocess.Popen(
            # bench/probe.py: ckan, counting its SQL statements
            self.prefix + [PYTHON, os.path.join(BENCH, "probe.py"),
                           self.counts_path, "-c", INI, "webhooks",
                           "worker"],
            stdin=subprocess.DEVNULL, stdout=self._log, stderr=self._log,
            start_new_session=True)
        try:
            self._wait_listening(60)
            self._wait_helpers(60)
        except BaseException:
            self.stop()
            raise
        return self

    def _wait_listening(self, timeout: float) -> None:
        """Ready once its engine listens for events (its log says so:
        bench.ini logs ``ckanext.webhooks.pipeline.listening`` at INFO)."""
        self._wait_logged("listening for events", timeout)

    def _wait_logged(self, line: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with open(self.log_path) as f:
                if line in f.read():
                    return
            if self.proc.poll() is not None:
                raise SystemExit("worker died: see " + self.log_path)
            time.sleep(0.1)
        raise SystemExit("worker did not log {!r} in {}s: see {}".format(
            line, timeout, self.log_path))

    def _wait_helpers(self, timeout: float) -> None:
        """Until its payload helpers have loaded CKAN (their start is not
        what is measured)."""
        self._wait_logged("payload helpers ready", timeout)

    def rss_kib(self) -> int:
        with open("/proc/{}/status".format(self.proc.pid)) as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
        raise RuntimeError("no VmRSS")

    def cpu_seconds(self) -> float:
        """User + system CPU time so far of the worker process and of its
        payload helpers (its children)."""
        ticks = 0
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                with open("/proc/{}/stat".format(entry)) as f:
                    fields = f.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(entry) == self.proc.pid or \
                    int(fields[1]) == self.proc.pid:
                ticks += int(fields[11]) + int(fields[12])
        return ticks / os.sysconf("SC_CLK_TCK")

    def statements(self) -> int:
        """SQL statements the worker and its payload helpers have sent so
        far (within 0.2 s)."""
        time.sleep(0.3)
        total = 0
        for path in [self.counts_path] + glob.glob(self.counts_path + ".*"):
            if path.endswith(".tmp"):
                continue
            with open(path) as f:
                total += int(f.read())
        return total

    def kill(self) -> None:
        """At once (attempts in flight are abandoned; their leases expire)."""
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(5)
        self.stop()

    def stop(self) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            # one SIGTERM: a gentle stop (attempts in flight end first)
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)
        self._log.close()
        self.proc = None


def live_workers() -> list[int]:
    """Pids of webhooks workers running on the benchmark's config: left
    over from an interrupted run, they would take the benchmark's
    messages."""
    pids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit() and _is_bench_worker(int(entry)):
            pids.append(int(entry))
    return pids


def _is_bench_worker(pid: int) -> bool:
    try:
        with open("/proc/{}/cmdline".format(pid), "rb") as f:
            cmdline = f.read().split(b"\0")
    except OSError:
        return False
    return INI.encode() in cmdline and b"worker" in cmdline


# --- machine description -----------------------------------------------------

def machine() -> dict[str, str]:
    cpu = "?"
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    with open("/proc/meminfo") as f:
        mem_kib = int(re.search(r"MemTotal:\s+(\d+)", f.read()).group(1))
    conn = connect()
    with conn.cursor() as cur:
        cur.execute("SHOW server_version")
        pg = cur.fetchone()[0]
    conn.close()
    import redis
    info = redis.Redis.from_url(REDIS_URL).info("server")
    nginx = subprocess.run([shutil.which("nginx") or "nginx", "-v"],
                           capture_output=True, text=True).stderr.strip()
    import ckan
    return {
        "cores": str(os.cpu_count()),
        "cpu": cpu,
        "memory": "{:.1f} GiB".format(mem_kib / 1024 / 1024),
        "postgresql": pg,
        "redis": info.get("redis_version", "?"),
        "nginx": nginx.replace("nginx version: ", ""),
        "python": sys.version.split()[0],
        "ckan": ckan.__version__,
    }


def dump_json(path: str, data: Any) -> None:
    with open(path, "w") as f:
        json.dump(data, f, indent=2, default=str)


def new_id() -> str:
    return uuid.uuid4().hex
