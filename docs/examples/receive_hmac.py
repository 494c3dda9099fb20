"""Verify a ckanext-webhooks delivery by hand, with the standard library.

Usage (tested by the project's test suite):
    python receive_hmac.py SECRET < request.json
where request.json is {"headers": {...}, "body": "<raw body>"}.
"""
import base64
import hashlib
import hmac
import json
import sys
import time

TOLERANCE = 5 * 60  # seconds; refuse replays of old messages


def verify(secret: str, headers: dict, body: bytes) -> dict:
    headers = {k.lower(): v for k, v in headers.items()}
    msg_id = headers["webhook-id"]
    timestamp = headers["webhook-timestamp"]
    if abs(time.time() - int(timestamp)) > TOLERANCE:
        raise ValueError("timestamp too old or too new")
    key = base64.b64decode(secret.removeprefix("whsec_"))
    signed = msg_id.encode() + b"." + timestamp.encode() + b"." + body
    expected = base64.b64encode(
        hmac.new(key, signed, hashlib.sha256).digest()).decode()
    # during a secret rotation there are two signatures, space separated
    for signature in headers["webhook-signature"].split(" "):
        version, _, value = signature.partition(",")
        if version == "v1" and hmac.compare_digest(value, expected):
            return json.loads(body)
    raise ValueError("no valid signature")


if __name__ == "__main__":
    request = json.load(sys.stdin)
    payload = verify(sys.argv[1], request["headers"],
                     request["body"].encode())
    print("OK", payload["type"], payload["id"])
