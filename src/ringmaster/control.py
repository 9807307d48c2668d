"""The daemon's local control socket: one JSON request per connection, one JSON reply.

Used by `ringmaster status` (and later reload and friends). It lives in the runtime dir,
mode 0600: whoever can read the daemon's files may talk to it, nobody else.
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import structlog

log = structlog.get_logger("ringmaster.control")

Handler = Callable[[dict[str, Any]], Awaitable[dict[str, Any]]]


def socket_path(runtime_dir: str) -> Path:
    return Path(runtime_dir) / "control.sock"


class ControlServer:
    def __init__(self, path: Path, handlers: dict[str, Handler]):
        self.path = path
        self.handlers = handlers
        self.server: asyncio.AbstractServer | None = None

    async def start(self) -> None:
        self.path.unlink(missing_ok=True)
        self.server = await asyncio.start_unix_server(self._client, path=str(self.path))
        os.chmod(self.path, 0o600)

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()
        self.path.unlink(missing_ok=True)

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            line = await asyncio.wait_for(reader.readline(), 5)
            try:
                req = json.loads(line)
                handler = self.handlers.get(req.get("command", "")) if isinstance(req, dict) else None
                if handler is None:
                    reply: dict[str, Any] = {"ok": False, "error": f"unknown command; known: {sorted(self.handlers)}"}
                else:
                    reply = {"ok": True, **await handler(req)}
            except json.JSONDecodeError as exc:
                reply = {"ok": False, "error": f"not JSON: {exc}"}
            except Exception as exc:
                log.exception("control.failed")
                reply = {"ok": False, "error": str(exc)}
            writer.write(json.dumps(reply).encode() + b"\n")
            await writer.drain()
        except (TimeoutError, ConnectionError):
            pass
        finally:
            writer.close()


async def request(path: Path, command: str, **args: Any) -> dict[str, Any]:
    reader, writer = await asyncio.open_unix_connection(str(path))
    writer.write(json.dumps({"command": command, **args}).encode() + b"\n")
    await writer.drain()
    line = await asyncio.wait_for(reader.readline(), 10)
    writer.close()
    return json.loads(line)
