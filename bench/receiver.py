"""Slow and hung receivers for the benchmarks (a process of its own).

    python bench/receiver.py PORT HUNG_PORT DELAY_MS

- on 0.0.0.0:PORT an aiohttp server (on uvloop) answers every POST with 204
  after DELAY_MS milliseconds and notes when each ``webhook-id`` arrived.
  Any 127.x.y.z address reaches it, so each hook can have a receiver (a
  scheme, host and port) of its own.
- on 0.0.0.0:HUNG_PORT a listener accepts connections, reads what comes and
  never answers: a hung receiver.
- ``GET /_mark`` forgets the arrivals noted so far, ``GET /_count`` says how
  many there are, ``GET /_arrivals`` lists them: ``[[unix time, id], ...]``.

Only the benchmarks send to it, from this machine, on loopback.
"""
from __future__ import annotations

import asyncio
import json
import sys
import time

from aiohttp import web


def main() -> None:
    port, hung_port, delay_ms = (int(a) for a in sys.argv[1:4])
    delay = delay_ms / 1000.0
    arrivals: list[tuple[float, str]] = []

    async def hook(request: web.Request) -> web.Response:
        await request.read()
        if delay:
            await asyncio.sleep(delay)
        arrivals.append((time.time(), request.headers.get("webhook-id", "")))
        return web.Response(status=204)

    async def mark(request: web.Request) -> web.Response:
        arrivals.clear()
        return web.Response(text="ok")

    async def count(request: web.Request) -> web.Response:
        return web.Response(text=str(len(arrivals)))

    async def listing(request: web.Request) -> web.Response:
        return web.Response(text=json.dumps(arrivals))

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
        app.router.add_post("/{tail:.*}", hook)
        runner = web.AppRunner(app, access_log=None, keepalive_timeout=300)
        await runner.setup()
        await web.TCPSite(runner, "0.0.0.0", port, backlog=4096).start()
        await asyncio.start_server(hung, "0.0.0.0", hung_port, backlog=4096)
        print("READY", flush=True)
        # the benchmark stops it; an orphan stops within the hour
        await asyncio.sleep(3600)

    try:
        import uvloop
        uvloop.run(serve())
    except ImportError:
        asyncio.run(serve())


if __name__ == "__main__":
    main()
