"""The delivery pipeline: from a committed event to attempts on the wire.

One module a step:

- ``matching``: an event becomes one pending message per matching hook.
- ``claiming``: due messages are leased with a row lock (``FOR UPDATE SKIP
  LOCKED``), so several workers never send the same attempt twice.
- ``composing``: what each claimed message carries, judged for its hook's
  owner at this attempt (access), and where it goes (the vetted address).
- ``payloads``: helper processes that compute the payloads of many events
  (a harvest, a bulk edit) beside the worker.
- ``sending``: the HTTP transport (aiohttp), the pin to the vetted IP and one
  deadline around each whole attempt.
- ``outcomes``: what an answer means: success, retry, the stale-hook rules,
  the circuit breaker, the attempt log.
- ``engine``: the loop that keeps hundreds of attempts in flight, a bounded
  number per receiver, claiming more as attempts finish.
- ``listening``: wakes the engine the moment an event or a message commits.
- ``sweep``: tidying up (unverified and failing hooks, old records).

PostgreSQL is the source of truth: a worker finds its work there, so a lost
Redis job, a Redis outage or a killed worker loses nothing.
"""
