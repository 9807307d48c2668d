"""Who may open a dialog with a media worker, and how fast: the worker's own defence.

The edge is the security boundary, but a worker's SIP port is reachable by anyone on its
network, so the worker checks every new out-of-dialog request itself (issue 17):

- `SourcePolicy`: only the configured sources (the edge's host:port; test phones list the
  loopback host) may start a dialog. Everything else is answered 403.
- `MediaBudget`: pjsua opens an RTP and an RTCP socket for every INVITE with an offer before
  the application sees the call, and pjlib's ioqueue keeps an unregistered socket's slot on a
  closing list for PJ_IOQUEUE_KEY_FREE_DELAY (500 ms) before it can be reused. The media
  ioqueue has PJ_IOQUEUE_MAX_HANDLES (64) slots and pjlib *asserts* (SIGABRT) instead of
  failing when they are all live or closing: 32 INVITEs refused within 500 ms killed a worker
  (docs/engine-findings.md 23). The budget caps how many calls may allocate media in any
  window of that length, whoever ends them and however fast.

Both checks run in `Endpoint.onSelectAccount`, which pjsua calls before it creates media;
a refused request is handed to an account whose media is pjmedia's loop transport (no socket).
"""

from __future__ import annotations

import ipaddress
import time
from collections import deque
from dataclasses import dataclass, field

# pjlib's constants in the pjsua2 wheel (2.15.1, select ioqueue): measured, not configurable.
IOQUEUE_MAX_HANDLES = 64
KEY_FREE_DELAY = 0.5  # seconds a closed socket's ioqueue slot stays unusable
SOCKETS_PER_CALL = 2  # RTP + RTCP for the one audio stream a worker accepts
MAX_LIVE_CALLS = 4  # PJSUA_MAX_CALLS of the wheel


def _split(source: str) -> tuple[str, int | None]:
    """'1.2.3.4:5060' -> ('1.2.3.4', 5060); '1.2.3.4' -> ('1.2.3.4', None); '[::1]:5060' too."""
    source = source.strip()
    if source.startswith("["):
        host, _, rest = source[1:].partition("]")
        return host, int(rest[1:]) if rest.startswith(":") and rest[1:] else None
    if source.count(":") == 1:
        host, port = source.split(":")
        return host, int(port)
    return source, None


@dataclass(frozen=True)
class SourcePolicy:
    """Allowed sources of new dialogs: 'IP:PORT' (exactly that socket) or 'IP' (any port).

    An empty policy allows nothing (fail closed): a worker started without `--allow-source`
    refuses every call. Sources are matched by IP address, never by name (no DNS here).
    """

    allowed: tuple[tuple[str, int | None], ...] = ()

    @classmethod
    def parse(cls, sources: tuple[str, ...] | list[str]) -> SourcePolicy:
        """Raises ValueError naming the entry that is not an IP address with an optional port."""
        out = []
        for s in sources:
            try:
                host, port = _split(s)
                ip = str(ipaddress.ip_address(host))
            except ValueError as exc:
                raise ValueError(f"allowed source {s!r}: expected IP or IP:PORT ({exc})") from None
            if port is not None and not 0 < port < 65536:
                raise ValueError(f"allowed source {s!r}: port out of range")
            out.append((ip, port))
        return cls(tuple(out))

    def allows(self, source: str) -> bool:
        """`source` as pjsua2 reports it (SipRxData.srcAddress: 'IP:PORT' or '[IPv6]:PORT')."""
        try:
            host, port = _split(source)
            ip = str(ipaddress.ip_address(host))
        except ValueError:
            return False
        return any(ip == a_ip and (a_port is None or a_port == port) for a_ip, a_port in self.allowed)


def default_budget() -> int:
    """Calls that may allocate media per KEY_FREE_DELAY window.

    Sockets registered or closing at any moment <= SOCKETS_PER_CALL * (live calls + calls
    that died in the last window) <= 2 * (4 + budget + 4): the calls alive when a window
    starts can die in it, and so can every call born in it. With a budget of 16 that is 48
    of 64 slots, leaving room for pjsua tearing a call's media down a little after the call
    slot is free (docs/engine-findings.md 11).
    """
    spare = IOQUEUE_MAX_HANDLES // SOCKETS_PER_CALL - 2 * MAX_LIVE_CALLS  # 24
    return spare * 2 // 3  # 16: 32 calls/s of churn per worker, far above a real load


@dataclass
class MediaBudget:
    """A sliding window of media allocations (one per call: inbound accepted or dialled)."""

    limit: int = field(default_factory=default_budget)
    window: float = KEY_FREE_DELAY + 0.1  # a margin over pjlib's delay for clock granularity
    _births: deque[float] = field(default_factory=deque)

    def _trim(self, now: float) -> None:
        while self._births and now - self._births[0] >= self.window:
            self._births.popleft()

    def available(self, now: float | None = None) -> bool:
        now = time.monotonic() if now is None else now
        self._trim(now)
        return len(self._births) < self.limit

    def take(self, now: float | None = None) -> None:
        """Count one call that allocates media now (call after `available()` said yes)."""
        now = time.monotonic() if now is None else now
        self._trim(now)
        self._births.append(now)
