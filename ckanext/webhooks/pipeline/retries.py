"""When a failed attempt is tried again: the schedule, jitter, Retry-After.

A pure function, so the rules can be read and tested in one place. Jitter
is drawn per message, both ways (plus or minus ``JITTER``), so the retries
of many messages that failed together (a receiver that was down) spread
out instead of coming back at the same moment. A ``Retry-After`` the
receiver asked for is honoured (up to ``max_retry_after``) and never come
early: its jitter only adds.
"""
from __future__ import annotations

import random
from typing import Callable, Optional, Sequence

# the share of a delay by which a retry may come earlier or later
JITTER = 0.2


def jitter() -> float:
    """A random share in [-JITTER, JITTER]."""
    return random.uniform(-JITTER, JITTER)


def delay(schedule: Sequence[float], attempts: int,
          retry_after: Optional[float], max_retry_after: float,
          draw: Callable[[], float] = jitter) -> Optional[float]:
    """Seconds until the next attempt after ``attempts`` attempts failed, or
    None when the schedule is used up.

    :param schedule: delays between attempts; its length is the number of
        retries
    :param retry_after: seconds the receiver asked to wait, if it did
    :param max_retry_after: the most a ``Retry-After`` is honoured
    :param draw: the jitter, a share in [-JITTER, JITTER]
    """
    if attempts > len(schedule):
        return None
    if retry_after is not None:
        asked = min(max(retry_after, 0.0), max_retry_after)
        return asked * (1 + abs(draw()))
    return max(0.0, schedule[attempts - 1] * (1 + draw()))
