"""The webhook outbox's decisions, without IO: which delivery goes next, when a failed one is
tried again, and when one is given up (a dead letter).

- A delivery is one event for one endpoint. Deliveries of one lane (an endpoint and a call,
  task or agent) leave one at a time, oldest first: a later event for the same call waits
  until the earlier one is delivered or dead. Different lanes go in parallel, at most
  `max_in_flight` at once per endpoint.
- A failed attempt is tried again after an exponential backoff with "equal jitter" (AWS
  Architecture Blog, "Exponential Backoff And Jitter", 2015): the n-th retry waits
  d/2 + uniform(0, d/2), d = min(backoff_max, backoff_initial * 2^(n-1)), so endpoints that
  fail together do not get their retries back in one burst. A Retry-After the endpoint sends
  (RFC 9110 10.2.3) is the least wait, up to backoff_max. Standard Webhooks recommends both.
- A delivery is dead after `max_attempts` attempts, when its next attempt would fall past
  `max_age_hours` after its event (or its admin retry), or at once on 410 Gone (Standard
  Webhooks: the receiver wants no more). Dead letters stay in the store until retried.
Time is passed in (epoch seconds); the random source is passed in (seeded in tests).
"""

from __future__ import annotations

import heapq
import itertools
import random
from collections import Counter, deque
from dataclasses import dataclass, field

from ringmaster.config import WebhookConfig


@dataclass(eq=False)
class Delivery:
    """One event for one endpoint. webhook: the endpoint's name; event_id: the webhook-id;
    lane: call:ID, task:ID or agent:ID; body: the exact bytes sent; created_at: the event's
    time; queued_at: when this delivery (or its admin retry) began, the start of max age;
    attempts: made so far; next_at: the earliest next attempt (epoch seconds)."""

    webhook: str
    event_id: str
    event: str
    lane: str
    body: bytes
    created_at: float
    queued_at: float
    attempts: int = 0
    next_at: float = 0.0
    last_status: int | None = None
    last_error: str = ""
    released: bool = False  # delivered or dead: no longer held by the outbox

    @property
    def key(self) -> tuple[str, str]:
        return (self.webhook, self.event_id)


@dataclass(frozen=True)
class Delivered:
    delivery: Delivery


@dataclass(frozen=True)
class RetryAt:
    """Tried again at `at` (epoch seconds)."""

    delivery: Delivery
    at: float


@dataclass(frozen=True)
class Dead:
    """Given up: `reason` says why (attempts, age, gone, not configured)."""

    delivery: Delivery
    reason: str


Outcome = Delivered | RetryAt | Dead


def backoff(retry: int, initial: float, maximum: float, rng: random.Random) -> float:
    """Seconds before retry number `retry` (1 = the first retry), with equal jitter."""
    d = min(maximum, initial * 2 ** min(retry - 1, 60))
    return d / 2 + rng.uniform(0, d / 2)


@dataclass
class _Endpoint:
    heap: list[tuple[float, int, str]] = field(default_factory=list)  # (next_at, seq, lane) of lane heads
    in_flight: int = 0


