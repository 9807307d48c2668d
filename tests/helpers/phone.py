"""A pjsua2 test phone: a media worker process (the same executable the daemon runs) driven
directly by the test over the worker protocol. One phone holds at most 4 calls."""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Callable
from typing import TypeVar

from ringmaster import protocol as p
from ringmaster.workerproc import WorkerProcess, WorkerSpec

M = TypeVar("M", bound=p.Message)
_ids = itertools.count(1)


class Phone:
    live: set[Phone] = set()  # phones a test started and has not stopped (conftest kills them)

    def __init__(self, name: str, sip_port: int, rtp_port: int, proxy: str = ""):
        # a test phone takes calls from the edge and from other phones, all on loopback
        self.spec = WorkerSpec(name=name, sip_host="127.0.0.1", sip_port=sip_port, rtp_port=rtp_port,
                               rtp_count=16, proxy=proxy, allowed_sources=("127.0.0.1",))
        self.events: list[p.Message] = []
        self._arrived: dict[int, float] = {}  # id(event) -> time.monotonic() it arrived
        self._changed = asyncio.Event()
        self.proc = WorkerProcess(self.spec, self._on_event)

    @property
    def uri(self) -> str:
        return self.spec.sip_uri

    def _on_event(self, wp: WorkerProcess, msg: p.Message) -> None:
        self.events.append(msg)
        self._arrived[id(msg)] = time.monotonic()
        self._changed.set()

    def arrived(self, msg: p.Message) -> float:
        """When `msg` (one of this phone's events) arrived, on time.monotonic()."""
        return self._arrived[id(msg)]

    async def start(self) -> Phone:
        Phone.live.add(self)
        await self.proc.start()
        return self

    async def stop(self) -> int:
        Phone.live.discard(self)
        return await self.proc.stop()

    def send(self, cmd: p.Message) -> None:
        self.proc.send(cmd)

    async def wait(self, kind: type[M], pred: Callable[[M], bool] = lambda m: True,
                   timeout: float = 10.0, after: int = 0) -> M:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            for m in self.events[after:]:
                if isinstance(m, kind) and pred(m):
                    return m
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise AssertionError(f"{self.spec.name}: no {kind.__name__} in {timeout}s; events: {self.events[-15:]}")
            self._changed.clear()
            try:
                await asyncio.wait_for(self._changed.wait(), remaining)
            except TimeoutError:
                pass

    async def call(self, uri: str, timeout: float = 10.0) -> str:
        """Dial and wait until the call is answered with media; returns the leg id."""
        leg = f"{self.spec.name}-out{next(_ids)}"
        self.send(p.Dial(leg=leg, uri=uri))
        await self.wait(p.CallState, lambda m: m.leg == leg and m.state in ("confirmed", "disconnected"), timeout)
        st = [m for m in self.events if isinstance(m, p.CallState) and m.leg == leg][-1]
        if st.state != "confirmed":
            raise AssertionError(f"call to {uri} failed: {st.code} {st.reason}")
        await self.wait(p.MediaReady, lambda m: m.leg == leg, timeout)
        return leg

    async def answer_next(self, timeout: float = 10.0) -> str:
        inc = await self.wait(p.Incoming, timeout=timeout)
        self.events.remove(inc)
        self.send(p.Answer(leg=inc.leg))
        await self.wait(p.MediaReady, lambda m: m.leg == inc.leg, timeout)
        return inc.leg

    async def hangup(self, leg: str) -> None:
        self.send(p.Hangup(leg=leg))
        await self.wait(p.CallState, lambda m: m.leg == leg and m.state == "disconnected")
