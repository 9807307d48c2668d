"""WebhookSender: the webhook outbox's IO. Events in (never waiting), signed POSTs out.

- `observe(topic, payload)` (every MQTT out-publication, ringmaster.tasks and voicemail) and
  `emit(event)` (the call's end, callback requests) turn an event into one delivery per
  endpoint that wants its type. Each is written to the store's outbox table through the one
  writer, in the same transaction as the event's own record (Store.webhook_enqueue), and
  queued in memory (outbox.Outbox): calls never wait on a webhook.
- One task sends the deliveries that are due, at most `max_in_flight` per endpoint, each
  attempt bounded by the endpoint's `timeout` (aiohttp), redirects not followed. 2xx:
  delivered (the row is deleted); anything else: retried with backoff, or a dead letter
  (the row stays, state dead, until `retry()`). Every outcome is written through the writer.
- At start the store's pending rows come back in event order: a stop (or crash, or outage)
  loses nothing; a delivery cut by a stop is sent again after the start with the same
  webhook-id, so receivers that dedupe by it see each event once.
"""

from __future__ import annotations

import asyncio
import ssl
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import aiohttp
import structlog

from ringmaster.webhooks import signing
from ringmaster.webhooks.events import WebhookEvent, from_publication
from ringmaster.webhooks.outbox import Dead, Delivered, Delivery, Outbox, RetryAt

if TYPE_CHECKING:
    from ringmaster.config import Config, WebhookConfig
    from ringmaster.store import Store

log = structlog.get_logger("ringmaster.webhooks")

USER_AGENT = "ringmaster-webhooks/1"
ANSWER_MAX = 4096  # bytes of an answer read (its body is not used; reading lets the connection be reused)


@dataclass(frozen=True)
class EndpointStatus:
    """One endpoint as `status`, the API and /metrics show it: deliveries waiting (and the age of
    the oldest, seconds), in flight, dead letters, delivered and failed attempts since start,
    and the last failure."""

    name: str
    url: str
    pending: int
    in_flight: int
    dead: int
    delivered: int
    failed_attempts: int
    oldest_pending_seconds: float | None
    last_error: str

    def as_dict(self) -> dict[str, Any]:
        return {"url": self.url, "pending": self.pending, "in_flight": self.in_flight, "dead": self.dead,
                "delivered": self.delivered, "failed_attempts": self.failed_attempts,
                "oldest_pending_seconds": self.oldest_pending_seconds, "last_error": self.last_error or None}


