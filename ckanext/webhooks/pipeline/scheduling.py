"""What to send next: the engine's decisions, without I/O.

The engine (``engine``) owns the loop, the attempts and the database; this
module decides, for the messages it has claimed and composed, which may go
out now and which wait, and where:

- **Capacity.** At most ``capacity`` attempts count at once. An attempt
  still waiting for its answer after ``SLOW_AFTER`` seconds is *set aside*:
  it stops counting (an idle connection costs little), so hung receivers
  cannot take the capacity healthy ones need. At most ``SLOW_FACTOR`` times
  ``capacity`` attempts are in flight in all (sockets are finite).
- **Sequences.** Messages of one hook about one dataset (or organization,
  group) go out one after another, in the order of their events.
- **Per hook.** A hook (its address) has at most ``per_hook`` attempts in
  flight, set-aside ones included: a hook whose receiver hangs or fails
  holds only its own slots. Its other messages wait in a queue of its own;
  when that queue is long the hook is left out of the next claims, so its
  backlog stays in the database.
- **Per host.** A host (scheme, name, port: Slack, Zapier, one company's
  server) is shared by many hooks. Its bound adapts (``HostWindow``): it
  starts at ``HOST_START``, grows while the host answers quickly and
  successfully, and shrinks when the host as a whole fails or slows down.
  Attempts set aside, and attempts of hooks that hung or failed last time
  (*suspect* hooks: they are expected to hang again), do not count against
  it, so they never take the slots the host's healthy hooks need, unless
  the host as a whole is slow (then everything counts, or the requests in
  flight to a host that slows down for everyone would not come down); every
  attempt to the host counts against ``ceiling``, so a host never has more
  than that many requests from one worker at once.
- **The circuit breaker.** Messages of a hook that failed
  ``circuit_failures`` times in a row are parked until the record of those
  failures says when its circuit closes.

Messages that cannot go now and cannot wait here are given back (to the
database, for this or another worker to claim later): ``release`` collects
them. The messages are the engine's ``ClaimedMessage`` objects; only the
attributes named in ``Schedulable`` are used.
"""
from __future__ import annotations

import collections
import statistics
from typing import Any, Deque, Iterable, Optional, Protocol

# seconds after which an attempt in flight no longer counts against the
# sending capacity (nor its host's bound), and the bound on all attempts in
# flight, in capacities
SLOW_AFTER = 1.0
SLOW_FACTOR = 4
# messages kept waiting for one hook, or for one host; past that they go
# back to the database and the hook (or the host's hooks) are left out of
# claims until the queue shrinks
WAITING_PER_HOOK = 100
WAITING_PER_HOST = 1000
# a worker holds (claims and keeps unsent) at most this many rounds of a
# hook's ``per_hook`` attempts: enough to keep a quick receiver busy between
# claims (with one round, 10 hooks with a backlog of 300 messages each went
# out at 0.64 of the rate without the cap: a claim of 100 at most, claims
# all the time), few enough that several workers share a backlog
HOLD_ROUNDS = 5

# --- a host's bound ----------------------------------------------------------
# the bound a host starts with, and the least it comes down to
HOST_START = 10
HOST_MIN = 2
# what each quick answer adds to the bound in slow start: it triples every
# round trip (TCP's one doubles it: 1,000 hooks on one host with 100-ms
# receivers took 5 round trips to reach 200 in flight, a third of the
# time the asyncio client needed for all of them)
SLOW_START_STEP = 2.0
# outcomes a host's bound looks back on
HOST_SAMPLES = 20
# seconds after which the host's quickest time (its baseline) is taken
# again from its latest answers, so a host that became slow for good is
# judged by its new pace (and its bound grows again from there)
BASELINE_SECONDS = 30.0
# while a host stays slow its bound comes down again only when its median
# answer took this many times longer than at the last decrease: fewer
# requests did not make it quicker, so still fewer would only cost
# deliveries
SLOWER_AGAIN = 1.5
# a host is slow when the median of its recent answers takes more than this
# many times its baseline, and more than LATENCY_MARGIN seconds above it
LATENCY_TOLERANCE = 2.0
LATENCY_MARGIN = 0.05
# failing as a whole: at least this share of its recent outcomes failed
# (timeouts, connection errors, 5xx, 429), among at least MIN_SAMPLES
HOST_FAILING_SHARE = 0.5
MIN_SAMPLES = 4
# an attempt stops counting against its host's bound once it has waited
# this many times the host's median answer (within these bounds, in
# seconds; SLOW_AFTER while the host has not answered yet)
HOST_ASIDE_FACTOR = 4.0
HOST_ASIDE_MIN = 0.2
# the bound comes down at most once per this many seconds (or per median
# answer time, if longer): one episode, one decrease
DECREASE_EVERY = 0.5


