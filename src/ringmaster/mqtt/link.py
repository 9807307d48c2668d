"""MqttLink: the controller's one connection to the broker, kept up with backoff.

- Outgoing messages go into an ordered outbox; a publisher drains it with QoS 1 and removes a
  message only once the broker has acknowledged it. While the broker is away the outbox keeps
  growing, so events published during an outage arrive afterwards, in order (a message whose
  PUBACK was lost in the cut is sent again: every payload has a `seq` to spot that).
- The session is persistent (clean_session false, fixed client id), so commands that clients
  publish while the controller is reconnecting are kept by the broker and delivered.
- Calls never wait on MQTT: publish() only appends.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import socket
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import aiomqtt
import structlog

from ringmaster.config import MqttConfig

log = structlog.get_logger("ringmaster.mqtt")

MAX_BACKOFF = 5.0  # a broker back from a restart is found within 5 s: agents' desks are waiting
OUTBOX_LIMIT = 200_000
NODELAY = ((socket.IPPROTO_TCP, socket.TCP_NODELAY, 1),)  # small messages leave at once (no Nagle)
WINDOW = 100  # messages in flight at once (QoS 1 keeps their order)  # beyond this the oldest non-retained messages are dropped (and counted)


@dataclass(frozen=True)
class Outgoing:
    topic: str
    payload: bytes
    retain: bool


Handler = Callable[[str, bytes], Awaitable[None] | None]


class MqttLink:
    def __init__(self, cfg: MqttConfig, password: str | None = None, username: str | None = None):
        self.cfg = cfg
        self.prefix = cfg.topic_prefix
        self.username = username or cfg.username
        self.password = password if password is not None else cfg.password
        self.outbox: deque[Outgoing] = deque()
        self.connected = False
        self.connects = 0
        self.dropped = 0
        self.last_error = ""
        self._seq = itertools.count(1)
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._handler: Handler | None = None
        self._subscriptions: list[str] = []
        self.on_connect: Callable[[], None] | None = None

    # ------------------------------------------------------------ API

    def subscribe(self, topic: str, handler: Handler) -> None:
        """topic under the prefix; one handler receives (topic without prefix, payload)."""
        self._subscriptions.append(self.prefix + topic)
        self._handler = handler

    def publish(self, topic: str, payload: dict[str, Any], retain: bool = False) -> None:
        body = {"version": 1, "seq": next(self._seq), "at": round(time.time(), 3), **payload}
        self.outbox.append(Outgoing(self.prefix + topic, json.dumps(body, separators=(",", ":")).encode(), retain))
        if len(self.outbox) > OUTBOX_LIMIT:
            for i, m in enumerate(self.outbox):
                if i >= WINDOW and not m.retain:  # never one that may be in flight
                    del self.outbox[i]
                    self.dropped += 1
                    break
        self._wake.set()

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="mqtt-link")

    async def stop(self, flush_timeout: float = 2.0) -> None:
        """Give the outbox a moment to drain (the last state updates), then disconnect."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + flush_timeout
        while self.outbox and self.connected and loop.time() < deadline:
            await asyncio.sleep(0.02)
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    # ------------------------------------------------------------ the connection

    async def _run(self) -> None:
        backoff = 0.5
        while True:
            try:
                async with aiomqtt.Client(self.cfg.host, self.cfg.port, username=self.username,
                                          password=self.password, identifier=self.cfg.client_id,
                                          clean_session=False, keepalive=self.cfg.keepalive,
                                          timeout=5, max_inflight_messages=WINDOW,
                                          socket_options=NODELAY) as client:
                    for topic in self._subscriptions:
                        await client.subscribe(topic, qos=1)
                    self.connected = True
                    self.connects += 1
                    backoff = 0.5
                    log.info("mqtt.connected", broker=self.cfg.listen, queued=len(self.outbox))
                    if self.on_connect is not None:
                        self.on_connect()
                    publisher = asyncio.create_task(self._publish_loop(client), name="mqtt-publisher")
                    try:
                        async for message in client.messages:
                            await self._deliver(message)
                    finally:
                        publisher.cancel()
                        await asyncio.gather(publisher, return_exceptions=True)
            except asyncio.CancelledError:
                self.connected = False
                raise
            except aiomqtt.MqttError as exc:
                self.last_error = str(exc)
            except Exception as exc:  # a bug in a handler must not end MQTT for the daemon's life
                self.last_error = str(exc)
                log.exception("mqtt.link_error")
            if self.connected:
                log.warning("mqtt.disconnected", error=self.last_error, queued=len(self.outbox))
            else:
                log.warning("mqtt.connect_failed", broker=self.cfg.listen, error=self.last_error, retry_in=backoff)
            self.connected = False
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, MAX_BACKOFF)

    async def _publish_loop(self, client: aiomqtt.Client) -> None:
        """Keep up to WINDOW messages in flight, handed to the client in outbox order (MQTT keeps
        that order); the head leaves the outbox once acknowledged. On a cut, everything not
        acknowledged is sent again from the head, still in order."""
        inflight: deque[asyncio.Future[None]] = deque()
        try:
            while True:
                while len(inflight) < min(WINDOW, len(self.outbox)):
                    m = self.outbox[len(inflight)]
                    inflight.append(asyncio.ensure_future(client.publish(m.topic, m.payload, qos=1, retain=m.retain)))
                if not inflight:
                    self._wake.clear()
                    await self._wake.wait()
                    continue
                await inflight[0]
                inflight.popleft()
                self.outbox.popleft()
        finally:
            for f in inflight:
                f.cancel()

    async def _deliver(self, message: aiomqtt.Message) -> None:
        topic = str(message.topic)
        if not topic.startswith(self.prefix) or self._handler is None:
            return
        payload = message.payload if isinstance(message.payload, bytes) else str(message.payload or "").encode()
        result = self._handler(topic[len(self.prefix):], payload)
        if result is not None:
            await result
