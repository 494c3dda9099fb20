"""The process behind ``ckan webhooks worker``: one delivery engine.

The engine (``pipeline.engine``) runs on an asyncio loop in the main
thread, with a listener thread that wakes it when events and messages
commit. A worker needs PostgreSQL only; it never talks to Redis.

- **Stopping.** One SIGTERM or SIGINT (Ctrl-C) asks the engine to stop: it
  claims nothing more, finishes the attempts in flight (``timeout`` at
  most), records them, gives back what it had claimed, and the process
  exits 0. Whatever the engine is doing (the database down included), the
  process is gone within ``timeout`` plus ``STOP_GRACE`` seconds: what it
  could not record or give back is claimed again by another worker when
  its lease ends, so nothing is lost. A second signal exits at once.
- **Dying loudly.** If the engine fails (an error it does not survive,
  unlike a database outage, which it waits out), the process logs why and
  exits ``EXIT_ENGINE_FAILED``, so a supervisor restarts it.
"""
from __future__ import annotations

import asyncio
import gc
import logging
import os
import signal
import sys
import threading
from typing import Any, Optional

import ckan.model as model
import ckan.plugins.toolkit as tk

from ckanext.webhooks.pipeline import listening, sweep
from ckanext.webhooks.pipeline.engine import Engine, run_burst

log = logging.getLogger(__name__)

# seconds a stopping worker is given beyond ``timeout`` (recording what its
# last attempts brought, giving back the rest) before it exits regardless
STOP_GRACE = 8.0
EXIT_ENGINE_FAILED = 1
# a second stop signal: out at once (the leases of what it held expire)
EXIT_FORCED = 130


def _exit_now(code: int, why: str) -> None:
    log.warning("webhooks: %s", why)
    for handler in logging.getLogger().handlers:
        try:
            handler.flush()
        except Exception:
            pass
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


class _Stopper:
    """What the stop signals do: the first stops the engine (and starts the
    clock on it), a second exits at once."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.requested = threading.Event()

    def install(self) -> None:
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, self.on_signal)

    def on_signal(self, signum: int, frame: Any) -> None:
        name = signal.Signals(signum).name
        if self.requested.is_set():
            _exit_now(EXIT_FORCED, "a second {}: exiting now; what this "
                      "worker held goes to another when its leases "
                      "end".format(name))
        self.requested.set()
        limit = float(tk.config.get("ckanext.webhooks.timeout")) + STOP_GRACE
        log.info("webhooks: %s: stopping (within %gs)", name, limit)
        self.engine.stop()
        # in every state, outages included: gone in time
        timer = threading.Timer(limit, _exit_now, (
            0, "not stopped within {:g}s: exiting; what this worker still "
            "held goes to another when its leases end".format(limit)))
        timer.daemon = True
        timer.start()


def run_worker(burst: bool = False) -> int:
    """Deliver until stopped (or, with ``burst``, deliver what is due now);
    the process's exit status."""
    try:
        sweep.sweep()
    except Exception:
        log.exception("webhooks: initial sweep failed")
    finally:
        model.Session.remove()
    if burst:
        run_burst()
        return 0

    # CKAN, its plugins and SQLAlchemy are loaded and live as long as the
    # worker: out of the collector's sight, so that its full collections,
    # which the many short-lived objects of attempts set off, do not walk
    # them every time (measured: about 15% of the CPU per delivery)
    gc.freeze()
    engine = Engine()
    stopper = _Stopper(engine)
    stopper.install()
    listener: Optional[listening.Listener] = None
    try:
        listener = listening.Listener(engine).start()
        engine.listening = listener.listening
        asyncio.run(engine.run())
    except Exception:
        log.exception("webhooks: the delivery engine failed; the worker "
                      "exits (exit status %d) for its supervisor to start "
                      "it again", EXIT_ENGINE_FAILED)
        return EXIT_ENGINE_FAILED
    finally:
        if listener is not None:
            listener.stop()
    log.info("webhooks: worker stopped")
    return 0
