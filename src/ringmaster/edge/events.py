"""Registration events pushed by the edge (Kamailio evapi): `{"event": "registered", "user": ...}`,
and message-waiting subscriptions (`mwi-subscribe`); the controller sends the edge its
message-waiting NOTIFYs over the same connection (`send`).

evapi frames each message as a netstring (`LEN:DATA,`). The client reconnects with backoff
when the edge restarts; after every (re)connect it reports "sync" so the controller re-reads
the registrar's table (events sent while it was not connected are lost otherwise).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any

import structlog

log = structlog.get_logger("ringmaster.edge")


def parse_netstrings(buf: bytearray) -> list[bytes]:
    """Take every complete netstring off the front of buf."""
    out: list[bytes] = []
    while True:
        colon = buf.find(b":")
        if colon <= 0:
            return out
        try:
            length = int(buf[:colon])
        except ValueError:  # not a netstring: drop to the next comma to resynchronise
            comma = buf.find(b",")
            del buf[: comma + 1 if comma >= 0 else len(buf)]
            continue
        end = colon + 1 + length
        if len(buf) < end + 1:
            return out
        out.append(bytes(buf[colon + 1:end]))
        del buf[: end + 1]


class EdgeEvents:
    def __init__(self, host: str, port: int, handler: Callable[[dict[str, Any]], None]):
        self.host = host
        self.port = port
        self.handler = handler
        self._task: asyncio.Task[None] | None = None
        self._writer: asyncio.StreamWriter | None = None
        self.connected = False

    def send(self, message: str) -> None:
        """One message to the edge (a netstring, as evapi reads them): the NOTIFYs of
        ringmaster.mwi. ConnectionError if the edge is not connected right now."""
        if self._writer is None or not self.connected:
            raise ConnectionError("the edge's events connection is down")
        data = message.encode()
        self._writer.write(str(len(data)).encode() + b":" + data + b",")

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="edge-events")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def _run(self) -> None:
        backoff = 0.1
        while True:
            try:
                reader, writer = await asyncio.open_connection(self.host, self.port)
            except OSError:
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)
                continue
            backoff = 0.1
            self._writer = writer
            self.connected = True
            self.handler({"event": "sync"})
            buf = bytearray()
            try:
                while True:
                    chunk = await reader.read(65536)
                    if not chunk:
                        break
                    buf += chunk
                    for raw in parse_netstrings(buf):
                        try:
                            event = json.loads(raw)
                        except json.JSONDecodeError:
                            log.warning("edge.bad_event", data=raw[:200])
                            continue
                        if isinstance(event, dict):
                            self.handler(event)
            except OSError:
                pass
            finally:
                self.connected = False
                self._writer = None
                writer.close()
            log.warning("edge.events_disconnected")
