"""`make demo` as a user runs it: it comes up with a Solr of its own,
.demo/try.py leads to the hook's page and its dataset is listed on the
search, organization and group pages, and Ctrl-C or a TERM to make stops
every process it started.

Runs make with this test's virtualenv and CKAN version, on free ports, in a
temporary directory and on the test's own database and Redis db (DEMO_PORT,
DEMO_RECEIVER_PORT, DEMO_SOLR_PORT, DEMO_DIR, DEMO_DATABASE_URL,
DEMO_REDIS_URL): never on the developer's ckan_demo, which a test run of
another CKAN version would migrate away from the demo's own.
"""
from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

import ckan
import ckan.plugins.toolkit as tk

from ckanext.webhooks.tests.processes import free_port

ROOT = Path(__file__).resolve().parents[3]

pytestmark = [pytest.mark.slow, pytest.mark.skipif(
    shutil.which("make") is None or not (ROOT / "Makefile").exists(),
    reason="needs make and the repository's Makefile")]


def _terminal_default_signals() -> None:
    # what a shell in a terminal gives its jobs: SIGINT not ignored
    signal.signal(signal.SIGINT, signal.SIG_DFL)


class Demo:
    def __init__(self, tmp_path: Path, solr: str = "local") -> None:
        self.dir = tmp_path / "demo"
        self.port = free_port()
        self.receiver_port = free_port()
        self.url = "http://127.0.0.1:{}".format(self.port)
        self.log_path = tmp_path / "make-demo.log"
        venv = Path(sys.executable).parent.parent
        self.python = venv / "bin" / "python"
        env = dict(os.environ, DEMO_DIR=str(self.dir),
                   DEMO_PORT=str(self.port),
                   DEMO_RECEIVER_PORT=str(self.receiver_port),
                   DEMO_SOLR=solr, DEMO_SOLR_PORT=str(free_port()),
                   DEMO_DATABASE_URL=tk.config.get("sqlalchemy.url"),
                   DEMO_REDIS_URL=tk.config.get("ckan.redis.url"))
        env.pop("MAKEFLAGS", None)
        self.make = subprocess.Popen(
            ["make", "--no-print-directory", "demo", "VENV={}".format(venv),
             "CKAN_VERSION={}".format(ckan.__version__)],
            cwd=ROOT, env=env, stdin=subprocess.DEVNULL,
            stdout=open(self.log_path, "w"), stderr=subprocess.STDOUT,
            start_new_session=True, preexec_fn=_terminal_default_signals)

    def log(self) -> str:
        return self.log_path.read_text()

    def wait_until_up(self, timeout: float = 300) -> list[int]:
        """The pids of the processes the demo started (each leads a
        session of its own)."""
        deadline = time.monotonic() + timeout
        while "receiver output (deliveries)" not in self.log():
            if self.make.poll() is not None or time.monotonic() > deadline:
                raise AssertionError("the demo did not come up:\n" +
                                     self.log()[-3000:])
            time.sleep(0.5)
        return [int(p) for p in re.findall(r"started \w+ \(pid (\d+)\)",
                                           self.log())]

    def stop(self) -> None:
        """Whatever a test left running: make's job (the demo script traps
        TERM and stops its processes), then anything still there."""
        sessions = [int(p) for p in re.findall(
            r"started \w+ \(pid (\d+)\)", self.log())]
        for group in [self.make.pid] + sessions:
            try:
                os.killpg(group, signal.SIGTERM)
            except ProcessLookupError:
                pass
        _wait_until_gone([self.make.pid] + sessions, timeout=15)
        for group in [self.make.pid] + sessions:
            try:
                os.killpg(group, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.make.wait(10)


def _left_in(sessions: list[int]) -> list[str]:
    """Processes still running in these sessions."""
    left = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        # fields after the name: state, ppid, pgrp, session, ...
        if fields[0] != "Z" and int(fields[3]) in sessions:
            left.append(cmdline.replace(b"\0", b" ").decode())
    return left


def _wait_until_gone(sessions: list[int], timeout: float = 30) -> list[str]:
    deadline = time.monotonic() + timeout
    while _left_in(sessions) and time.monotonic() < deadline:
        time.sleep(0.2)
    return _left_in(sessions)


@pytest.fixture
def demo(request, tmp_path):
    marker = request.node.get_closest_marker("demo_solr")
    started = Demo(tmp_path, *(marker.args if marker else ()))
    yield started
    started.stop()


def _page(url: str) -> str:
    with urllib.request.urlopen(url, timeout=30) as answer:
        assert answer.status == 200
        return answer.read().decode()


def test_try_py_leads_to_the_hooks_page_and_term_stops_everything(demo):
    sessions = demo.wait_until_up()
    assert len(sessions) == 4  # Solr, receiver, worker, CKAN

    tried = subprocess.run([str(demo.python), str(demo.dir / "try.py")],
                           capture_output=True, text=True, timeout=120)
    assert tried.returncode == 0, tried.stdout + tried.stderr
    page = re.search(r"{}/webhooks/[A-Za-z0-9_-]+".format(re.escape(
        demo.url)), tried.stdout)
    assert page, tried.stdout
    with urllib.request.urlopen(page.group(0), timeout=10) as answer:
        assert answer.status == 200
        shown = answer.read().decode()
        assert "Webhook: " in shown and "<code" in shown
        assert "dataset/create" in shown
    # indexed into the demo's Solr: listed where a visitor looks for it
    for listing in ("dataset", "organization/demo-org", "group/demo-group"):
        assert "{}/{}".format(demo.url, listing) in tried.stdout
        assert "Webhooks demo dataset" in _page(
            "{}/{}".format(demo.url, listing)), listing

    demo.make.send_signal(signal.SIGTERM)
    # stopping is the demo's normal end: no "Error 143" from make
    demo.make.wait(60)
    assert _wait_until_gone(sessions + [demo.make.pid]) == []
    assert "stopped" in demo.log()
    assert "Error 143" not in demo.log()


# Without Solr here: the stand-in must say so loudly. Ctrl-C stops Solr
# through the same trap as a TERM, which the test above checks with Solr.
@pytest.mark.demo_solr("none")
def test_ctrl_c_stops_everything_and_no_solr_says_so(demo):
    sessions = demo.wait_until_up()
    assert len(sessions) == 3  # receiver, worker, CKAN: no Solr
    assert "NO SOLR" in demo.log()
    assert "webhooks_demo_nosolr" in demo.log()
    with urllib.request.urlopen(demo.url + "/dataset", timeout=30) as answer:
        assert answer.status == 200
    # Ctrl-C: the terminal sends SIGINT to the whole foreground job
    os.killpg(demo.make.pid, signal.SIGINT)
    demo.make.wait(60)
    assert _wait_until_gone(sessions + [demo.make.pid]) == []
    assert "stopped" in demo.log()
