"""A real headless Chromium (Debian's package) driven over the DevTools protocol: open a page,
evaluate JavaScript in it, take a screenshot. Flags as this machine needs them (no sandbox as
root, no background networking: the network here is closed)."""

from __future__ import annotations

import asyncio
import base64
import itertools
import json
import os
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import aiohttp


class Browser:
    def __init__(self, port: int):
        self.port = port
        self.proc: subprocess.Popen[bytes] | None = None
        self.session: aiohttp.ClientSession | None = None
        self.ws: aiohttp.ClientWebSocketResponse | None = None
        self._ids = itertools.count(1)
        self._profile = tempfile.mkdtemp(prefix="ringmaster-chromium-")

    async def open(self, url: str, width: int = 1600, height: int = 900, args: tuple[str, ...] = ()) -> Browser:
        """Start Chromium on `url`; args: more command-line flags (the desk's tests: a
        self-signed certificate, fake microphone and camera)."""
        exe = shutil.which("chromium") or "/usr/bin/chromium"
        self.proc = subprocess.Popen(
            [exe, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             f"--user-data-dir={self._profile}", f"--remote-debugging-port={self.port}",
             "--remote-debugging-address=127.0.0.1", f"--window-size={width},{height}", *args, url],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            # Chromium's own temporary files (/tmp/org.chromium.Chromium.*) go inside the
            # profile, which close() removes: each run used to leave one in /tmp
            env={**os.environ, "TMPDIR": self._profile})
        self.session = aiohttp.ClientSession()
        for _ in range(100):
            try:
                async with self.session.get(f"http://127.0.0.1:{self.port}/json/list") as r:
                    pages = [p for p in await r.json() if p.get("type") == "page"]
                if pages:
                    self.ws = await self.session.ws_connect(pages[0]["webSocketDebuggerUrl"], max_msg_size=0)
                    return self
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.1)
        raise RuntimeError("chromium did not start")

    async def call(self, method: str, **params: Any) -> dict[str, Any]:
        assert self.ws is not None
        mid = next(self._ids)
        await self.ws.send_str(json.dumps({"id": mid, "method": method, "params": params}))
        while True:
            msg = json.loads((await self.ws.receive()).data)
            if msg.get("id") == mid:
                if "error" in msg:
                    raise RuntimeError(f"{method}: {msg['error']}")
                return msg.get("result", {})

    async def js(self, expression: str, wait: bool = False) -> Any:
        """The expression's value (JSON-able); wait: await it when it is a promise."""
        res = await self.call("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=wait,
                              userGesture=True)  # a click from a test counts as the user's (autoplay, audio)
        if "exceptionDetails" in res:
            raise RuntimeError(f"page script failed: {res['exceptionDetails'].get('exception', {}).get('description')}")
        return res.get("result", {}).get("value")

    async def until(self, expression: str, timeout: float = 5.0) -> Any:
        """Poll `expression` until it is truthy; its value. AssertionError naming it after `timeout` s."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        value = None
        while loop.time() < deadline:
            try:
                value = await self.js(expression)
            except RuntimeError as exc:  # the page is still loading (its elements are not there yet)
                value = exc
            if value and not isinstance(value, Exception):
                return value
            await asyncio.sleep(0.05)
        raise AssertionError(f"{expression!r} still {value!r} after {timeout}s")

    async def screenshot(self, path: Path) -> Path:
        res = await self.call("Page.captureScreenshot", format="png")
        path.write_bytes(base64.b64decode(res["data"]))
        return path

    async def close(self) -> None:
        if self.ws is not None:
            await self.ws.close()
        if self.session is not None:
            await self.session.close()
        if self.proc is not None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        shutil.rmtree(self._profile, ignore_errors=True)
