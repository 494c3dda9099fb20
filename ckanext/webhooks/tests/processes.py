"""Real CKAN processes for the tests: a config derived from the test
config, a free loopback port, start and stop (with child processes)."""
from __future__ import annotations

import configparser
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

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
