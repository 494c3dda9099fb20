"""The loop that keeps hundreds of attempts in flight.

One engine runs in each ``ckan webhooks worker`` (an asyncio loop in the
process's main thread; ``worker`` handles its signals). It fans out waiting
events, claims due messages of any events, composes them, sends them,
records their outcomes, and claims more as attempts finish: a slow attempt
holds only its own slot, never a batch.

- What goes out next is decided by ``scheduling``: ``concurrency``
  attempts count at once (an attempt waiting for its answer for over a
  second is set aside and stops counting), a hook has at most
  ``max_per_hook`` in flight, and a host (scheme, name and port: Slack,
  Zapier, one company's server) a bound that adapts to how it answers, up
  to ``max_per_host``. The engine only carries the decisions out.
- All database work runs on one thread of its own, so the event loop keeps
  reading answers while a claim or a record is written.
- PostgreSQL is the source of truth. The engine wakes when an event or a
  message commits (``listening``), and looks by itself every second, so a
  lost notification, a Redis outage or a killed worker delay nothing for
  long: a dead worker's leases expire and its messages are claimed again.
"""
from __future__ import annotations

import asyncio
import collections
import datetime
import functools
import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable, Optional

import ckan.model as model
import ckan.plugins.toolkit as tk

from ckanext.webhooks.pipeline import (
    claiming, composing, heartbeat, matching, outcomes, payloads, scheduling,
    sweep)
from ckanext.webhooks.pipeline.claiming import ClaimedMessage
from ckanext.webhooks.pipeline.sending import Transport

log = logging.getLogger(__name__)

# seconds between looks at the attempts in flight: one timer for all of them
# sets slow ones aside and ends those past the deadline (``timeout``), so
# their end can come this much late
WATCH = 0.1

# seconds between looks for due work when nothing wakes the engine
POLL = 1.0
# events fanned out in one transaction
FAN_OUT_BATCH = 200
# messages in one claim at the most
CLAIM_MAX = 500
# messages composed in one go: the first of a claim go out while the rest
# are composed (a burst of small events needs a package_show each)
COMPOSE_CHUNK = 100
# seconds a burst run keeps trying while the database fails
BURST_PATIENCE = 30.0
# seconds before payload helpers that failed are started again, and the
# most they are waited for to load CKAN
HELPERS_AGAIN = 60.0
HELPERS_READY = 120.0
# seconds a stopping engine keeps trying to record and give back what it
# holds while the database fails, beyond ``timeout`` (then its leases do)
STOP_PATIENCE = 3.0


class EngineFailed(RuntimeError):
    """A part of the engine ended that it cannot deliver without."""


def _in_session(fn: Callable, *args: Any) -> Any:
    try:
        return fn(*args)
    except BaseException:
        try:
            model.Session.rollback()
        except Exception:
            pass
        model.Session.remove()
        raise