class Schedulable(Protocol):
    id: str
    hook_id: str
    event_id: Optional[str]
    host: tuple
    sequence: tuple
    promoted: bool
    aside: bool
    suspect: bool
    # whether its attempt counts against its host's bound now
    at_host: bool


class HostWindow:
    """How many attempts one host gets at once from this worker, learnt as
    TCP learns a congestion window.

    - *Slow start*: from ``HOST_START``, each quick answer (within twice
      the host's quickest, or ``LATENCY_MARGIN`` of it) adds
      ``SLOW_START_STEP`` (the bound triples every round trip) up to
      ``ssthresh`` (at first the
      ceiling); past it, each success adds ``1 / limit`` (one per round
      trip).
    - *Failing as a whole* (half of its recent outcomes failed): the bound
      halves.
    - *Slowing down as a whole* (the median of its recent answers more than
      twice its quickest time): the bound shrinks by the ratio of the two
      (at most by half, at least by a tenth); while it stays slow, again
      only when its median grew ``SLOWER_AGAIN`` times since (a host as
      slow with fewer requests is not slow because of them). The baseline
      is taken again every ``BASELINE_SECONDS``: a host slow for good is
      judged by its new pace.
    - While it is slow, every attempt to it counts, set-aside ones and
      those of suspect hooks included: when all of a host's paths slow down,
      each attempt looks hung beside the host's usual answers, and only
      counting them all brings the requests in flight to it down.
    - After a decrease for failures, ``ssthresh`` is half the most the bound
      ever was; after one for slowness, the most it ever was (a host that
      slowed down did not refuse anything): once the host is quick again
      the bound slow-starts back to there.
    - At most one decrease per ``DECREASE_EVERY`` (or per median answer
      time); never below ``HOST_MIN``, never above the ceiling.

    Failures of *suspect* hooks (whose last attempt hung or failed) say
    nothing about the host: one path that hangs on a shared host does not
    shrink everyone's bound (the ``Scheduler`` does not pass them on).
    Their answers do count towards its pace; the median keeps a few slow
    paths from slowing everyone. ``now`` is passed in (seconds,
    any monotonic clock), so the rules can be tested without waiting.
    """

    __slots__ = ("limit", "ssthresh", "peak", "ceiling", "counted", "total",
                 "slow", "_recent", "_answers", "_quickest",
                 "_quickest_at", "_slow_median", "_last_decrease")

    def __init__(self, ceiling: int, start: int = HOST_START) -> None:
        self.ceiling = max(1, int(ceiling))
        self.limit = float(max(min(start, self.ceiling),
                               min(HOST_MIN, self.ceiling)))
        self.ssthresh = float(self.ceiling)
        self.peak = self.limit  # the most it grew to
        self.counted = 0   # attempts in flight that count against ``limit``
        self.total = 0     # every attempt in flight (against ``ceiling``)
        # whether the median of its recent answers is slow beside its
        # quickest: then every attempt in flight counts against ``limit``
        self.slow = False
        # recent outcomes (True: failed) and answer times, newest last
        self._recent: Deque[bool] = collections.deque(maxlen=HOST_SAMPLES)
        self._answers: Deque[float] = collections.deque(maxlen=HOST_SAMPLES)
        # (a float and a count, not the answers: a worker may know the
        # bounds of thousands of hosts)
        self._quickest = float("inf")
        self._quickest_at = float("-inf")
        # the median answer at the last decrease for slowness (0: none in
        # this slow spell)
        self._slow_median = 0.0
        self._last_decrease = float("-inf")

    def aside_after(self) -> float:
        """Seconds after which an attempt no longer counts here: it looks
        hung, beside the host's usual answers."""
        if not self._answers:
            return SLOW_AFTER
        return max(HOST_ASIDE_MIN, min(
            SLOW_AFTER, HOST_ASIDE_FACTOR * self._median()))

    @property
    def bound(self) -> int:
        return max(1, int(self.limit))

    def has_room(self, counts: bool = True) -> bool:
        """Whether one more attempt may start now (one that ``counts``, or
        one of a suspect hook, which only the ceiling bounds)."""
        if self.total >= self.ceiling:
            return False
        if self.slow:
            return self.total < self.bound
        return not counts or self.counted < self.bound

    def room(self) -> int:
        """How many more attempts that count may start now."""
        taken = self.total if self.slow else self.counted
        return max(0, min(self.ceiling - self.total, self.bound - taken))

    def answered(self, seconds: float, now: float) -> None:
        """The host answered (2xx, 3xx, a 4xx other than 408 and 429)."""
        self._recent.append(False)
        self._answers.append(seconds)
        if now - self._quickest_at >= BASELINE_SECONDS:
            self._quickest, self._quickest_at = min(self._answers), now
        else:
            self._quickest = min(self._quickest, seconds)
        self.slow = self._slow()
        if self.slow:
            median = self._median()
            if median > SLOWER_AGAIN * self._slow_median and self._decrease(
                    max(0.5, min(0.9, LATENCY_TOLERANCE * self._quickest
                                 / median)), now, failing=False):
                self._slow_median = median
        elif seconds <= max(LATENCY_TOLERANCE * self._quickest,
                            self._quickest + LATENCY_MARGIN):
            # a quick answer (a slow one, while the median is not yet
            # slow, leaves the bound where it is)
            self._slow_median = 0.0
            step = SLOW_START_STEP if self.limit < self.ssthresh \
                else 1 / self.limit
            self.limit = min(float(self.ceiling), self.limit + step)
            self.peak = max(self.peak, self.limit)

    def failed(self, now: float) -> None:
        """A timeout, a connection error, a 5xx, a 408 or a 429."""
        self._recent.append(True)
        if len(self._recent) >= MIN_SAMPLES and sum(self._recent) \
                >= HOST_FAILING_SHARE * len(self._recent):
            self._decrease(0.5, now, failing=True)

    def _median(self) -> float:
        return statistics.median(self._answers)

    def _slow(self) -> bool:
        if len(self._answers) < MIN_SAMPLES:
            return False
        quickest, median = self._quickest, self._median()
        return median > LATENCY_TOLERANCE * quickest \
            and median > quickest + LATENCY_MARGIN

    def _decrease(self, factor: float, now: float, failing: bool) -> bool:
        """Whether it came down (not when it did a moment ago)."""
        every = max(DECREASE_EVERY,
                    self._median() if self._answers else 0.0)
        if now - self._last_decrease < every:
            return False
        self._last_decrease = now
        self.limit = max(float(min(HOST_MIN, self.ceiling)),
                         self.limit * factor)
        # once it is quick again it slow-starts back to half the most it
        # ever had (it failed), or to the most (it only slowed down), then
        # grows by one a round trip
        self.ssthresh = max(self.limit,
                            self.peak / 2 if failing else self.peak)
        return True


