"""What goes out next (``pipeline.scheduling``): table-driven, no I/O.

The host's bound (``HostWindow``) with its clock injected, and the
``Scheduler``'s decisions on plain messages. No database, no worker: these
run in milliseconds.
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Optional

import pytest

from ckanext.webhooks.pipeline import scheduling
from ckanext.webhooks.pipeline.scheduling import HostWindow, Scheduler

SLACK = ("https", "hooks.slack.com", 443)
OTHER = ("https", "example.org", 443)
_ids = itertools.count()


@dataclass
class Msg:
    hook_id: str
    host: tuple = SLACK
    sequence: tuple = ()
    event_id: Optional[str] = "event"
    id: str = field(default_factory=lambda: "msg_{}".format(next(_ids)))
    promoted: bool = False
    aside: bool = False
    suspect: bool = False
    at_host: bool = False


def _answers(window: HostWindow, seconds: float, count: int,
             start: float = 0.0, every: float = 0.01) -> float:
    now = start
    for _ in range(count):
        window.answered(seconds, now)
        now += every
    return now


# --- the host's bound ----------------------------------------------------------

@pytest.mark.parametrize("name, ceiling, quick, expected", [
    ("starts-modest", 200, 0, scheduling.HOST_START),
    ("slow-start-adds-two-a-success", 200, 50,
     scheduling.HOST_START + 2 * 50),
    ("never-above-the-ceiling", 30, 100, 30),
    ("a-ceiling-below-the-start", 4, 0, 4),
])
def test_host_bound_grows(name, ceiling, quick, expected):
    window = HostWindow(ceiling)
    _answers(window, 0.1, quick)
    assert window.bound == expected, name


def test_past_ssthresh_the_bound_grows_by_one_a_round_trip():
    window = HostWindow(200)
    window.ssthresh = window.limit = 40.0
    _answers(window, 0.1, 40)  # one round trip's worth of answers
    assert window.bound == 40 and 40.9 < window.limit < 41.1


@pytest.mark.parametrize("name, outcomes, expected", [
    ("one-path-failing-among-many-keeps-it", [True] + [False] * 19, 20),
    ("half-failing-halves-it", [False, True] * 10, 10),
    ("all-failing-halves-it-once-per-episode", [True] * 20, 10),
    ("too-few-to-judge", [True] * 3, 20),
])
def test_a_host_failing_as_a_whole_gets_fewer(name, outcomes, expected):
    window = HostWindow(200)
    window.limit = window.ssthresh = 20.0
    for failed in outcomes:  # within one DECREASE_EVERY
        if failed:
            window.failed(1.0)
        else:  # an answer, without the growth it would bring
            window._recent.append(False)
    assert window.bound == expected, name


def test_decreases_keep_coming_while_it_keeps_failing_down_to_the_least():
    window = HostWindow(200)
    window.limit = 64.0
    now = 0.0
    for _ in range(20):
        for _ in range(scheduling.MIN_SAMPLES):
            window.failed(now)
        now += scheduling.DECREASE_EVERY
    assert window.bound == scheduling.HOST_MIN


def test_a_host_slowing_down_for_everyone_gets_fewer_then_more_again():
    window = HostWindow(200)
    now = _answers(window, 0.1, 75)  # quick: it grew
    grown = window.bound
    assert grown == 160
    for _ in range(20):  # every path slows to 2 s
        window.answered(2.0, now)
        now += 0.5
    slowed = window.bound
    assert slowed <= grown / 2
    for _ in range(20):  # as slow with fewer requests: no fewer still
        window.answered(2.0, now)
        now += 0.5
    assert window.bound == slowed
    for _ in range(20):  # slower again: fewer again
        window.answered(4.0, now)
        now += 0.5
    assert window.bound < slowed
    _answers(window, 0.1, 200, start=now)  # quick again
    assert window.bound > grown / 2, (slowed, window.bound)


@pytest.mark.parametrize("name, cause, expected", [
    # a host that only slowed down refused nothing: back to the most it had
    ("slowed-down-back-to-its-peak", "slow", 160),
    # one that failed: back to half of it, then one a round trip
    ("failed-back-to-half-its-peak", "failed", 80),
])
def test_once_quick_again_it_slow_starts_back(name, cause, expected):
    window = HostWindow(200)
    now = _answers(window, 0.1, 75)  # quick: it grew to 160
    for _ in range(20):
        if cause == "slow":
            window.answered(2.0, now)
        else:
            window.failed(now)
        now += 2.0
    # quick again: 20 answers to bring the median back, then slow start
    now = _answers(window, 0.1, 20, start=now)
    limit_then = window.limit
    _answers(window, 0.1, 2 * expected, start=now)
    # slow start (one per answer) ends at ssthresh; past it one a round trip
    assert expected <= window.bound < expected + 5, (name, limit_then,
                                                      window.bound)


@pytest.mark.parametrize("name, slow_paths, expected_min", [
    # the median says how the host does, not its slowest path
    ("a-few-slow-paths-keep-it-growing", 5, 30),
    ("most-paths-slow-bring-it-down", 15, None),
])
def test_slowness_is_judged_on_the_median(name, slow_paths, expected_min):
    window = HostWindow(200)
    now = _answers(window, 0.1, 20)
    before = window.bound
    for n in range(20):
        window.answered(3.0 if n % 20 < slow_paths else 0.1, now)
        now += 0.6
    if expected_min is None:
        assert window.bound < before, name
    else:
        assert window.bound >= expected_min, name


@pytest.mark.parametrize("name, answers, expected", [
    ("not-answered-yet-waits-the-full-second", [], scheduling.SLOW_AFTER),
    ("quick-host-sets-aside-early", [0.01] * 5, scheduling.HOST_ASIDE_MIN),
    ("four-times-its-median", [0.1] * 5, 0.4),
    ("never-later-than-slow-after", [2.0] * 5, scheduling.SLOW_AFTER),
])
def test_when_an_attempt_looks_hung_beside_its_host(name, answers, expected):
    window = HostWindow(200)
    for seconds in answers:
        window._answers.append(seconds)
    assert window.aside_after() == pytest.approx(expected), name


# --- the scheduler ---------------------------------------------------------------

def _scheduler(capacity=200, per_hook=10, ceiling=200) -> Scheduler:
    return Scheduler(capacity, per_hook, ceiling)


def test_capacity_bounds_what_counts():
    s = _scheduler(capacity=3)
    s.add([Msg("h{}".format(n), host=(str(n),)) for n in range(5)])
    assert len(s.take()) == 3
    assert s.take() == []


def test_set_aside_attempts_free_the_capacity_up_to_the_slow_factor():
    s = _scheduler(capacity=2)
    s.add([Msg("h{}".format(n), host=(str(n),)) for n in range(20)])
    started = s.take()
    for message in started:
        s.aside(message)
    started = s.take()
    assert len(started) == 2
    # four capacities in flight at the most, set aside or not
    for _ in range(5):
        for message in started:
            s.aside(message)
        started = s.take()
    assert s.in_flight == scheduling.SLOW_FACTOR * 2


def test_a_hook_gets_at_most_per_hook_attempts_and_the_rest_waits():
    s = _scheduler(per_hook=2)
    mine = [Msg("hung", sequence=("hung", n)) for n in range(5)]
    s.add(mine + [Msg("healthy", sequence=("healthy", 1))])
    started = s.take()
    assert [m.hook_id for m in started] == ["hung", "hung", "healthy"]
    assert len(s.hook_waiting["hung"]) == 3
    # the hung ones set aside: still its own two places, nobody else's
    for message in started[:2]:
        s.aside(message)
    assert s.take() == []
    s.ended(started[0], False, 10.0, 10.0)
    assert [m.id for m in s.take()] == [mine[2].id]


def test_a_full_host_keeps_its_messages_waiting_and_others_go():
    s = _scheduler(ceiling=200)
    on_slack = [Msg("s{}".format(n)) for n in range(12)]
    s.add(on_slack + [Msg("other", host=OTHER)])
    started = s.take()
    assert len([m for m in started if m.host == SLACK]) == \
        scheduling.HOST_START
    assert "other" in [m.hook_id for m in started]
    assert len(s.host_waiting[SLACK]) == 2
    s.ended(started[0], True, 0.05, 1.0)  # an answer: room, and one more
    assert len(s.take()) == 2


def test_attempts_that_look_hung_free_their_hosts_places():
    s = _scheduler()
    hung = [Msg("hung{}".format(n)) for n in range(scheduling.HOST_START)]
    s.add(hung + [Msg("healthy")])
    started = s.take()
    assert "healthy" not in [m.hook_id for m in started]
    for message in started:
        s.host_aside(message)
    assert [m.hook_id for m in s.take()] == ["healthy"]
    # next time those hooks' attempts do not count at all
    s.add([Msg("hung0"), Msg("healthy2")])
    again = s.take()
    assert {m.hook_id for m in again} == {"hung0", "healthy2"}
    assert [m.at_host for m in again] == [False, True]


def test_hooks_known_to_hang_say_nothing_about_their_host():
    """The first time ten paths hang, their timeouts count (the host may be
    failing as a whole); once they are known to hang, they do not."""
    s = _scheduler()
    window = s.window(SLACK)
    window.limit = 20.0
    for round_, expected in ((1, 10), (2, 10)):
        s.add([Msg("hung{}".format(n)) for n in range(10)])
        for message in s.take():
            s.host_aside(message)
            s.ended(message, False, 10.0, 10.0 * round_)  # timed out
        assert window.bound == expected, round_


def test_a_host_never_gets_more_than_its_ceiling_suspects_included():
    s = _scheduler(ceiling=5)
    s.suspects.update("h{}".format(n) for n in range(10))
    s.add([Msg("h{}".format(n)) for n in range(10)])
    assert len(s.take()) == 5


def test_a_sequence_goes_one_after_another_in_order():
    s = _scheduler()
    first, second, third = (Msg("h", sequence=("h", "d")) for _ in range(3))
    s.add([first, second, third, Msg("h", sequence=("h", "e"))])
    assert [m.sequence for m in s.take()] == [("h", "d"), ("h", "e")]
    s.ended(first, True, 0.1, 1.0)
    assert s.take() == [second]
    s.ended(second, True, 0.1, 1.0)
    assert s.take() == [third]


def test_too_many_waiting_for_one_hook_go_back_with_their_sequence():
    s = _scheduler(per_hook=1)
    s.add([Msg("h", sequence=("h", n))
           for n in range(scheduling.WAITING_PER_HOOK + 2)])
    s.take()
    released = s.take_release()
    assert len(released) == 1 and released[0][1] is None


@pytest.mark.parametrize("name, unsent, expected", [
    # HOLD_ROUNDS rounds of per_hook: 50
    ("fewer-than-it-can-send-soon", 49, []),
    ("as-many-as-it-can-send-soon", 50, ["h"]),
])
def test_a_worker_claims_no_more_of_a_hook_than_it_can_send_soon(
        name, unsent, expected):
    s = _scheduler(capacity=1, per_hook=10)
    s.add([Msg("x", host=OTHER)] + [Msg("h", sequence=("h", n))
                                    for n in range(unsent)])
    s.take()  # x takes the one place: h's wait
    assert s.excluded_hooks() == expected, name


def test_a_parked_hooks_messages_wait_for_its_circuit():
    s = _scheduler()
    s.park("failing")
    waiting = Msg("failing")
    ping = Msg("failing", event_id=None)
    s.add([waiting, ping])
    assert s.take() == [ping]  # pings still go
    s.circuits({"failing": "later"}, unrecorded=set())
    assert s.take_release() == [(waiting, "later")]


def test_parked_messages_go_on_when_the_circuit_stays_closed():
    s = _scheduler()
    s.park("flaky")
    message = Msg("flaky")
    s.add([message])
    assert s.take() == []
    s.circuits({}, unrecorded=set())
    assert s.take() == [message]


def test_stopping_gives_back_everything_not_in_flight():
    s = _scheduler(capacity=1)
    s.add([Msg("a", host=OTHER)] + [Msg("h") for _ in range(3)])
    s.take()
    s.park("p")
    s.give_back_all()
    assert len(s.take_release()) == 3 and s.waiting() == 0


def test_when_every_path_of_a_host_slows_down_everything_counts():
    """Every path slows to 2 s: each attempt looks hung beside the host's
    usual 100 ms and is set aside at its host, so without more the requests
    in flight to it would never come down. Once its answers say it is slow,
    every attempt in flight counts, suspect hooks' included, and no new one
    starts until they are fewer than the bound."""
    s = _scheduler(capacity=1000, per_hook=10, ceiling=200)
    window = s.window(SLACK)
    now = _answers(window, 0.1, 190)  # quick for a while: at the ceiling
    assert window.bound == 200
    s.add([Msg("h{}".format(n)) for n in range(1000)])
    flying = s.take()
    assert len(flying) == 200
    for message in flying:  # 0.4 s and no answer: they look hung
        s.host_aside(message)
    more = s.take()
    assert more == []  # the ceiling: 200 at once, whatever is set aside
    # the 2 s answers come, of hooks now suspect
    for message in flying[:20]:
        now += 0.1
        s.ended(message, True, 2.0, now)
    assert window.slow
    assert window.bound <= 100
    # fewer than 200 in flight now, but not fewer than the bound: nothing
    started = s.take()
    assert window.total <= max(window.bound, 180), (window.total,
                                                    window.bound)
    assert started == [] or window.total <= window.bound


def test_a_few_slow_answers_of_suspect_hooks_do_not_slow_the_host():
    """Answers of hooks that hung before count towards the host's pace, but
    the median decides: a few slow paths leave the bound growing."""
    s = _scheduler()
    window = s.window(SLACK)
    _answers(window, 0.1, 40)
    before = window.bound
    s.suspects.update({"slow0", "slow1"})
    s.add([Msg("slow0"), Msg("slow1")] + [Msg("q{}".format(n))
                                            for n in range(18)])
    now = 10.0
    for message in s.take():
        now += 0.01
        s.ended(message, True, 2.0 if message.hook_id.startswith("slow")
                else 0.1, now)
    assert not window.slow
    assert window.bound > before


def test_a_host_slow_for_good_is_judged_by_its_new_pace():
    """Every path slows to 2 s and stays there: the bound comes down, and
    once the baseline is taken again (``BASELINE_SECONDS``) the bound grows
    again at the host's new pace."""
    window = HostWindow(200)
    now = _answers(window, 0.1, 190)
    assert window.bound == 200
    lowest = window.bound
    for _ in range(2 * int(scheduling.BASELINE_SECONDS) + 20):
        window.answered(2.0, now)  # two a second
        now += 0.5
        lowest = min(lowest, window.bound)
    assert lowest <= 100
    assert not window.slow  # 2 s is its pace now
    assert window.bound > lowest
