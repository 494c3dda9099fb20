"""Payloads computed beside the worker, on the machine's other cores.

A burst of many small events (a harvest, a bulk edit) costs the worker one
``package_show`` per event and view: most of its time, on the one core its
Python threads share. ``payload_processes`` helper processes (CKAN loaded
from the worker's own configuration file) compute those ``data`` and
``changes`` while the worker claims, composes, sends and records.

- Used only when a claim needs several payloads (``MIN_PAYLOADS``): one big
  fan-out needs one, computed at once where it is needed.
- What a helper computes is what the worker would: ``access.event_data`` and
  ``access.event_changes`` for the same event and viewer, in a transaction
  of its own begun at that moment. Access is still judged per claim, just
  before the attempts go out.
- The payloads of a claim are queued at once, in the order the claim needs
  them; the helpers take the next one as soon as they are free and the
  worker takes the results in that order as it composes.
- A helper that fails, is killed or is slow to answer costs nothing but
  time: the worker computes those payloads itself (and starts helpers
  again a minute later). Helpers that are not ready yet (CKAN loads for a
  few seconds) are not waited for.
- A helper ends when the worker does (or is killed: it watches its parent).
- Not in burst runs (``--burst``, tests): starting CKAN again would cost
  more than it saves.
"""
from __future__ import annotations

import logging
import multiprocessing
import os
import signal
import threading
import time
from typing import Any, Optional

log = logging.getLogger(__name__)

# a claim needs at least this many payloads before helpers compute them
MIN_PAYLOADS = 4
# seconds the worker waits for a payload before it computes it itself
WAIT = 30.0

# one payload's result from a helper: (data JSON, changes JSON), or None
# when the helper could not compute it (the worker then does)
Result = Optional[tuple[Optional[str], Optional[str]]]


# --- in a helper process -----------------------------------------------------

_failed: Optional[str] = None  # why CKAN could not be loaded here


def _watch_parent(parent: int) -> None:
    """End this helper when the worker is gone (killed, say)."""
    while True:
        time.sleep(1.0)
        if os.getppid() != parent:
            os._exit(0)


def _start(config_file: str, parent: int) -> None:
    global _failed
    # the worker stops its helpers itself; Ctrl-C in a terminal reaches
    # the whole process group
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    threading.Thread(target=_watch_parent, args=(parent,), daemon=True,
                     name="webhooks-parent-watch").start()
    try:
        from ckan.cli import load_config
        from ckan.config.middleware import make_app
        make_app(load_config(config_file))
    except Exception as e:  # said by ``_ready``: a pool whose helpers die
        # at start would start new ones forever
        log.exception("webhooks: a payload helper could not load CKAN")
        _failed = "{}: {}".format(type(e).__name__, e)
        return
    import gc
    gc.freeze()  # CKAN is loaded for good (see worker.run_worker)


def compute(item: tuple[str, Optional[str]]) -> Result:
    """``data`` and ``changes`` of (event id, owner id) as that owner may
    see them now (None: the public), in a transaction of its own."""
    if _failed is not None:
        return None
    import ckan.model as model

    from ckanext.webhooks import access
    from ckanext.webhooks.model import Event
    from ckanext.webhooks.pipeline import bodies

    event_id, owner_id = item
    try:
        event = model.Session.get(Event, event_id)
        if event is None:
            return None
        viewer = access.Viewer(owner_id)
        data = access.event_data(event, viewer)
        changes = None if data is None else access.event_changes(
            event, viewer, data)
        return (None if data is None else bodies.to_json(data),
                None if changes is None else bodies.to_json(changes))
    except Exception:
        log.exception("webhooks: a payload helper failed on event %s",
                      event_id)
        return None
    finally:
        try:  # the next payload sees what has been committed since
            model.Session.rollback()
        except Exception:
            model.Session.remove()


def _serve(conn: Any, config_file: str, parent: int) -> None:
    """A helper's life: load CKAN, say so, then compute what it is sent."""
    _start(config_file, parent)
    conn.send(("ready", _failed))
    while True:
        try:
            number, items = conn.recv()
        except (EOFError, OSError):  # the worker is gone
            return
        for place, item in enumerate(items):
            conn.send((number, place, compute(item)))


# --- in the worker -----------------------------------------------------------

class _Helper:
    """One helper process and the pipe to it (a pipe each, no lock shared
    with the others: a helper killed at any moment cannot block the rest)."""

    def __init__(self, context: Any, config_file: str) -> None:
        self.conn, theirs = context.Pipe()
        self.process = context.Process(
            target=_serve, args=(theirs, config_file, os.getpid()),
            name="webhooks-payloads", daemon=True)
        self.process.start()
        theirs.close()
        self.ready = False
        # results read but not yet taken: (stream, place) -> result
        self.results: dict[tuple[int, int], Result] = {}


