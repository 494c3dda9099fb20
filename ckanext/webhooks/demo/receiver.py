"""DEMO HELPER: a tiny webhook receiver for trying ckanext-webhooks locally.

    python -m ckanext.webhooks.demo.receiver --port 8765 [--secret whsec_...]

It answers the ``webhook/verify`` challenge (so new hooks become active),
checks every delivery's signature with the ``standardwebhooks`` library and
prints one line per delivery. Without ``--secret`` it learns each hook's secret
by calling ``webhook_show`` on CKAN (``--ckan-url``) with the payload's
``hook_id``. Not part of the extension and not for production use.
"""
from __future__ import annotations

import argparse
import json
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import requests
from standardwebhooks import Webhook
from standardwebhooks.webhooks import WebhookVerificationError


class SecretBook:
    """Hook secrets: a fixed one, or looked up with webhook_show and cached."""

    def __init__(self, ckan_url: str, secret: str | None = None) -> None:
        self.ckan_url = ckan_url.rstrip("/")
        self.fixed = secret
        self._cache: dict[str, str] = {}

    def secret_for(self, hook_id: str, fresh: bool = False) -> str | None:
        if self.fixed:
            return self.fixed
        if not fresh and hook_id in self._cache:
            return self._cache[hook_id]
        try:
            answer = requests.post(
                self.ckan_url + "/api/3/action/webhook_show",
                json={"id": hook_id}, timeout=5).json()
        except (requests.RequestException, ValueError):
            return None
        if not answer.get("success"):
            return None
        self._cache[hook_id] = answer["result"]["secret"]
        return self._cache[hook_id]


def _verifies(secret: str, body: bytes, headers: dict) -> bool:
    try:
        Webhook(secret).verify(body, headers)
        return True
    except WebhookVerificationError:
        return False


def check_signature(book: SecretBook, hook_id: str, body: bytes,
                    headers: dict) -> str:
    """VERIFIED, BAD SIGNATURE or UNVERIFIED (no secret known)."""
    secret = book.secret_for(hook_id)
    if secret is None:
        return "UNVERIFIED"
    if _verifies(secret, body, headers):
        return "VERIFIED"
    # the secret may have been rotated since it was cached
    fresh = book.secret_for(hook_id, fresh=True)
    if fresh and fresh != secret and _verifies(fresh, body, headers):
        return "VERIFIED"
    return "BAD SIGNATURE"


def describe(data) -> str:
    if not isinstance(data, dict):
        return ""
    if "challenge" in data:
        return "challenge"
    return " ".join(str(data[k]) for k in ("id", "name") if data.get(k))


def make_handler(book: SecretBook):
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length)
            headers = {k.lower(): v for k, v in self.headers.items()}
            try:
                payload = json.loads(body)
                hook_id = str(payload["hook_id"])
            except (ValueError, KeyError, TypeError):
                return self._answer(400, b"not a webhook payload\n")
            verdict = check_signature(book, hook_id, body, headers)
            print("{}  {:13}  {:16}  hook={}  {}".format(
                time.strftime("%H:%M:%S"), verdict, payload.get("type"),
                hook_id, describe(payload.get("data"))), flush=True)
            if verdict == "BAD SIGNATURE":
                return self._answer(401, b"bad signature\n")
            if payload.get("type") == "webhook/verify":
                data = payload.get("data") or {}
                challenge = str(data.get("challenge", ""))
                return self._answer(200, challenge.encode())
            self._answer(204, b"")

        def _answer(self, status: int, body: bytes) -> None:
            self.send_response(status)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass  # one line per delivery is printed above

    return Handler


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8765)
    parser.add_argument("--secret", help="verify every delivery with this "
                        "whsec_... secret instead of asking CKAN")
    parser.add_argument("--ckan-url", default="http://127.0.0.1:5000")
    args = parser.parse_args(argv)
    book = SecretBook(args.ckan_url, args.secret)
    server = ThreadingHTTPServer((args.host, args.port), make_handler(book))
    print("demo receiver listening on http://{}:{}/".format(
        args.host, args.port), flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