class Outbox:
    """The deliveries not yet made, by lane. add() in event order; take_due() hands out the
    ones to attempt now (marked in flight); finished() says what became of one."""

    def __init__(self, rng: random.Random | None = None):
        self.rng = rng or random.Random()
        self.lanes: dict[tuple[str, str], deque[Delivery]] = {}
        self.endpoints: dict[str, _Endpoint] = {}
        self.keys: set[tuple[str, str]] = set()  # (webhook, event_id) of every delivery held
        self._seq = itertools.count()
        self._count: Counter[str] = Counter()  # deliveries held per endpoint
        # per endpoint, (queued_at, event_id) in the order added: the oldest still held is at the
        # left once the ones gone are dropped (amortized O(1) for status pages and /metrics)
        self._ages: dict[str, deque[Delivery]] = {}

    def __len__(self) -> int:
        return len(self.keys)

    def pending(self, webhook: str) -> int:
        return self._count[webhook]

    def oldest(self, webhook: str) -> float | None:
        """When the longest-waiting delivery for `webhook` was queued (epoch seconds; None: none)."""
        ages = self._ages.get(webhook)
        while ages and ages[0].released:
            ages.popleft()
        return ages[0].queued_at if ages else None

    def in_flight(self, webhook: str) -> int:
        ep = self.endpoints.get(webhook)
        return ep.in_flight if ep else 0

    def add(self, d: Delivery) -> bool:
        """Queue d behind its lane's earlier deliveries; False if it is held already."""
        if d.key in self.keys:
            return False
        self.keys.add(d.key)
        self._count[d.webhook] += 1
        d.released = False
        self._ages.setdefault(d.webhook, deque()).append(d)
        q = self.lanes.setdefault((d.webhook, d.lane), deque())
        q.append(d)
        if len(q) == 1:
            self._schedule(d)
        return True

    def _schedule(self, d: Delivery) -> None:
        ep = self.endpoints.setdefault(d.webhook, _Endpoint())
        heapq.heappush(ep.heap, (d.next_at, next(self._seq), d.lane))

    def take_due(self, now: float, limit: dict[str, int]) -> list[Delivery]:
        """The lane heads due at `now`, at most limit[webhook] in flight per endpoint (an
        endpoint not in limit: 1), marked in flight."""
        out = []
        for webhook, ep in self.endpoints.items():
            cap = limit.get(webhook, 1)
            while ep.heap and ep.in_flight < cap and ep.heap[0][0] <= now:
                _, _, lane = heapq.heappop(ep.heap)
                q = self.lanes.get((webhook, lane))
                if not q:
                    continue
                ep.in_flight += 1
                out.append(q[0])
        return out

    def next_deadline(self, limit: dict[str, int]) -> float | None:
        """When the next delivery becomes due on an endpoint with room (None: nothing to wait for
        but a delivery in flight to finish, or a new one)."""
        times = [ep.heap[0][0] for w, ep in self.endpoints.items() if ep.heap and ep.in_flight < limit.get(w, 1)]
        return min(times, default=None)

    def finished(self, d: Delivery, now: float, ok: bool, spec: WebhookConfig | None, status: int | None = None,
                 error: str = "", retry_after: float | None = None) -> Outcome:
        """The attempt of d (taken by take_due) ended: ok (a 2xx), or not with the status (None:
        no answer) and the error. spec: the endpoint's config now (None: no longer configured)."""
        self.endpoints[d.webhook].in_flight -= 1
        d.attempts += 1
        d.last_status, d.last_error = status, error[:500]
        outcome: Outcome
        if ok:
            outcome = Delivered(d)
        elif spec is None:
            outcome = Dead(d, "the webhook is no longer configured")
        elif status == 410:
            outcome = Dead(d, "the endpoint answered 410 Gone")
        elif d.attempts >= spec.max_attempts:
            outcome = Dead(d, f"{d.attempts} attempts failed (max_attempts)")
        else:
            wait = backoff(d.attempts, spec.backoff_initial, spec.backoff_max, self.rng)
            if retry_after is not None:
                wait = max(wait, min(retry_after, spec.backoff_max))
            if now + wait - d.queued_at > spec.max_age_hours * 3600:
                outcome = Dead(d, f"not delivered within {spec.max_age_hours:g} h (max_age_hours)")
            else:
                d.next_at = now + wait
                self._schedule(d)
                return RetryAt(d, d.next_at)
        self._remove_head(d)
        return outcome

    def give_up(self, d: Delivery, reason: str) -> Dead:
        """A delivery taken by take_due that cannot be attempted (its endpoint is gone)."""
        self.endpoints[d.webhook].in_flight -= 1
        d.last_error = reason
        self._remove_head(d)
        return Dead(d, reason)

    def _remove_head(self, d: Delivery) -> None:
        q = self.lanes[(d.webhook, d.lane)]
        assert q[0] is d
        q.popleft()
        self.keys.discard(d.key)
        self._count[d.webhook] -= 1
        d.released = True
        if q:
            self._schedule(q[0])
        else:
            del self.lanes[(d.webhook, d.lane)]
