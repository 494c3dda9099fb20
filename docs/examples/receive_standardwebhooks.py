"""Verify a ckanext-webhooks delivery with the `standardwebhooks` library.

    pip install standardwebhooks

Usage (tested by the project's test suite):
    python receive_standardwebhooks.py SECRET < request.json
where request.json is {"headers": {...}, "body": "<raw body>"}.
"""
import json
import sys

from standardwebhooks import Webhook


def verify(secret: str, headers: dict, body: bytes) -> dict:
    # raises standardwebhooks.WebhookVerificationError when the signature
    # is wrong or the timestamp is more than 5 minutes off
    return Webhook(secret).verify(body, headers)


if __name__ == "__main__":
    request = json.load(sys.stdin)
    payload = verify(sys.argv[1], request["headers"],
                     request["body"].encode())
    print("OK", payload["type"], payload["id"])
