"""Slow and hung receivers for the benchmarks (a process of its own).

    python bench/receiver.py PORT HUNG_PORT DELAY_MS

- on 0.0.0.0:PORT an aiohttp server (on uvloop) answers every POST with 204
  after DELAY_MS milliseconds and notes when each ``webhook-id`` arrived.
  Any 127.x.y.z address reaches it, so each hook can have a receiver (a
  scheme, host and port) of its own; or all hooks can share one host and
  port, each with a path of its own (``/hook/<i>``).
- a POST to a path under ``/hang/`` on PORT is read and never answered: a
  hung path on a host whose other paths answer (it ends when the sender
  gives up and closes the connection).
- on 0.0.0.0:HUNG_PORT a listener accepts connections, reads what comes and
  never answers: a hung receiver (a host of its own).
- ``GET /_mark`` forgets the arrivals and the in-flight samples noted so
  far, ``GET /_count`` says how many arrivals there are, ``GET /_arrivals``
  lists them: ``[[unix time, id], ...]``.
- ``GET /_delay?ms=N`` answers the POSTs that arrive from then on after N
  milliseconds (those already waiting keep their delay).
- every 100 ms the number of POSTs in flight (arrived, not yet answered) is
  sampled; ``GET /_inflight`` lists the samples since the last mark:
  ``[[unix time, in flight, of them under /hang/], ...]``.

Only the benchmarks send to it, from this machine, on loopback.
"""
from __future__ import annotations

import asyncio
import collections
import json
import sys
import time

from aiohttp import web

# seconds between samples of the requests in flight, and the most kept
# (an hour)
SAMPLE_EVERY = 0.1
SAMPLES_KEPT = 36000


def main() -> None:
    port, hung_port, delay_ms = (int(a) for a in sys.argv[1:4])
    state = {"delay": delay_ms / 1000.0, "in_flight": 0, "hanging": 0}
    arrivals: list[tuple[float, str]] = []
    samples: collections.deque = collections.deque(maxlen=SAMPLES_KEPT)

    async def hook(request: web.Request) -> web.Response:
        state["in_flight"] += 1
        try:
            delay = state["delay"]
            await request.read()
            if delay:
                await asyncio.sleep(delay)
            arrivals.append((time.time(),
                             request.headers.get("webhook-id", "")))
            return web.Response(status=204)
        finally:
            state["in_flight"] -= 1

    async def hang(request: web.Request) -> web.Response:
        # cancelled when the sender closes the connection
        # (handler_cancellation below)
        state["in_flight"] += 1
        state["hanging"] += 1
        try:
            await request.read()
            await asyncio.Event().wait()
            raise AssertionError("not reached")
        finally:
            state["in_flight"] -= 1
            state["hanging"] -= 1

    async def mark(request: web.Request) -> web.Response:
        arrivals.clear()
        samples.clear()
        return web.Response(text="ok")

    async def count(request: web.Request) -> web.Response:
        return web.Response(text=str(len(arrivals)))

    async def listing(request: web.Request) -> web.Response:
        return web.Response(text=json.dumps(arrivals))

    async def set_delay(request: web.Request) -> web.Response:
        state["delay"] = int(request.query["ms"]) / 1000.0
        return web.Response(text="ok")

    async def in_flight(request: web.Request) -> web.Response:
        return web.Response(text=json.dumps(list(samples)))

    async def sample() -> None:
        while True:
            samples.append((round(time.time(), 3), state["in_flight"],
                            state["hanging"]))
            await asyncio.sleep(SAMPLE_EVERY)

    async def hung(reader: asyncio.StreamReader,
                   writer: asyncio.StreamWriter) -> None:
        try:
            while await reader.read(65536):
                pass
        finally:
            writer.close()

    async def serve() -> None:
        app = web.Application(client_max_size=1 << 20)
        app.router.add_get("/_mark", mark)
        app.router.add_get("/_count", count)
        app.router.add_get("/_arrivals", listing)
        app.router.add_get("/_delay", set_delay)
        app.router.add_get("/_inflight", in_flight)
        app.router.add_post("/hang/{tail:.*}", hang)
        app.router.add_post("/{tail:.*}", hook)
        runner = web.AppRunner(app, access_log=None, keepalive_timeout=300,
                               handler_cancellation=True)
        await runner.setup()
        await web.TCPSite(runner, "0.0.0.0", port, backlog=4096).start()
        await asyncio.start_server(hung, "0.0.0.0", hung_port, backlog=4096)
        sampler = asyncio.create_task(sample())
        print("READY", flush=True)
        # the benchmark stops it; an orphan stops within the hour
        await asyncio.sleep(3600)
        sampler.cancel()

    try:
        import uvloop
        uvloop.run(serve())
    except ImportError:
        asyncio.run(serve())


if __name__ == "__main__":
    main()
