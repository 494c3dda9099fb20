"""The baseline: a plain asyncio client posting the same signed bodies.

    python bench/client.py MESSAGES.json CONCURRENCY

MESSAGES.json is ``[[message id, body, address, secret], ...]`` (the
messages a worker has just delivered). Every message is signed as the
worker signs it (Standard Webhooks, at the time it is sent) and posted with
aiohttp, CONCURRENCY in flight, each on its own receiver's keep-alive
connections. Prints ``{"seconds": ..., "sent": ..., "failed": ...}``.
"""
from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import sys
import time

import aiohttp


def sign(message_id: str, timestamp: int, body: str, secret: str) -> str:
    key = base64.b64decode(secret.removeprefix("whsec_"))
    content = "{}.{}.{}".format(message_id, timestamp, body).encode()
    return "v1," + base64.b64encode(
        hmac.digest(key, content, hashlib.sha256)).decode()


async def run(messages: list, concurrency: int) -> dict:
    connector = aiohttp.TCPConnector(limit=0, limit_per_host=0)
    failed = 0
    queue = iter(messages)
    async with aiohttp.ClientSession(
            connector=connector, trust_env=False,
            timeout=aiohttp.ClientTimeout(total=10)) as session:

        async def one_by_one() -> None:
            nonlocal failed
            for message_id, body, address, secret in queue:
                timestamp = int(time.time())
                try:
                    async with session.post(address, data=body.encode(),
                                            headers={
                        "Content-Type": "application/json",
                        "User-Agent": "bench-client",
                        "webhook-id": message_id,
                        "webhook-timestamp": str(timestamp),
                        "webhook-signature": sign(message_id, timestamp,
                                                  body, secret),
                    }, allow_redirects=False) as response:
                        await response.read()
                        if not 200 <= response.status < 300:
                            failed += 1
                except (aiohttp.ClientError, asyncio.TimeoutError):
                    failed += 1

        started = time.time()
        await asyncio.gather(*(one_by_one() for _ in range(concurrency)))
        elapsed = time.time() - started
    return {"started": started, "seconds": elapsed, "sent": len(messages),
            "failed": failed}


def main() -> None:
    with open(sys.argv[1]) as f:
        messages = json.load(f)
    print(json.dumps(asyncio.run(run(messages, int(sys.argv[2])))))


if __name__ == "__main__":
    main()