class Scheduler:
    """The messages a worker holds, and which of them go out next."""

    def __init__(self, capacity: int, per_hook: int, host_ceiling: int,
                 slow_factor: int = SLOW_FACTOR) -> None:
        self.capacity = capacity
        self.per_hook = per_hook
        # the most of one hook's messages a claim takes, and this worker
        # keeps unsent
        self.hold_per_hook = per_hook * HOLD_ROUNDS
        self.host_ceiling = host_ceiling
        self.slow_factor = slow_factor
        self.ready: Deque[Any] = collections.deque()
        # per sequence: the messages waiting for the one in flight
        self.sequences: dict[tuple, Deque[Any]] = {}
        self.hook_waiting: dict[str, Deque[Any]] = {}
        self.host_waiting: dict[tuple, Deque[Any]] = {}
        # the circuit breaker: messages of hooks that failed often enough
        self.parked: dict[str, list[Any]] = {}
        self.hook_active: collections.Counter = collections.Counter()
        self.hosts: dict[tuple, HostWindow] = {}
        # hooks whose last attempt hung or failed
        self.suspects: set[str] = set()
        self.hook_hosts: dict[str, tuple] = {}
        self.in_flight = 0
        self.set_aside = 0
        # messages to give back: (message, due again not before)
        self.release: list[tuple[Any, Any]] = []

    # --- what the engine asks ---------------------------------------------

    @property
    def counted(self) -> int:
        """Attempts in flight that count against the capacity."""
        return self.in_flight - self.set_aside

    def window(self, host: tuple) -> HostWindow:
        window = self.hosts.get(host)
        if window is None:
            window = self.hosts[host] = HostWindow(self.host_ceiling)
        return window

    def waiting(self) -> int:
        """Messages held that are not in flight."""
        return len(self.ready) + sum(map(len, self.sequences.values())) \
            + sum(map(len, self.hook_waiting.values())) \
            + sum(map(len, self.host_waiting.values())) \
            + sum(map(len, self.parked.values()))

    def excluded_hooks(self) -> list[str]:
        """Hooks left out of the next claim: this worker holds as many of
        their messages as it can send soon (``hold_per_hook`` not yet
        sent), or
        their host's queue is full."""
        unsent: collections.Counter = collections.Counter(
            m.hook_id for m in self.ready)
        for queues in (self.sequences, self.hook_waiting,
                       self.host_waiting):
            for queue in queues.values():
                unsent.update(m.hook_id for m in queue)
        excluded = {hook_id for hook_id, count in unsent.items()
                    if count >= self.hold_per_hook}
        full_hosts = {host for host, queue in self.host_waiting.items()
                      if len(queue) >= WAITING_PER_HOST}
        if full_hosts:
            excluded.update(hook_id for hook_id, host
                            in self.hook_hosts.items() if host in full_hosts)
        return sorted(excluded)

    # --- what happens -----------------------------------------------------

    def add(self, messages: Iterable[Any]) -> None:
        """Claimed and composed messages, in the order they should go."""
        for message in messages:
            self.hook_hosts[message.hook_id] = message.host
            self.ready.append(message)

    def take(self) -> list[Any]:
        """The messages to start now (they count as in flight at once)."""
        launch = []
        while self.ready and self.counted < self.capacity \
                and self.in_flight < self.slow_factor * self.capacity:
            message = self.ready.popleft()
            if message.hook_id in self.parked and message.event_id:
                self.parked[message.hook_id].append(message)
                continue
            if message.sequence and not message.promoted:
                behind = self.sequences.get(message.sequence)
                if behind is None:  # its turn: it leads its sequence
                    self.sequences[message.sequence] = collections.deque()
                    message.promoted = True
                else:
                    behind.append(message)  # after the one before it
                    continue
            if self.hook_active[message.hook_id] >= self.per_hook:
                self._wait(self.hook_waiting, message.hook_id, message,
                           WAITING_PER_HOOK)
                continue
            window = self.window(message.host)
            message.suspect = message.hook_id in self.suspects
            if not window.has_room(counts=not message.suspect):
                self._wait(self.host_waiting, message.host, message,
                           WAITING_PER_HOST)
                continue
            self._start(message, window)
            launch.append(message)
        return launch

    def aside(self, message: Any) -> None:
        """Its attempt has waited ``SLOW_AFTER``: it no longer counts
        against the capacity (nor its host's bound)."""
        if message.aside:
            return
        message.aside = True
        self.set_aside += 1
        self.host_aside(message)

    def host_aside(self, message: Any) -> None:
        """Its attempt looks hung beside its host's usual answers
        (``HostWindow.aside_after``): it no longer takes a place the host's
        other hooks need, and its hook is suspect from now on."""
        self.suspects.add(message.hook_id)
        if not message.at_host:
            return
        message.at_host = False
        window = self.window(message.host)
        window.counted -= 1
        self._unblock_host(message.host, window)

    def ended(self, message: Any, answered: Optional[bool], seconds: float,
              now: float) -> None:
        """Its attempt ended: ``answered`` True when the host answered
        (whatever the status, but 5xx, 408 and 429), False when it failed
        (those, timeouts, connection errors), None when it says nothing
        about the host (stopping, refused by our own rules)."""
        self.in_flight -= 1
        if message.aside:
            self.set_aside -= 1
        window = self.window(message.host)
        window.total -= 1
        if message.at_host:
            message.at_host = False
            window.counted -= 1
        self.hook_active[message.hook_id] -= 1
        if not self.hook_active[message.hook_id]:
            del self.hook_active[message.hook_id]
        # an answer says how quickly the host answers, whoever's it is; a
        # failure of a hook known to hang or fail says nothing of the host
        if answered:
            window.answered(seconds, now)
        elif answered is False and not message.suspect:
            window.failed(now)
        if answered is True:
            self.suspects.discard(message.hook_id)
        elif answered is False:
            self.suspects.add(message.hook_id)
        # next in its sequence, then its hook's and its host's turn,
        # before anything claimed later
        behind = self.sequences.get(message.sequence)
        if behind:
            following = behind.popleft()
            following.promoted = True
            self.ready.appendleft(following)
        elif behind is not None:
            del self.sequences[message.sequence]
        queue = self.hook_waiting.get(message.hook_id)
        if queue:
            self.ready.appendleft(queue.popleft())
            if not queue:
                del self.hook_waiting[message.hook_id]
        self._unblock_host(message.host, window)

    def park(self, hook_id: str) -> None:
        """The hook failed often enough in a row: hold its event messages
        until its circuit's fate is recorded."""
        self.parked.setdefault(hook_id, [])

    def circuits(self, opened: dict[str, Any], unrecorded: set[str]) -> None:
        """Outcomes were recorded: messages of hooks whose circuit opened
        go back until it closes; parked messages of the others (whose
        failures are recorded, ``unrecorded`` aside) go on."""
        for hook_id in list(self.parked):
            if hook_id in opened:
                self.release.extend((m, opened[hook_id])
                                    for m in self.parked.pop(hook_id))
            elif hook_id not in unrecorded:
                self.ready.extendleft(reversed(self.parked.pop(hook_id)))
        if not opened:
            return

        def keep(message: Any) -> bool:
            until = opened.get(message.hook_id)
            if until is not None and message.event_id:
                self.release.append((message, until))
                return False
            return True

        self.ready = collections.deque(m for m in self.ready if keep(m))
        for sequence in list(self.sequences):
            if sequence and sequence[0] in opened:
                for message in self.sequences.pop(sequence):
                    self.release.append((message, opened[sequence[0]]))
        for queues in (self.hook_waiting, self.host_waiting):
            self._filter(queues, keep)

    @staticmethod
    def _filter(queues: dict[Any, Deque[Any]], keep: Any) -> None:
        for key in list(queues):
            queue = collections.deque(m for m in queues[key] if keep(m))
            if queue:
                queues[key] = queue
            else:
                del queues[key]

    def give_back_all(self) -> None:
        """Stopping: everything not in flight goes back."""
        waiting: list[Any] = list(self.ready)
        for queues in (self.sequences, self.hook_waiting,
                       self.host_waiting):
            for queue in queues.values():
                waiting.extend(queue)
        for parked in self.parked.values():
            waiting.extend(parked)
        self.release.extend((m, None) for m in waiting)
        self.ready.clear()
        self.sequences.clear()
        self.hook_waiting.clear()
        self.host_waiting.clear()
        self.parked.clear()

    def take_release(self) -> list[tuple[Any, Any]]:
        released, self.release = self.release, []
        return released

    # --- inside -----------------------------------------------------------

    def _start(self, message: Any, window: HostWindow) -> None:
        self.in_flight += 1
        self.hook_active[message.hook_id] += 1
        window.total += 1
        message.at_host = not message.suspect
        if message.at_host:
            window.counted += 1

    def _wait(self, queues: dict, key: Any, message: Any,
              limit: int) -> None:
        queue = queues.setdefault(key, collections.deque())
        if len(queue) < limit:
            queue.append(message)
            return
        # too many wait here: back to the database, with those of its
        # sequence behind it, in order
        self.release.append((message, None))
        self.release.extend((m, None) for m in
                            self.sequences.pop(message.sequence, ()))

    def _unblock_host(self, host: tuple, window: HostWindow) -> None:
        """Messages waiting for the host go first, as far as it has room."""
        queue = self.host_waiting.get(host)
        if not queue:
            return
        room = window.room()
        moved: list[Any] = []
        while queue and len(moved) < max(room, 1 if window.has_room(
                counts=False) else 0):
            moved.append(queue.popleft())
        self.ready.extendleft(reversed(moved))
        if not queue:
            del self.host_waiting[host]
