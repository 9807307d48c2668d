"""Upstream registrations (company PBX / SIP trunk): state, backoff, and which worker holds them.

A worker's pjsua2 account sends the REGISTER with its Contact forced to the edge's address,
so the PBX sends calls to the edge, never to a worker. pjsua2 refreshes before expiry by
itself; retries after a failure are decided here with exponential backoff, and a rejected
password is one clear error, retried only slowly (no storm at the PBX, no account lockout).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from ringmaster.config import UpstreamRegistration

BACKOFF_FIRST = 2.0
BACKOFF_MAX = 300.0
AUTH_FAILED_RETRY = 600.0


@dataclass
class RegistrationState:
    spec: UpstreamRegistration
    contact: str
    state: str = "unregistered"  # unregistered | registering | registered | failed | auth_failed
    worker: str = ""
    code: int = 0
    reason: str = ""
    expires: int = 0
    failures: int = 0
    retry_at: float | None = None
    since: float = field(default_factory=time.time)

    def as_dict(self) -> dict[str, object]:
        return {"name": self.spec.name, "registrar": self.spec.registrar, "aor": self.spec.address_of_record,
                "contact": self.contact, "state": self.state, "worker": self.worker, "code": self.code,
                "reason": self.reason, "expires": self.expires, "failures": self.failures,
                "retry_in": round(self.retry_at - time.monotonic(), 1) if self.retry_at else None}

    def on_result(self, code: int, reason: str, expires: int, registered: bool, auth_failed: bool,
                  now: float) -> str:
        """Record a REGISTER outcome; returns the log event name for it."""
        self.code, self.reason, self.expires = code, reason, expires
        self.since = time.time()
        if registered and 200 <= code < 300:
            self.state, self.failures, self.retry_at = "registered", 0, None
            return "registration.ok"
        if code == 200 and not registered:  # our own un-REGISTER went through
            self.state = "unregistered"
            return "registration.removed"
        self.failures += 1
        if auth_failed:
            self.state = "auth_failed"
            self.retry_at = now + AUTH_FAILED_RETRY
            return "registration.auth_failed"
        self.state = "failed"
        self.retry_at = now + min(BACKOFF_FIRST * 2 ** (self.failures - 1), BACKOFF_MAX)
        return "registration.failed"