class Engine:
    """Delivers due messages until stopped (or, in burst mode, until none
    are due)."""

    def __init__(self, burst: bool = False):
        self.burst = burst
        # positive whole numbers: config_declaration.yaml refuses others
        # at start-up
        self.capacity = int(tk.config.get("ckanext.webhooks.concurrency"))
        self.scheduler = scheduling.Scheduler(
            self.capacity,
            int(tk.config.get("ckanext.webhooks.max_per_hook")),
            int(tk.config.get("ckanext.webhooks.max_per_host")))
        self.sweep_interval = int(tk.config.get(
            "ckanext.webhooks.sweep_interval"))
        self._db = ThreadPoolExecutor(1, thread_name_prefix="webhooks-db")
        # leases are renewed on a connection of their own: a step of the
        # database thread that takes long (composing a big claim on a busy
        # machine) must not let them lapse, or another worker would send
        # the same messages again
        self._leases = ThreadPoolExecutor(1,
                                          thread_name_prefix="webhooks-lease")
        # outcomes are recorded on a connection of their own too, while the
        # next messages are claimed and composed; one batch at a time
        self._records = ThreadPoolExecutor(
            1, thread_name_prefix="webhooks-record")
        self._recording: Optional[asyncio.Task] = None
        self._record_error: Optional[Exception] = None
        # batches recorded so far: a record that ends while a round claims
        # may have made retries due that the claim did not see yet
        self._records_done = 0
        # bound to the running loop when first used (Python 3.10+)
        self._lease_lock = asyncio.Lock()
        self._loop: Optional[asyncio.AbstractEventLoop] = None
        self._wakeup: Optional[asyncio.Event] = None
        self._stopping = False
        self._stopped_at: Optional[float] = None
        self._events_waiting = True
        # notifications of events so far: one that comes while waiting
        # events are being fanned out may be about an event committed too
        # late for that round, so it calls for another
        self._event_calls = 0
        self._held: dict[str, ClaimedMessage] = {}
        self._finished: list[ClaimedMessage] = []
        # the circuit breaker, before the database knows: failures in a row
        # per hook (the scheduler parks the messages of those at the
        # threshold)
        self._failures: collections.Counter = collections.Counter()
        self.circuit_failures = int(tk.config.get(
            "ckanext.webhooks.circuit_failures"))
        # attempts in flight, by message id, oldest first
        self._flight: dict[str, ClaimedMessage] = {}
        self._tasks: set[asyncio.Task] = set()
        self.started = threading.Event()
        self.stats: collections.Counter[str] = collections.Counter()
        # for ``ckan webhooks status``: who this worker is, whether its
        # listener listens (set by the worker), when it last swept
        self.identity = heartbeat.Identity()
        self.listening: Optional[threading.Event] = None
        self.last_sweep: Optional[datetime.datetime] = None
        self._beat_failing = False
        # payload helper processes (``payloads``), not in burst runs. They
        # are started, waited for, restarted and closed on a thread of
        # their own (that takes seconds); the loop only reads ``usable``
        self._helpers: Optional[payloads.Helpers] = None
        self._helpers_said = False
        self.helper_processes = 0 if burst else int(tk.config.get(
            "ckanext.webhooks.payload_processes"))
        self._helper_thread = ThreadPoolExecutor(
            1, thread_name_prefix="webhooks-helpers")
        self._helpers_starting: Optional[asyncio.Future] = None
        self._helpers_made: list[payloads.Helpers] = []
        self._helpers_abort = threading.Event()

    # --- from other threads -----------------------------------------------

    def wake(self, events: bool = False) -> None:
        """Look for work now (thread-safe)."""
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        loop.call_soon_threadsafe(self._wake, events)

    def stop(self) -> None:
        """Stop claiming, finish what is in flight, give back the rest."""
        loop = self._loop
        if loop is None or loop.is_closed():
            self._stopping = True
            return
        loop.call_soon_threadsafe(self._stop)

    # --- inside the loop --------------------------------------------------

    def _wake(self, events: bool = False) -> None:
        if events:
            self._events_waiting = True
            self._event_calls += 1
        if self._wakeup is not None:
            self._wakeup.set()

    def _stop(self) -> None:
        if not self._stopping:
            self._stopped_at = time.monotonic()
        self._stopping = True
        self._wake()

    async def _call(self, fn: Callable, *args: Any) -> Any:
        assert self._loop is not None  # running
        return await self._loop.run_in_executor(
            self._db, functools.partial(_in_session, fn, *args))

    async def run(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._wakeup = asyncio.Event()
        self._transport = Transport(
            tk.config.get("ckanext.webhooks.timeout"),
            tk.config.get("ckanext.webhooks.max_response_bytes"))
        self.started.set()
        self._transport.open()  # the TLS context loads before any attempt
        if self._helpers is None:
            self._start_helpers()
        else:  # (tests give ready ones)
            self._helpers_made.append(self._helpers)
        renewing = asyncio.ensure_future(
            self._renew_every(claiming.lease_seconds() / 4))
        watching = asyncio.ensure_future(self._watch_every(WATCH))
        next_sweep = time.monotonic() + (0 if self.burst
                                         else self.sweep_interval)
        next_beat = time.monotonic()
        failing_since: Optional[float] = None
        failed = False
        try:
            while True:
                self._wakeup.clear()
                _still_running(renewing, "renewing leases")
                _still_running(watching, "watching attempts")
                try:
                    busy = await self._step()
                    if not self.burst and time.monotonic() >= next_sweep:
                        await self._call(sweep.sweep)
                        self.last_sweep = heartbeat.utcnow()
                        next_sweep = time.monotonic() + self.sweep_interval
                    if not self.burst and time.monotonic() >= next_beat:
                        await self._beat()
                        next_beat = time.monotonic() + heartbeat.BEAT
                    if failing_since is not None:
                        log.warning("webhooks: the database answers again")
                        failing_since = None
                except Exception as e:  # the database went away, and the like
                    if self.burst and failing_since is not None and \
                            time.monotonic() - failing_since > BURST_PATIENCE:
                        raise
                    if self._gave_up_stopping():
                        break
                    if failing_since is None:
                        failing_since = time.monotonic()
                        log.warning("webhooks: %s; trying again every "
                                    "second", e)
                    busy = False
                    await self._sleep(POLL)
                    continue
                self._ready_helpers()  # says so once they are
                if self._stopping and not self._held:
                    break
                if self.burst and not busy and not self._held \
                        and not self._events_waiting:
                    break
                if not busy:
                    await self._sleep(POLL)
                else:  # a round need not have waited for anything: let
                    # the loop run the attempts before the next one
                    await asyncio.sleep(0)
        except BaseException:
            failed = True
            raise
        finally:
            renewing.cancel()
            watching.cancel()
            for task in list(self._tasks):
                task.cancel()
            if self._recording is not None:
                self._recording.cancel()
            await self._transport.close()
            self._helpers_abort.set()
            await self._loop.run_in_executor(self._helper_thread,
                                             self._close_helpers)
            self._helper_thread.shutdown(wait=True)
            if not self.burst and not failed:
                # a worker that failed keeps its row: ``ckan webhooks
                # status`` shows it gone once its beats stop
                await self._leave()
            self._db.shutdown(wait=True)
            self._leases.shutdown(wait=True)
            self._records.shutdown(wait=True)

    def _gave_up_stopping(self) -> bool:
        """Stopping, with the database failing for longer than an attempt
        takes: what it holds is left to its leases."""
        if self._stopped_at is None or time.monotonic() - self._stopped_at \
                < self._transport.timeout + STOP_PATIENCE:
            return False
        log.warning("webhooks: stopping without the database: %d messages "
                    "held are claimed again by another worker when their "
                    "leases end", len(self._held))
        return True

    async def _sleep(self, seconds: float) -> None:
        if self._finished or self.scheduler.release:
            seconds = min(seconds, 0.05)
        assert self._wakeup is not None  # running
        try:
            await asyncio.wait_for(self._wakeup.wait(), seconds)
        except asyncio.TimeoutError:
            self._events_waiting = True  # a notification may have been lost

    async def _step(self) -> bool:
        """One round; True when there is more to do at once."""
        busy = False
        records_done = self._records_done
        if self._record_error is not None:  # the database went away
            error, self._record_error = self._record_error, None
            raise error
        if self._finished and self._recording is None:
            batch, self._finished = self._finished, []
            assert self._loop is not None  # running
            # it wakes the engine when done
            self._recording = self._loop.create_task(self._record(batch))
        if self._stopping:
            self.scheduler.give_back_all()
        if self.scheduler.release:
            await self._give_back()
        if self._stopping:
            return bool(self._finished) and self._recording is None
        if self._events_waiting:
            calls = self._event_calls
            fanned = await self._call(matching.fan_out_waiting,
                                      FAN_OUT_BATCH)
            self._events_waiting = fanned >= FAN_OUT_BATCH \
                or self._event_calls != calls
            busy = busy or fanned > 0
        room = 2 * self.capacity - self.scheduler.counted \
            - len(self.scheduler.ready)
        if room >= max(1, self.capacity // 4) or (
                room > 0 and self.scheduler.in_flight == 0):
            size = min(room, CLAIM_MAX)
            claimed = await self._claim(size)
            busy = busy or claimed >= size
        self._start_sends()
        return busy or (bool(self._finished) and self._recording is None) \
            or self._records_done != records_done

    async def _record(self, batch: list[ClaimedMessage]) -> None:
        """Record a batch of outcomes beside the sending and claiming."""
        assert self._loop is not None  # running
        try:
            opened = await self._loop.run_in_executor(
                self._records, functools.partial(
                    _in_session, outcomes.record, batch))
        except Exception as e:  # again later; ``_step`` reports it
            self._finished = batch + self._finished
            self._record_error = e
            return
        finally:
            self._recording = None
            self._wake()
        for message in batch:
            self._held.pop(message.id, None)
        self._records_done += 1
        self.stats["recorded"] += len(batch)
        self._hold_back(opened)
        if not self._stopping:
            self._start_sends()

    async def _claim(self, size: int) -> int:
        rows, lease_id = await self._call(
            claiming.claim, size, self._excluded_hooks(),
            self.scheduler.hold_per_hook)
        if not rows:
            return 0
        messages = [ClaimedMessage(row, lease_id) for row in rows]
        self.stats["claimed"] += len(messages)
        views = composing.Views()
        helpers = self._ready_helpers()
        if helpers is not None and len(messages) > 1:
            # the payloads of many events are computed on other cores
            await self._call(views.prefetch, messages, helpers)
        for start in range(0, len(messages), COMPOSE_CHUNK):
            # the first go out while the next are composed
            chunk = messages[start:start + COMPOSE_CHUNK]
            # held (and so renewed) once composed; if composing fails,
            # the rest stays leased and is claimed again when that ends
            await self._call(composing.compose, chunk, views)
            for message in chunk:
                self._held[message.id] = message
                if message.state != "send":
                    self._finished.append(message)
            self.scheduler.add(m for m in chunk if m.state == "send")
            if not self._stopping:
                self._start_sends()
        self.stats["views"] += views.views_computed
        self.stats["views_helped"] += views.views_helped
        return len(rows)

    def _ready_helpers(self) -> Optional[payloads.Helpers]:
        """The payload helpers if they are ready; ones that failed are
        started again after a while (on the helpers' thread)."""
        helpers = self._helpers
        if helpers is None:
            return None
        if helpers.broken:
            if self._helpers_starting is None and not self._stopping and \
                    time.monotonic() - helpers.failed_at > HELPERS_AGAIN:
                self._helpers = None
                self._helpers_said = False
                self._start_helpers(old=helpers)
            return None
        if not helpers.usable:
            return None
        if not self._helpers_said:
            self._helpers_said = True
            log.info("webhooks: %d payload helpers ready", len(helpers.pids))
        return helpers

    def _start_helpers(self, old: Optional[payloads.Helpers] = None) -> None:
        """Start payload helpers on their thread (after closing ``old``);
        they are used once every one has loaded CKAN."""
        if self.helper_processes <= 0:
            return
        assert self._loop is not None  # running
        future = self._loop.run_in_executor(
            self._helper_thread, self._bring_up_helpers, old)
        self._helpers_starting = future
        future.add_done_callback(self._helpers_up)

    def _bring_up_helpers(self, old: Optional[payloads.Helpers]
                          ) -> Optional[payloads.Helpers]:
        """(On the helpers' thread.)"""
        if old is not None:
            old.close()
        if self._helpers_abort.is_set():
            return None
        helpers = payloads.Helpers.start(self.helper_processes,
                                         payloads.config_file())
        if helpers is not None:
            self._helpers_made.append(helpers)
            helpers.wait_ready(HELPERS_READY, self._helpers_abort)
        return helpers

    def _helpers_up(self, future: asyncio.Future) -> None:
        self._helpers_starting = None
        if future.cancelled():
            return
        error = future.exception()
        if error is not None:
            log.warning("webhooks: payload helpers could not start: %s",
                        error)
            return
        if not self._stopping:
            self._helpers = future.result()

    def _close_helpers(self) -> None:
        """(On the helpers' thread.) Every helper this engine started."""
        for helpers in self._helpers_made:
            helpers.close()
        self._helpers_made.clear()

    def _excluded_hooks(self) -> list[str]:
        return self.scheduler.excluded_hooks()

    def _start_sends(self) -> None:
        for message in self.scheduler.take():
            self._launch(message)
        if self.scheduler.release:
            self._wake()

    def _launch(self, message: ClaimedMessage) -> None:
        from ckanext.webhooks.model import utcnow
        message.started = utcnow()
        assert self._loop is not None  # running
        message.clock = self._loop.time()
        task = message.task = self._loop.create_task(self._send(message))
        self._flight[message.id] = message
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _send(self, message: ClaimedMessage) -> None:
        try:
            message.outcome = await self._transport.post(
                message.address, message.id, message.body, message.secrets,
                deadline=False)
        except asyncio.CancelledError:
            if not message.expired:  # stopping
                raise
            # the watch ended it at its deadline
            task = message.task
            if task is not None and hasattr(task, "uncancel"):
                task.uncancel()
            assert self._loop is not None  # running
            message.outcome = self._transport.timed_out(
                int((self._loop.time() - message.clock) * 1000), message.id)
        finally:
            self._flight.pop(message.id, None)
            message.task = None
            assert self._loop is not None  # running
            self.scheduler.ended(
                message, _answered(message.outcome),
                self._loop.time() - message.clock, self._loop.time())
            if message.outcome is not None:
                self._finished.append(message)
                self.stats["sent"] += 1
                self._count_failure(message)
            if not self._stopping:
                self._start_sends()
            self._wake()

    async def _watch_every(self, seconds: float) -> None:
        while True:
            await asyncio.sleep(seconds)
            self._watch()

    def _watch(self) -> None:
        """Set aside the attempts still waiting for an answer after
        ``SLOW_AFTER`` (they no longer count against ``concurrency``: hung
        receivers cannot take the capacity healthy ones need), and end
        those past the deadline."""
        assert self._loop is not None  # running
        now = self._loop.time()
        slow = now - scheduling.SLOW_AFTER
        late = now - self._transport.timeout
        young = now - scheduling.HOST_ASIDE_MIN
        freed = False
        aside = []
        expired = []
        for message in self._flight.values():  # oldest first
            if message.clock > young:
                break
            if message.clock > slow:
                # hung beside its host's usual answers?
                if message.at_host and now - message.clock > \
                        self.scheduler.window(message.host).aside_after():
                    self.scheduler.host_aside(message)
                    freed = True
                continue
            if message.clock <= late:
                expired.append(message)
            elif not message.aside:
                aside.append(message)
        for message in expired:
            message.expired = True
            if message.task is not None:
                message.task.cancel()
        for message in aside:
            self.scheduler.aside(message)
        self.stats["set_aside"] += len(aside)
        if (aside or freed) and not self._stopping:
            self._start_sends()
            self._wake()

    def _count_failure(self, message: ClaimedMessage) -> None:
        """Park a hook's other messages as soon as it failed often enough in
        a row; the record of these outcomes then opens its circuit."""
        outcome = message.outcome
        hook_id = message.hook_id
        if outcome.succeeded:
            self._failures.pop(hook_id, None)
        elif message.event_id and outcome.retryable:
            count = self._failures[hook_id] = max(
                self._failures[hook_id],
                message.hook.consecutive_failures or 0) + 1
            if count >= self.circuit_failures:
                self.scheduler.park(hook_id)

    def _hold_back(self, opened: dict[str, datetime.datetime]) -> None:
        """Messages of hooks whose circuit opened wait for its slot; parked
        messages of the others go on."""
        unrecorded = {m.hook_id for m in self._held.values()
                      if m.outcome is not None}
        for hook_id in opened:
            self._failures.pop(hook_id, None)
        self.scheduler.circuits(opened, unrecorded)

    async def _give_back(self) -> None:
        async with self._lease_lock:  # not while leases change
            await self._give_back_now()

    async def _give_back_now(self) -> None:
        released = self.scheduler.take_release()
        groups: dict[tuple, list[str]] = collections.defaultdict(list)
        for message, until in released:
            groups[(message.lease_id, until)].append(message.id)
        try:
            for (lease_id, until), ids in groups.items():
                await self._call(claiming.release, ids, lease_id, until)
        except Exception:
            self.scheduler.release = released + self.scheduler.release
            raise
        for message, _ in released:
            self._held.pop(message.id, None)

    async def _beat(self) -> None:
        """Write the heartbeat; its failure (say, a schema without
        ``webhooks_worker`` yet) never holds up deliveries."""
        listening = self.listening is not None and self.listening.is_set()
        try:
            await self._call(heartbeat.beat, self.identity, listening,
                             self.scheduler.in_flight, self.last_sweep)
        except Exception as e:
            if not self._beat_failing:
                log.warning("webhooks: could not write the heartbeat: %s", e)
            self._beat_failing = True
        else:
            self._beat_failing = False

    async def _leave(self) -> None:
        try:
            await self._call(heartbeat.leave, self.identity)
        except Exception as e:  # the row ages out; status shows it gone
            log.warning("webhooks: could not remove the heartbeat: %s", e)

    async def _renew_every(self, seconds: float) -> None:
        failing = False
        while True:
            await asyncio.sleep(seconds)
            try:
                await self._renew()
            except Exception as e:  # the database went away: the next round
                if not failing:
                    log.warning("webhooks: could not renew leases: %s", e)
                failing = True
            else:
                failing = False

    async def _renew(self) -> None:
        # everything claimed and not yet recorded: an outcome waiting for a
        # slow database must not lose its lease (another worker would send
        # the message again)
        async with self._lease_lock:
            holding = list(self._held.values())
            if not holding:
                return
            claims: dict[str, list[str]] = collections.defaultdict(list)
            for message in holding:
                claims[message.lease_id].append(message.id)
            assert self._loop is not None
            await self._loop.run_in_executor(
                self._leases, functools.partial(
                    _in_session, claiming.renew, dict(claims)))


def _answered(outcome: Any) -> Optional[bool]:
    """What an attempt's outcome says about its host: True it answered,
    False it failed as a host can (timeout, connection error, 5xx, 408,
    429), None nothing (no outcome: stopping; refused by our own rules)."""
    if outcome is None or (outcome.error or "").startswith("refused"):
        return None
    return not outcome.retryable


def _still_running(task: asyncio.Future, what: str) -> None:
    """Raise if a task the engine cannot deliver without has ended."""
    if task.done():
        error = None if task.cancelled() else task.exception()
        raise EngineFailed("{} ended: {!r}".format(what, error)) from error


def run_burst(helpers: Optional[payloads.Helpers] = None
              ) -> collections.Counter:
    """Deliver everything due now, then return (tests, ``--burst``);
    payloads computed by ``helpers`` if given (they are closed after)."""
    engine = Engine(burst=True)
    engine._helpers = helpers
    asyncio.run(engine.run())
    return engine.stats
