"""The live wallboard in a real headless Chromium: a caller entering a queue shows on the page
within a second; a wrong token shows nothing; a screenshot is taken for people to look at."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from ringmaster import protocol as p
from tests.helpers.browser import Browser
from tests.helpers.phone import Phone
from tests.test_acd_calls import acd_config, agents_up
from tests.test_api import TOKENS, http

OUT = Path(__file__).resolve().parent.parent / "var" / "test-artifacts"


async def test_wallboard_shows_a_waiting_caller_within_a_second_and_agents_by_state(daemon_factory):
    d = daemon_factory(workers=1, start=False)
    acd_config(d, {"strategy": "linear", "members": ["alice", "bob"]}, agents=("alice", "bob"))
    d.config["http"] = {"listen": f"127.0.0.1:{d.ports.base + 6}",
                        "tokens": [{"name": r, "token": t, "role": r} for r, t in TOKENS.items()]}
    d.start()
    base = f"http://127.0.0.1:{d.ports.base + 6}"
    assert http(d, "GET", "/wallboard/events?token=wrong-token-xxxxxxxxxx")[0] == 401
    (alice,) = await agents_up(d, ("alice",))
    alice.send(p.Unregister(reg_id="alice"))  # nobody answers: callers wait
    browser = await Browser(d.ports.base + 7).open(f"{base}/wallboard?token={TOKENS['operator']}")
    caller = await Phone("4511223344", d.ports.caller(1), d.ports.base + 90).start()
    try:
        waiting = "document.querySelector('[data-queue=sales] [data-field=waiting]')?.textContent"
        for _ in range(50):
            if await browser.js(waiting) == "0":
                break
            await asyncio.sleep(0.1)
        assert await browser.js(waiting) == "0"
        assert await browser.js("document.getElementById('conn').textContent") == "live"
        t0 = time.monotonic()
        await caller.call(f"sip:500@{d.edge}")
        seen = None
        while time.monotonic() - t0 < 3:
            if await browser.js(waiting) == "1":
                seen = time.monotonic() - t0
                break
            await asyncio.sleep(0.02)
        assert seen is not None and seen < 1.0, seen
        away = await browser.js("document.querySelector('[data-queue=sales] .off').textContent")
        assert away == "2 away"  # alice unregistered, bob never registered
        await asyncio.sleep(1.2)  # let the longest-wait figure tick
        longest = await browser.js("document.querySelector('[data-queue=sales] [data-field=longest]').textContent")
        assert longest in ("1s", "2s"), longest
        OUT.mkdir(parents=True, exist_ok=True)
        shot = await browser.screenshot(OUT / "wallboard.png")
        assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 5000
    finally:
        await browser.close()
        await caller.stop()
        await alice.stop()
