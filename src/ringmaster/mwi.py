"""Message-waiting indication: RFC 3842 message-summary over RFC 6665 subscriptions.

An agent's softphone SUBSCRIBEs to `message-summary` for its own AOR. The edge (Kamailio,
route[MWI] in edge/kamailio.cfg.tmpl) checks its digest credentials as for a REGISTER, answers
200 itself (its own To tag, Expires, Contact) and reports the dialog on the events channel
(`mwi-subscribe`). This module keeps those dialogs and has the edge send each NOTIFY in them
(a message on that events connection; the edge's `t_uac_send()`, a transaction of its own):
one at once (RFC 6665 4.2.1.2), one
whenever the agent's counts change (a message left, heard, new again, deleted, expired), and a
final one with `Subscription-State: terminated` when the phone unsubscribes (Expires: 0) or
the subscription runs out. The edge keeps no subscription state: a phone's refresh (an
in-dialog SUBSCRIBE) is answered and reported like the first one, so a restarted daemon learns
its subscriptions back at the phones' next refresh.

Why not Kamailio's presence/presence_mwi/pua modules: they need a package the edge does not
install (kamailio-presence-modules), a database for presentities and watchers, and a PUBLISH
path from the controller; the counts live in the controller's store anyway. See docs/voicemail.md.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import structlog

log = structlog.get_logger("ringmaster.mwi")

MAX_SUBSCRIPTIONS = 10_000  # in all: a bound on memory
CSEQ_EPOCH = 1_672_531_200  # 2023-01-01: see on_event
PER_USER = 4  # a phone that subscribes anew without ending its old dialogs keeps its newest 4
# what a value from the edge may hold: SIP tokens, URIs and host:port, no quotes, no spaces
_SAFE = re.compile(r"^[A-Za-z0-9!#$%&'()*+,\-./:;=?@\[\]_~^{}]{1,512}$")  # no '|': the edge's field separator
_URI = re.compile(r"^sips?:[^\s<>\"|]+$")


@dataclass
class Subscription:
    """One message-summary subscription dialog, seen from the notifier (the edge).

    from_uri/from_tag: the subscriber's (the phone's) From; to_uri/to_tag: the SUBSCRIBE's To
    (our side's tag, chosen by the edge); contact: where NOTIFYs go (the phone's Contact),
    source: the address the SUBSCRIBE came from (NOTIFYs are sent there: NAT, and never to a
    third party); expires_at: epoch seconds; cseq: our last NOTIFY's CSeq."""

    user: str
    call_id: str
    from_uri: str
    from_tag: str
    to_uri: str
    to_tag: str
    contact: str
    source: str
    proto: str
    expires_at: float
    cseq: int = 0

    @property
    def key(self) -> tuple[str, str]:
        return self.call_id, self.from_tag


def parse_event(event: dict[str, Any], now: float) -> tuple[Subscription, int]:
    """(subscription, requested expires seconds) from the edge's `mwi-subscribe` event; ValueError
    if a field is missing or not what the edge's checks let through."""
    def field(name: str, pattern: re.Pattern[str] = _SAFE) -> str:
        v = event.get(name)
        if not isinstance(v, str) or not pattern.match(v):
            raise ValueError(f"mwi-subscribe: bad {name}: {v!r}")
        return v

    expires = event.get("expires")
    if not isinstance(expires, int) or not 0 <= expires <= 86400:
        raise ValueError(f"mwi-subscribe: bad expires: {expires!r}")
    proto = field("proto").lower()
    if proto not in ("udp", "tcp"):
        raise ValueError(f"mwi-subscribe: bad proto: {proto!r}")
    sub = Subscription(user=field("user"), call_id=field("call_id"), from_uri=field("from_uri", _URI),
                       from_tag=field("from_tag"), to_uri=field("to_uri", _URI), to_tag=field("to_tag"),
                       contact=field("contact", _URI), source=field("source"), proto=proto,
                       expires_at=now + expires)
    return sub, expires


def summary_body(account: str, new: int, old: int) -> str:
    """An application/simple-message-summary body (RFC 3842 5.2)."""
    return (f"Messages-Waiting: {'yes' if new else 'no'}\r\nMessage-Account: {account}\r\n"
            f"Voice-Message: {new}/{old} (0/0)\r\n")