class Stream:
    """The results of one claim's payloads, in order."""

    def __init__(self, helpers: "Helpers", number: int) -> None:
        self.helpers = helpers
        self.number = number

    def result(self, index: int) -> Result:
        """The result of the ``index``-th payload; None if it does not come
        (the worker then computes it itself)."""
        return self.helpers.result(self.number, index)


class Helpers:
    """The worker's helper processes. The payloads of a stream are dealt out
    in turn; each helper computes its share in order and sends each result
    as soon as it has it.

    Threads: the engine starts, waits for, restarts and closes helpers on a
    thread of its own (``wait_ready`` and ``close`` block for seconds), and
    the database thread streams payloads; the event loop only reads
    ``usable``. One lock guards the pipes and the state."""

    def __init__(self, processes: int, config_file: str) -> None:
        context = multiprocessing.get_context("spawn")
        self._lock = threading.RLock()
        self._helpers = [_Helper(context, config_file)
                         for _ in range(processes)]
        self._streams = 0
        self.broken = False
        self.failed_at = 0.0

    @classmethod
    def start(cls, processes: int, config_file: Optional[str]
              ) -> Optional["Helpers"]:
        if processes <= 0 or not config_file:
            return None
        try:
            return cls(processes, config_file)
        except Exception as e:  # the worker delivers without them
            log.warning("webhooks: payload helpers could not start: %s", e)
            return None

    @property
    def pids(self) -> list[int]:
        return [h.process.pid for h in self._helpers
                if h.process.pid is not None]

    @property
    def usable(self) -> bool:
        """Ready and not broken: a plain read, for the event loop."""
        return not self.broken and all(h.ready for h in self._helpers)

    @property
    def ready(self) -> bool:
        """Whether every helper has loaded CKAN (looks, does not wait)."""
        with self._lock:
            if self.broken:
                return False
            try:
                for helper in self._helpers:
                    if not helper.ready and helper.conn.poll(0):
                        _, failed = helper.conn.recv()
                        if failed:
                            self._fail(failed)
                            return False
                        helper.ready = True
            except (EOFError, OSError) as e:
                self._fail(e)
                return False
            return all(h.ready for h in self._helpers)

    def wait_ready(self, timeout: float,
                   abort: Optional[threading.Event] = None) -> bool:
        """Until every helper has loaded CKAN (or failed, or ``timeout``,
        or ``abort`` is set)."""
        deadline = time.monotonic() + timeout
        while not self.ready:
            if self.broken or (abort is not None and abort.is_set()):
                return False
            if time.monotonic() > deadline:
                with self._lock:
                    self._fail("not ready within {:g}s".format(timeout))
                return False
            time.sleep(0.1)
        return True

    def stream(self, items: list[tuple[str, Optional[str]]]
               ) -> Optional[Stream]:
        """Start computing ``items``; their results come in ``Stream``."""
        with self._lock:
            if self.broken:
                return None
            self._streams += 1
            count = len(self._helpers)
            try:
                for turn, helper in enumerate(self._helpers):
                    helper.results.clear()  # of earlier claims: never taken
                    helper.conn.send((self._streams, items[turn::count]))
            except (OSError, ValueError) as e:
                self._fail(e)
                return None
            return Stream(self, self._streams)

    def result(self, number: int, index: int) -> Result:
        with self._lock:
            if self.broken:
                return None
            helper = self._helpers[index % len(self._helpers)]
            place = (number, index // len(self._helpers))
            deadline = time.monotonic() + WAIT
            try:
                while place not in helper.results:
                    if helper.conn.poll(1.0):
                        got_number, got_place, result = helper.conn.recv()
                        if got_number == number:  # not of an earlier claim
                            helper.results[(got_number, got_place)] = result
                    elif not helper.process.is_alive():
                        raise OSError("a helper process ended")
                    elif time.monotonic() > deadline:
                        raise OSError("no answer within {:g}s".format(WAIT))
            except (EOFError, OSError) as e:
                self._fail(e)
                return None
            return helper.results.pop(place)

    def _fail(self, error: Any) -> None:
        """Out of use at once; the processes are told to end (not waited
        for: ``close`` does that, on the helpers' thread)."""
        if not self.broken:
            self.broken = True
            self.failed_at = time.monotonic()
            log.warning("webhooks: payload helpers out of use (%s); the "
                        "worker computes payloads itself", error)
            self._terminate()

    def _terminate(self) -> None:
        for helper in self._helpers:
            try:
                helper.conn.close()
                if helper.process.is_alive():
                    helper.process.terminate()
            except Exception:
                pass

    def close(self) -> None:
        """Stop the helpers now (a payload under way is not waited for) and
        wait for them to end: up to three seconds each."""
        with self._lock:
            self.broken = True
            self._terminate()
        for helper in self._helpers:
            helper.process.join(2)
            if helper.process.is_alive():
                helper.process.kill()
                helper.process.join(1)


def config_file() -> Optional[str]:
    import ckan.plugins.toolkit as tk
    path = tk.config.get("__file__")
    return path if path and os.path.exists(path) else None
