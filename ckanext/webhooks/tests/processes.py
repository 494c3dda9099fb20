"""Real processes for the tests: a config derived from the test
config, a free loopback port, start and stop (with child processes), a
PostgreSQL cluster and a Redis server of a test's own."""
from __future__ import annotations

import configparser
import glob
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Optional

CKAN = os.path.join(os.path.dirname(sys.executable), "ckan")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def write_ini(test_ini: str, path: Path, **options) -> Path:
    """``test_ini`` with ``options`` set in [app:main], written to ``path``."""
    parser = configparser.ConfigParser(interpolation=None)
    parser.optionxform = str
    parser.read(test_ini)
    for key, value in options.items():
        parser.set("app:main", key, str(value))
    with open(path, "w") as f:
        parser.write(f)
    return path


def start(args: list[str], log_path: Path) -> subprocess.Popen:
    """Start ``args`` in a session of its own, output to ``log_path``."""
    log = open(log_path, "w")
    process = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT,
                               stdin=subprocess.DEVNULL,
                               start_new_session=True)
    process.log_path = log_path
    return process


def stop(process: subprocess.Popen) -> None:
    """Kill the process and its children (a worker's RQ scheduler)."""
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    process.wait(10)


def worker_options(redis_url: Optional[str] = None, **extra) -> dict:
    """A worker's options: a quick sweep and timeout, another Redis."""
    options = {"ckanext.webhooks.sweep_interval": 1,
               "ckanext.webhooks.timeout": 2}
    if redis_url:
        options["ckan.redis.url"] = redis_url
    options.update(extra)
    return options


def wait_until_listening(*processes_, timeout: float = 30) -> None:
    """Until each worker's engine listens for events (its log says so)."""
    deadline = time.monotonic() + timeout
    for process in processes_:
        while True:
            with open(process.log_path) as f:
                if "listening for events" in f.read():
                    break
            if time.monotonic() > deadline:
                raise AssertionError("worker did not start listening")
            time.sleep(0.1)


class OwnPostgres:
    """A PostgreSQL cluster of this test's own, which it may restart."""

    def __init__(self):
        binaries = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"))
        if not binaries:
            raise RuntimeError("no PostgreSQL server binaries")
        self.bin = os.path.dirname(binaries[-1])
        # PostgreSQL refuses to run as root: then as the postgres user, in
        # a directory of its own
        self.user = "postgres" if os.geteuid() == 0 else None
        self.home = tempfile.mkdtemp(prefix="webhooks-pg-")
        if self.user:
            account = pwd.getpwnam(self.user)
            os.chown(self.home, account.pw_uid, account.pw_gid)
        self.dir = os.path.join(self.home, "data")
        self.port = free_port()
        self.log = os.path.join(self.home, "pg.log")

    @property
    def url(self) -> str:
        return "postgresql://postgres@127.0.0.1:{}/ckan".format(self.port)

    def _run(self, *args: str) -> None:
        if self.user:
            args = ("runuser", "-u", self.user, "--", *args)
        subprocess.run(args, check=True, stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL)

    def _ctl(self, *args: str) -> None:
        self._run(os.path.join(self.bin, "pg_ctl"), "-D", self.dir,
                  "-l", self.log, "-w", *args)

    def create(self) -> None:
        self._run(os.path.join(self.bin, "initdb"), "-D", self.dir,
                  "-U", "postgres", "-A", "trust")
        self.start()
        self._run("createdb", "-h", "127.0.0.1", "-p", str(self.port),
                  "-U", "postgres", "ckan")

    def start(self) -> None:
        """Start it again after ``stop``."""
        self._ctl("-o", "-p {} -k /tmp -c listen_addresses=127.0.0.1"
                  .format(self.port), "start")

    def restart(self) -> None:
        self._ctl("-m", "fast", "restart")

    def stop(self) -> None:
        self._ctl("-m", "immediate", "stop")

    def remove(self) -> None:
        shutil.rmtree(self.home, ignore_errors=True)


class OwnRedis:
    """A Redis server of this test's own, which it may stop and start."""

    def __init__(self, tmp_path: Path):
        self.port = free_port()
        self.dir = tmp_path
        self.process = None

    @property
    def url(self) -> str:
        return "redis://127.0.0.1:{}/0".format(self.port)

    def start(self) -> None:
        self.process = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1",
             "--save", "", "--appendonly", "no", "--dir", str(self.dir)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), 0.2).close()
                return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("redis-server did not start")

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(10)
            self.process = None


ACTION_RUNNER = os.path.join(os.path.dirname(__file__), "action_runner.py")


def run_actions(ini: Path, *calls: tuple[str, dict]) -> list[dict]:
    """Run actions in a CKAN process against ``ini``'s database (a private
    PostgreSQL cluster, say); one ``{"result": ..., "at": ...}`` each."""
    import json
    lines = "".join("{} {}\n".format(action, json.dumps(data))
                    for action, data in calls)
    done = subprocess.run([sys.executable, ACTION_RUNNER, str(ini)],
                          input=lines, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    return [json.loads(line) for line in done.stdout.splitlines()
            if line.startswith("{")]


def private_ckan(test_ini: str, path: Path, postgres: "OwnPostgres",
                 **options) -> Path:
    """A config for CKAN on ``postgres``, its tables created."""
    ini = write_ini(test_ini, path, **worker_options(
        **{"sqlalchemy.url": postgres.url}, **options))
    for args in (["db", "init"], ["db", "upgrade", "-p", "webhooks"]):
        subprocess.run([CKAN, "-c", str(ini), *args], check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return ini


def senders(ports: set[int], pids: list[int]) -> dict[int, int]:
    """Which of ``pids`` holds the loopback TCP connection whose local port
    is each of ``ports`` (read from /proc: which process sent a request)."""
    inodes: dict[str, int] = {}
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table) as f:
                next(f)
                for line in f:
                    fields = line.split()
                    port = int(fields[1].rsplit(":", 1)[1], 16)
                    if port in ports:
                        inodes[fields[9]] = port
        except FileNotFoundError:
            pass
    found: dict[int, int] = {}
    for pid in pids:
        try:
            fds = os.listdir("/proc/{}/fd".format(pid))
        except FileNotFoundError:
            continue
        for fd in fds:
            try:
                target = os.readlink("/proc/{}/fd/{}".format(pid, fd))
            except OSError:
                continue
            if target.startswith("socket:["):
                inode = target[8:-1]
                if inode in inodes:
                    found[inodes[inode]] = pid
    return found