class MwiNotifier:
    """The subscriptions and their NOTIFYs.

    send(message): to the edge's events connection (EdgeEvents.send); counts(user) -> (new, heard) for the softphone
    user, or None if the user is no agent with voicemail; edge_uri: the edge's SIP URI
    (Contact of our side, host of Message-Account)."""

    def __init__(self, send: Callable[[str], None], counts: Callable[[str], Awaitable[tuple[int, int] | None]],
                 edge_host: str, edge_port: int, clock: Callable[[], float] = time.time):
        self.send = send
        self.counts = counts
        self.edge = f"{edge_host}:{edge_port}"
        self.clock = clock
        self.subs: dict[tuple[str, str], Subscription] = {}
        self._dirty: dict[tuple[str, str], str] = {}  # key -> subscription-state to send
        self._terminated: dict[tuple[str, str], Subscription] = {}
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.sent = 0
        self.failed = 0

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="mwi")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    # ------------------------------------------------------------ in

    def on_event(self, event: dict[str, Any]) -> None:
        """An `mwi-subscribe` event from the edge (a new subscription, a refresh, an unsubscribe)."""
        now = self.clock()
        try:
            sub, expires = parse_event(event, now)
        except ValueError as exc:
            log.warning("mwi.bad_event", error=str(exc))
            return
        old = self.subs.get(sub.key)
        if old is not None:
            sub.cseq = old.cseq  # the same dialog: our CSeq goes on rising
        elif event.get("refresh") == 1:
            # a dialog from before a restart: the phone has seen our CSeqs from 1 up and answers
            # a lower one 500 (RFC 3261 12.2.2); seconds since 2023 are above any count of NOTIFYs
            # one run sends (fewer than one a second), and below 2**31 until 2091
            sub.cseq = max(0, int(self.clock()) - CSEQ_EPOCH)
        if expires == 0:
            self.subs.pop(sub.key, None)
            self._terminated[sub.key] = sub
            self._dirty[sub.key] = "terminated"  # an unsubscribe, or a fetch of the state (RFC 6665 4.4.3)
            log.info("mwi.unsubscribed", user=sub.user, call_id=sub.call_id)
        else:
            if old is None:
                mine = sorted((s for s in self.subs.values() if s.user == sub.user), key=lambda s: s.expires_at)
                for stale in mine[:max(0, len(mine) - PER_USER + 1)]:
                    del self.subs[stale.key]  # forgotten by its phone: no NOTIFY
                    self._dirty.pop(stale.key, None)
                if len(self.subs) >= MAX_SUBSCRIPTIONS:
                    log.warning("mwi.too_many_subscriptions", user=sub.user)
                    return
            self.subs[sub.key] = sub
            self._dirty[sub.key] = "active"
            if old is None:
                log.info("mwi.subscribed", user=sub.user, call_id=sub.call_id, expires=expires)
        self._wake.set()

    def users_changed(self, users: set[str]) -> None:
        """These softphone users' counts may have changed: NOTIFY each of their subscriptions."""
        for key, sub in self.subs.items():
            if sub.user in users:
                self._dirty.setdefault(key, "active")
        self._wake.set()

    # ------------------------------------------------------------ out

    async def _run(self) -> None:
        while True:
            now = self.clock()
            for key, sub in list(self.subs.items()):
                if sub.expires_at <= now:  # not refreshed: RFC 6665 4.2.2, a final NOTIFY
                    del self.subs[key]
                    self._terminated[key] = sub
                    self._dirty[key] = "terminated;reason=timeout"
                    log.info("mwi.expired", user=sub.user, call_id=sub.call_id)
            while self._dirty:
                key, state = next(iter(self._dirty.items()))
                del self._dirty[key]
                found = self.subs.get(key) or self._terminated.pop(key, None)
                if found is not None:
                    await self._notify(found, state)
            self._wake.clear()
            nearest = min((s.expires_at for s in self.subs.values()), default=now + 60.0)
            try:
                await asyncio.wait_for(self._wake.wait(), max(0.05, min(60.0, nearest - self.clock())))
            except TimeoutError:
                pass

    async def _notify(self, sub: Subscription, state: str) -> None:
        try:
            counts = await self.counts(sub.user)
        except Exception as exc:  # the store is failing: the lamp keeps its last state
            log.warning("mwi.counts_failed", user=sub.user, error=str(exc))
            return
        new, old = counts or (0, 0)
        if state == "active":
            state = f"active;expires={max(1, int(sub.expires_at - self.clock()))}"
        sub.cseq += 1
        account = f"sip:{sub.user}@{self.edge}"
        headers = (f"From: <{sub.to_uri}>;tag={sub.to_tag}\r\n"
                   f"To: <{sub.from_uri}>;tag={sub.from_tag}\r\n"
                   f"Call-ID: {sub.call_id}\r\n"
                   f"CSeq: {sub.cseq} NOTIFY\r\n"
                   f"Contact: <sip:{self.edge}>\r\n"
                   "Event: message-summary\r\n"
                   f"Subscription-State: {state}\r\n"
                   "Max-Forwards: 70\r\n"
                   "Content-Type: application/simple-message-summary\r\n")
        nexthop = f"sip:{sub.source};transport={sub.proto}"
        try:
            self.send("|".join(("notify", sub.contact, nexthop, headers, summary_body(account, new, old))))
        except Exception as exc:  # the edge is restarting: the next change or refresh sends again
            self.failed += 1
            log.warning("mwi.notify_failed", user=sub.user, call_id=sub.call_id, error=str(exc))
            return
        self.sent += 1
        log.info("mwi.notified", user=sub.user, call_id=sub.call_id, new=new, heard=old, state=state.split(";")[0])

    def status(self) -> dict[str, Any]:
        return {"subscriptions": len(self.subs), "notifies_sent": self.sent, "notifies_failed": self.failed}