class WebhookSender:
    """config: the live config (a reload may change the endpoints); store: the one writer."""

    def __init__(self, config: Callable[[], Config], store: Store, clock: Callable[[], float] = time.time):
        self.config = config
        self.store = store
        self.clock = clock
        self.outbox = Outbox()
        self.dead: Counter[str] = Counter()
        self.delivered: Counter[str] = Counter()
        self.failed_attempts: Counter[str] = Counter()
        self.last_error: dict[str, str] = {}
        self._states: dict[str, dict[str, Any]] = {}  # agent -> the last agent.state sent
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._attempts: set[asyncio.Task[None]] = set()
        self._session: aiohttp.ClientSession | None = None
        self._tls: dict[tuple[bool, str | None], ssl.SSLContext | bool] = {}
        self._sending = False
        self._started = False  # start() ran and stop() did not: a new delivery may start the task

    @property
    def enabled(self) -> bool:
        return bool(self.config().webhooks)

    # ------------------------------------------------------------ events in

    def observe(self, topic: str, payload: dict[str, Any]) -> None:
        """An MQTT out-publication (topic without prefix): queued if webhooks carry it."""
        if not self.config().webhooks:
            return
        if topic.startswith("agents/") and topic.endswith("/state"):
            # retained states are published again after every MQTT reconnect: an endpoint hears a change
            agent = topic.split("/")[1]
            if self._states.get(agent) == payload:
                return
            self._states[agent] = dict(payload)
        event = from_publication(topic, payload)
        if event is not None:
            self.emit(event)

    def emit(self, event: WebhookEvent) -> None:
        """Queue `event` for every endpoint that wants its type (stored with the event's record)."""
        hooks = self.config().webhooks
        body: bytes | None = None
        for name, spec in hooks.items():
            if not spec.wants(event.type):
                continue
            body = body if body is not None else event.body()
            self.store.webhook_enqueue(name, event.id, event.type, event.lane, body, event.at)
            self.outbox.add(Delivery(name, event.id, event.type, event.lane, body, event.at, event.at,
                                     next_at=event.at))
        if body is not None:
            self._run_if_needed()
            self._wake.set()

    def _run_if_needed(self) -> None:
        if self._started and not self._sending:
            self._sending = True
            self._task = asyncio.create_task(self._run(), name="webhooks")

    # ------------------------------------------------------------ start and stop

    async def start(self) -> None:
        """Deliveries a previous run left come back, in event order; then sending starts. Those of
        an endpoint no longer configured become dead letters (an admin retries them once it is back)."""
        rows = await self.store.webhook_pending()
        self.dead.update(await self.store.webhook_dead_counts())
        hooks = self.config().webhooks
        now = self.clock()
        gone = 0
        for r in rows:
            if r["webhook"] not in hooks:
                self.store.webhook_dead(r["webhook"], r["event_id"], r["attempts"], now, r["last_status"],
                                        "the webhook is no longer configured")
                self.dead[r["webhook"]] += 1
                gone += 1
                continue
            self.outbox.add(_delivery(r))
        if rows:
            log.info("webhooks.restored", pending=len(rows) - gone, dead_unconfigured=gone)
        self._started = True
        if len(self.outbox):
            self._run_if_needed()

    async def stop(self) -> None:
        """Stop sending: attempts in flight are cut (sent again after the next start). Events
        still come in and are stored until the store closes."""
        self._sending = self._started = False
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        for t in list(self._attempts):
            t.cancel()
        await asyncio.gather(*self._attempts, return_exceptions=True)
        if self._session is not None:
            await self._session.close()
            self._session = None

    # ------------------------------------------------------------ admin

    def retry(self, row: dict[str, Any]) -> str | None:
        """Send a dead letter again (row: reports.webhooks.dead_letter). Returns an error text, or None."""
        if row["webhook"] not in self.config().webhooks:
            return f"webhook {row['webhook']!r} is not configured: add it back to retry its dead letters"
        now = self.clock()
        d = _delivery(row)
        d.attempts, d.queued_at, d.next_at, d.last_error, d.last_status = 0, now, now, "", None
        if not self.outbox.add(d):
            return f"dead letter {row['id']} is being sent already"
        self.store.webhook_retried(int(row["id"]), now)
        self.dead[d.webhook] = max(0, self.dead[d.webhook] - 1)
        log.info("webhooks.retried", webhook=d.webhook, event_id=d.event_id, event_type=d.event, lane=d.lane)
        self._run_if_needed()
        self._wake.set()
        return None

    def status(self) -> dict[str, EndpointStatus]:
        now = self.clock()
        out = {}
        names = set(self.config().webhooks) | set(self.dead)
        for name in sorted(names):
            spec = self.config().webhooks.get(name)
            oldest = self.outbox.oldest(name)
            out[name] = EndpointStatus(name, spec.url if spec else "", self.outbox.pending(name),
                                       self.outbox.in_flight(name), self.dead[name], self.delivered[name],
                                       self.failed_attempts[name],
                                       round(now - oldest, 3) if oldest is not None else None,
                                       self.last_error.get(name, ""))
        return out

    # ------------------------------------------------------------ sending

    def _limits(self) -> dict[str, int]:
        return {name: spec.max_in_flight for name, spec in self.config().webhooks.items()}

    async def _run(self) -> None:
        while True:
            self._wake.clear()
            limits = self._limits()
            for d in self.outbox.take_due(self.clock(), limits):
                task = asyncio.create_task(self._attempt_logged(d))
                self._attempts.add(task)
                task.add_done_callback(self._attempts.discard)
            deadline = self.outbox.next_deadline(limits)
            timeout = None if deadline is None else max(0.0, deadline - self.clock())
            try:
                await asyncio.wait_for(self._wake.wait(), timeout)
            except TimeoutError:
                pass

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            # per-endpoint concurrency is max_in_flight (Outbox.take_due); this bounds the sockets overall
            self._session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=256),
                                                  headers={"User-Agent": USER_AGENT})
        return self._session

    def _ssl(self, spec: WebhookConfig) -> ssl.SSLContext | bool:
        key = (spec.tls.verify, spec.tls.ca_file)
        ctx = self._tls.get(key)
        if ctx is None:
            ctx = False if not spec.tls.verify else (
                ssl.create_default_context(cafile=spec.tls.ca_file) if spec.tls.ca_file else True)
            self._tls[key] = ctx
        return ctx

    async def _attempt_logged(self, d: Delivery) -> None:
        try:
            await self._attempt(d)
        except Exception:  # a bug here must not end the sender; the delivery stays stored
            log.exception("webhooks.attempt_error", webhook=d.webhook, event_id=d.event_id)

    async def _attempt(self, d: Delivery) -> None:
        spec = self.config().webhooks.get(d.webhook)
        if spec is None:
            self._record(self.outbox.give_up(d, "the webhook is no longer configured"))
            return
        status: int | None = None
        error = ""
        retry_after: float | None = None
        ts = int(self.clock())
        headers = {"Content-Type": "application/json",
                   **signing.headers(signing.secret_key(spec.secret), d.event_id, ts, d.body)}
        try:
            async with self._client().post(spec.url, data=d.body, headers=headers, ssl=self._ssl(spec),
                                           allow_redirects=False,
                                           timeout=aiohttp.ClientTimeout(total=spec.timeout)) as resp:
                status = resp.status
                retry_after = _retry_after(resp.headers.get("Retry-After"))
                await resp.content.read(ANSWER_MAX)
        except TimeoutError:
            error = f"no answer within {spec.timeout:g} s"
        except (aiohttp.ClientError, OSError, ssl.SSLError) as exc:
            error = f"{type(exc).__name__}: {exc}"
        ok = status is not None and 200 <= status < 300
        if status is not None and not ok:
            error = f"HTTP {status}"
        self._record(self.outbox.finished(d, self.clock(), ok, spec, status, error, retry_after))
        self._wake.set()

    def _record(self, outcome: Delivered | RetryAt | Dead) -> None:
        d = outcome.delivery
        where = {"webhook": d.webhook, "event_id": d.event_id, "event_type": d.event, "lane": d.lane,
                 "attempts": d.attempts}
        if isinstance(outcome, Delivered):
            self.store.webhook_delivered(d.webhook, d.event_id)
            self.delivered[d.webhook] += 1
            log.debug("webhooks.delivered", **where)
            return
        if d.attempts:
            self.failed_attempts[d.webhook] += 1
        self.last_error[d.webhook] = d.last_error
        if isinstance(outcome, RetryAt):
            self.store.webhook_attempted(d.webhook, d.event_id, d.attempts, outcome.at, d.last_status, d.last_error)
            log.info("webhooks.attempt_failed", **where, status=d.last_status, error=d.last_error,
                     retry_in=round(outcome.at - self.clock(), 2))
        else:
            self.store.webhook_dead(d.webhook, d.event_id, d.attempts, self.clock(), d.last_status,
                                    f"{outcome.reason}; last: {d.last_error}"[:500])
            self.dead[d.webhook] += 1
            log.error("webhooks.dead_letter", **where, status=d.last_status, error=d.last_error, reason=outcome.reason)


def _delivery(r: dict[str, Any]) -> Delivery:
    return Delivery(r["webhook"], r["event_id"], r["event"], r["lane"], str(r["body"]).encode(),
                    float(r["created_at"]), float(r["queued_at"]), int(r["attempts"]), float(r["next_at"]),
                    r["last_status"], r["last_error"] or "")


def _retry_after(value: str | None) -> float | None:
    """Retry-After as seconds (RFC 9110 10.2.3); an HTTP date or garbage: None."""
    if value is None or not value.strip().isdigit():
        return None
    return float(min(int(value.strip()), 86400))
