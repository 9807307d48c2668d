"""A webhook receiver for tests: a real aiohttp server on loopback, in a thread of its own (the
tests' blocking helpers must not stall it), that verifies every delivery with the Standard
Webhooks reference library (PyPI `standardwebhooks`) and records it. It can be down (its
socket closed: connection refused), answer 500, or hang."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from dataclasses import dataclass
from typing import Any

import standardwebhooks
from aiohttp import web


@dataclass
class Delivery:
    """One request received: path, webhook-id, its parsed body, verified by the reference
    library, arrival time (monotonic)."""

    path: str
    id: str
    body: dict[str, Any]
    verified: bool
    at: float

    @property
    def type(self) -> str:
        return str(self.body.get("type"))

    @property
    def data(self) -> dict[str, Any]:
        return dict(self.body.get("data") or {})


class Receiver:
    """mode: ok (200), fail (500), hang (never answers until stopped). Only requests answered
    200 are `accepted`; `requests` counts every request that arrived."""

    def __init__(self, port: int, secret: str):
        self.port = port
        self.verifier = standardwebhooks.Webhook(secret)
        self.mode = "ok"
        self.accepted: list[Delivery] = []
        self.requests = 0
        self.bad_signatures = 0
        self.in_flight = 0
        self.max_in_flight = 0
        self._lock = threading.Lock()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._thread.start()
        self._runner: web.AppRunner | None = None
        self._release = asyncio.Event()

    def _call(self, coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(10)

    async def _handle(self, req: web.Request) -> web.StreamResponse:
        raw = await req.read()
        with self._lock:
            self.requests += 1
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            if self.mode == "hang":
                await self._release.wait()
                return web.Response(status=503)
            if self.mode == "fail":
                return web.Response(status=500)
            try:
                self.verifier.verify(raw, dict(req.headers))
                verified = True
            except standardwebhooks.webhooks.WebhookVerificationError:
                verified = False
                self.bad_signatures += 1
            with self._lock:
                self.accepted.append(Delivery(req.path, req.headers.get("webhook-id", ""), json.loads(raw),
                                              verified, time.monotonic()))
            return web.Response(status=200 if verified else 401)
        finally:
            with self._lock:
                self.in_flight -= 1

    async def _start(self) -> None:
        app = web.Application()
        app.router.add_post("/{path:.*}", self._handle)
        # a request the sender gave up on (its timeout) ends here too: in_flight counts open requests
        self._runner = web.AppRunner(app, shutdown_timeout=0.5, handler_cancellation=True)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()

    async def _stop(self) -> None:
        self._release.set()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        self._release = asyncio.Event()

    def up(self) -> Receiver:
        self._call(self._start())
        return self

    def down(self) -> None:
        self._call(self._stop())

    def close(self) -> None:
        self.down()
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)

    def url(self, path: str = "hook") -> str:
        return f"http://127.0.0.1:{self.port}/{path}"

    def got(self, path: str | None = None) -> list[Delivery]:
        with self._lock:
            return [d for d in self.accepted if path is None or d.path == f"/{path}"]

    def wait(self, count: int, path: str | None = None, timeout: float = 15.0) -> list[Delivery]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = self.got(path)
            if len(found) >= count:
                return found
            time.sleep(0.05)
        raise AssertionError(f"{count} deliveries not received in {timeout}s: "
                             f"{[(d.type, d.data.get('call_id') or d.data.get('task') or d.data.get('agent')) for d in self.got(path)]}")
