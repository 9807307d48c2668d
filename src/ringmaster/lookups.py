"""HTTP lookups for `http` flow steps: one configured endpoint, the call's values, an answer
within the endpoint's timeout, whatever the service does.

- GET puts the values in the URL's query (url-encoded), POST sends them as a JSON object;
  the URL itself is the config's (HttpEndpoint), and redirects are not followed, so no
  caller input and no answer can send the request anywhere else.
- `timeout` bounds the whole lookup, retries included: the caller never waits longer.
  Connection failures, 429 and 5xx are retried (`retries`, `retry_delay` apart) while time
  is left; other statuses are answers.
- Authentication: `Authorization: Bearer <token>` (RFC 6750), and/or an HMAC-SHA256
  signature of the request, as webhook receivers check them (Stripe, Slack, GitHub):
  `X-Ringmaster-Timestamp: <unix seconds>` and
  `X-Ringmaster-Signature: sha256=<hex HMAC(secret, "<timestamp>." + payload)>`, where the
  payload is the JSON body (POST) or the raw query string (GET). A receiver recomputes it
  and refuses old timestamps (replays).
- TLS (https): the system's CAs, or `tls.ca_file`; `tls.verify: false` only for tests.
- `X-Ringmaster-Call-Id` names the call, for the service's logs.
The answer must be a JSON object of at most `max_bytes` (ringmaster.inputs.json_object
bounds its depth and numbers); anything else is an error.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import ssl
import time
from typing import Any

import aiohttp
import structlog
from yarl import URL

from ringmaster import inputs
from ringmaster.config import HttpEndpoint
from ringmaster.flows.actions import HttpAnswered

log = structlog.get_logger("ringmaster.lookups")

USER_AGENT = "ringmaster-lookup/1"
RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})


def signature(secret: str, timestamp: str, payload: bytes) -> str:
    """The X-Ringmaster-Signature value for a request: sha256=<hex>."""
    mac = hmac.new(secret.encode(), timestamp.encode() + b"." + payload, hashlib.sha256)
    return "sha256=" + mac.hexdigest()


class LookupClient:
    """Runs lookups on one aiohttp session (connections kept alive between calls)."""

    def __init__(self) -> None:
        self._session: aiohttp.ClientSession | None = None
        self._tls: dict[tuple[bool, str | None], ssl.SSLContext | bool] = {}

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            # per-host limit: a slow CRM must not take every socket of the controller
            self._session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=100, limit_per_host=20),
                                                  headers={"User-Agent": USER_AGENT})
        return self._session

    def _ssl(self, ep: HttpEndpoint) -> ssl.SSLContext | bool:
        key = (ep.tls.verify, ep.tls.ca_file)
        ctx = self._tls.get(key)
        if ctx is None:
            if not ep.tls.verify:
                ctx = False
            elif ep.tls.ca_file:
                ctx = ssl.create_default_context(cafile=ep.tls.ca_file)
            else:
                ctx = True
            self._tls[key] = ctx
        return ctx

    async def request(self, ep: HttpEndpoint, values: dict[str, str], call_id: str = "") -> HttpAnswered:
        """Call ep with values; never raises for what the service or the network does."""
        attempts = ep.retries + 1
        last = HttpAnswered("error", detail="not tried")
        try:
            async with asyncio.timeout(ep.timeout):
                for attempt in range(attempts):
                    last, retry = await self._once(ep, values, call_id)
                    if not retry or attempt + 1 == attempts:
                        return last
                    await asyncio.sleep(ep.retry_delay)
        except TimeoutError:
            return HttpAnswered("timeout", status=last.status,
                                detail=f"no answer within {ep.timeout:g} s"
                                       + (f" (before: {last.detail})" if last.detail != "not tried" else ""))
        return last

    async def _once(self, ep: HttpEndpoint, values: dict[str, str], call_id: str) -> tuple[HttpAnswered, bool]:
        """(answer, worth retrying)."""
        headers = {"Accept": "application/json", **ep.headers}
        if call_id:
            headers["X-Ringmaster-Call-Id"] = call_id
        url = URL(ep.url)
        body: bytes | None = None
        if ep.method == "GET":
            url = url.extend_query(values) if values else url
            payload = url.raw_query_string.encode()
        else:
            body = json.dumps(values, ensure_ascii=False, separators=(",", ":")).encode()
            headers["Content-Type"] = "application/json"
            payload = body
        if ep.bearer_token:
            headers["Authorization"] = f"Bearer {ep.bearer_token}"
        if ep.hmac_secret:
            ts = str(int(time.time()))
            headers["X-Ringmaster-Timestamp"] = ts
            headers["X-Ringmaster-Signature"] = signature(ep.hmac_secret, ts, payload)
        try:
            async with self._client().request(ep.method, url, data=body, headers=headers, ssl=self._ssl(ep),
                                              allow_redirects=False) as resp:
                raw = await resp.content.read(ep.max_bytes + 1)
                status = resp.status
        except (aiohttp.ClientError, OSError, ssl.SSLError) as exc:
            return HttpAnswered("error", detail=f"{type(exc).__name__}: {exc}"[:300]), True
        if not 200 <= status < 300:
            return HttpAnswered("error", status=status, detail=f"HTTP {status}"), status in RETRY_STATUSES
        if len(raw) > ep.max_bytes:
            return HttpAnswered("error", status=status, detail=f"answer larger than {ep.max_bytes} bytes"), False
        try:
            data: dict[str, Any] = inputs.json_object(raw, max_bytes=ep.max_bytes)
        except inputs.InputRefused as exc:
            return HttpAnswered("error", status=status, detail=f"answer: {exc}"), False
        return HttpAnswered("ok", status=status, data=data), False
