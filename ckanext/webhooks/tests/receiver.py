"""A real HTTP receiver on loopback for the tests.

It records every request it gets and answers from a script of responses
(status, body, headers), by default 204.
"""
from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable, Optional

from standardwebhooks import Webhook


@dataclass
class Received:
    path: str
    headers: dict
    body: bytes
    # its place among all requests, in the order they arrived
    number: int = field(default=0, compare=False)
    # the sender's address and port (which connection it came on)
    client: tuple = field(default=(), compare=False)
    # when it arrived (time.monotonic())
    at: float = field(default=0.0, compare=False)

    @property
    def json(self) -> dict:
        return json.loads(self.body)

    def verify(self, secret: str) -> dict:
        """Check the signature as a receiver would, with the library."""
        return Webhook(secret).verify(self.body, self.headers)


@dataclass
class Answer:
    status: int = 204
    body: bytes = b""
    headers: dict = field(default_factory=dict)
    delay: float = 0.0


def echo_challenge(got: Received) -> Answer:
    """Answers a verification challenge with its token, anything else with
    204: a receiver that verifies, ``receiver.always(path, echo_challenge)``.
    """
    if got.json["type"] != "webhook/verify":
        return Answer(204)
    return Answer(200, got.json["data"]["challenge"].encode())


class Receiver:
    def __init__(self) -> None:
        # the requests answered, in the order they arrived: an answer may
        # reach the sender (and the next request come and be answered)
        # before this server's thread notes it, so the order of answering
        # is no order the sender made
        self.requests: list[Received] = []
        # every request as soon as it arrived, before it was answered
        self.arrived: list[Received] = []
        self._answers: dict[str, list[Answer]] = {}
        self._default: dict[str, Callable[[Received], Answer]] = {}
        self._lock = threading.Condition()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                length = int(self.headers.get("Content-Length") or 0)
                got = Received(self.path, {k.lower(): v for k, v in
                                           self.headers.items()},
                               self.rfile.read(length),
                               client=tuple(self.client_address),
                               at=time.monotonic())
                with receiver._lock:
                    got.number = len(receiver.arrived)
                    receiver.arrived.append(got)
                    receiver._lock.notify_all()
                answer = receiver._answer_for(got)
                if answer.delay:
                    time.sleep(answer.delay)
                self.send_response(answer.status)
                for key, value in answer.headers.items():
                    self.send_header(key, value)
                self.send_header("Content-Length", str(len(answer.body)))
                self.end_headers()
                self.wfile.write(answer.body)
                with receiver._lock:
                    answered = receiver.requests
                    place = len(answered)
                    while place and answered[place - 1].number > got.number:
                        place -= 1
                    answered.insert(place, got)
                    receiver._lock.notify_all()

            def log_message(self, *args):
                pass

        class Server(ThreadingHTTPServer):
            # a burst of connections at once (many hooks on this one host)
            # must not overflow the listen backlog: a dropped SYN is sent
            # again only after a second
            request_queue_size = 256

        self.server = Server(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever,
                                       daemon=True)
        self.thread.start()

    def url(self, path: str = "/hook") -> str:
        return "http://127.0.0.1:{}{}".format(self.server.server_port, path)

    def answer(self, path: str, *answers: Answer) -> None:
        """Answer the next requests on ``path`` with these, in order."""
        self._answers.setdefault(path, []).extend(answers)

    def always(self, path: str, make: Callable[[Received], Answer]) -> None:
        self._default[path] = make

    def _answer_for(self, got: Received) -> Answer:
        path = got.path
        if self._answers.get(path):
            return self._answers[path].pop(0)
        if path in self._default:
            return self._default[path](got)
        return Answer()

    def on(self, path: str) -> list[Received]:
        return [r for r in self.requests if r.path == path]

    def wait_for(self, count: int, path: Optional[str] = None,
                 timeout: float = 10.0, arrived: bool = False
                 ) -> list[Received]:
        """Wait until ``count`` requests were answered (or just arrived)."""
        deadline = time.monotonic() + timeout
        with self._lock:
            while True:
                pool = self.arrived if arrived else self.requests
                got = [r for r in pool if path is None or r.path == path]
                if len(got) >= count or time.monotonic() > deadline:
                    return got
                self._lock.wait(0.05)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
