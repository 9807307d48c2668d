"""Standard Webhooks 1.0 signatures (standardwebhooks.com, "Signature scheme" and "Webhook
headers"): the symmetric scheme, HMAC-SHA256.

- The secret is `whsec_` + base64 of 24 to 64 random bytes; the key is those bytes.
- Signed content: `{webhook-id}.{webhook-timestamp}.{body}`, the body byte for byte as sent.
- Headers: `webhook-id` (the event's id, the same on every attempt: the receiver's idempotency
  key), `webhook-timestamp` (integer Unix seconds of this attempt), `webhook-signature`
  (`v1,` + base64 of the HMAC; a space-separated list, so a rotated secret can sign beside the
  new one).
A receiver recomputes the HMAC, compares in constant time and refuses a timestamp more than a
few minutes away from its clock (replays). The reference libraries (PyPI and npm
`standardwebhooks`) verify these headers as they are.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac

SECRET_PREFIX = "whsec_"
MIN_KEY_BYTES, MAX_KEY_BYTES = 24, 64  # the spec: "at least 24 bytes (192 bits), 512 maximum"
TOLERANCE_SECONDS = 300  # what the reference libraries accept either side of the receiver's clock


class SecretInvalid(ValueError):
    """A webhook secret that is not `whsec_` + base64 of 24-64 bytes; the message says why."""


class SignatureInvalid(ValueError):
    """A delivery whose headers do not verify (verify()); the message says why."""


def secret_key(secret: str) -> bytes:
    """The HMAC key of a `whsec_...` secret; SecretInvalid if it is not one."""
    if not secret.startswith(SECRET_PREFIX):
        raise SecretInvalid("a Standard Webhooks secret: whsec_ + base64 of 24-64 random bytes "
                            "(generate one with `echo whsec_$(openssl rand -base64 32)`)")
    try:
        key = base64.b64decode(secret[len(SECRET_PREFIX):], validate=True)
    except (binascii.Error, ValueError):
        raise SecretInvalid("the part after whsec_ is not valid base64") from None
    if not MIN_KEY_BYTES <= len(key) <= MAX_KEY_BYTES:
        raise SecretInvalid(f"the secret decodes to {len(key)} bytes; Standard Webhooks asks for "
                            f"{MIN_KEY_BYTES}-{MAX_KEY_BYTES}")
    return key


def sign(key: bytes, msg_id: str, timestamp: int, body: bytes) -> str:
    """The `webhook-signature` value for one attempt: `v1,<base64 HMAC-SHA256>`."""
    mac = hmac.new(key, f"{msg_id}.{timestamp}.".encode() + body, hashlib.sha256).digest()
    return "v1," + base64.b64encode(mac).decode()


def headers(key: bytes, msg_id: str, timestamp: int, body: bytes) -> dict[str, str]:
    """The three Standard Webhooks headers of one attempt."""
    return {"webhook-id": msg_id, "webhook-timestamp": str(timestamp),
            "webhook-signature": sign(key, msg_id, timestamp, body)}


def verify(secret: str, got: dict[str, str], body: bytes, now: float) -> str:
    """What a receiver does (docs/webhooks.md; used by `ringmaster` itself only in tests of the
    format): check the headers of a delivery against `secret`; returns the webhook-id, or raises
    SignatureInvalid. got: the request's headers (any case); now: the receiver's Unix time."""
    h = {k.lower(): v for k, v in got.items()}
    msg_id, ts, sigs = h.get("webhook-id", ""), h.get("webhook-timestamp", ""), h.get("webhook-signature", "")
    if not (msg_id and ts.isdigit() and sigs):
        raise SignatureInvalid("missing or malformed webhook-id, webhook-timestamp or webhook-signature")
    if abs(now - int(ts)) > TOLERANCE_SECONDS:
        raise SignatureInvalid("webhook-timestamp is too far from now (a replay?)")
    expected = sign(secret_key(secret), msg_id, int(ts), body)
    if not any(hmac.compare_digest(expected, s) for s in sigs.split(" ")):
        raise SignatureInvalid("no signature matches")
    return msg_id
