"""Wallboard event-to-screen latency with calls flowing (part of bench/run ops).

SIPp sends calls at --rate per second into queue `sales`, where nobody answers: each caller
waits --hold seconds with hold music and hangs up, so the ACD changes many times a second and
the page is pushed snapshots all the while. Every 0.25 s the bench pauses or unpauses agent
`probe` through the API (the event, timed on this machine's wall clock); a MutationObserver
in headless Chromium notes when the page shows the new paused count for queue `probe`
(Date.now(), the same clock). Latency = shown - event.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path

from bench.engine import figure, percentile
from tests.helpers.audio import write_tone
from tests.helpers.browser import Browser
from tests.helpers.daemon import Daemon, Ports, base_config
from tests.helpers.rtp import RtpSink
from tests.helpers.sipp import _counts, sipp_args

TOKEN = "bench-supervisor-token-xxxxxxxx"
OBSERVE = """
window.__shown = [];
new MutationObserver(() => {
  const el = document.querySelector('[data-queue=probe] [data-field=paused]');
  if (el) window.__shown.push([Date.now(), el.textContent]);
}).observe(document.getElementById('queues'), {childList: true, subtree: true});
"""


def _api(port: int, path: str, body: dict[str, str]) -> None:
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=json.dumps(body).encode(), method="POST",
                                 headers={"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=5) as r:
        r.read()


async def measure(rate: float, seconds: float, hold: float) -> dict[str, float]:
    tmp = Path(tempfile.mkdtemp(prefix="ringmaster-bench-wallboard-"))
    ports = Ports(39000)
    workers = int(rate * (hold + 1)) // 2 + 5
    cfg = base_config(tmp, ports, workers=workers)
    write_tone(tmp / "prompts" / "hold.wav", 440, 2.0)
    cfg["workers"]["sip_port_base"] = 39200
    cfg["workers"]["rtp_ports"] = f"41000-{41000 + 16 * workers - 1}"
    cfg["logging"] = {"level": "warning", "format": "json"}
    cfg["http"] = {"listen": f"127.0.0.1:{ports.base + 6}", "tokens": [{"name": "b", "token": TOKEN, "role": "supervisor"}]}
    cfg["agents"] = {n: {"softphone": {"username": n, "password": f"{n}-secret"}, "auto_login": False}
                     for n in ("probe", "nobody")}
    cfg["queues"] = {"sales": {"members": ["nobody"], "moh": "hold"}, "probe": {"members": ["probe"], "moh": "hold"}}
    cfg["flows"]["main"] = [{"queue": "sales"}, "hangup"]
    cfg["entry_points"] = [{"number": "500", "flow": "main"}]
    d = Daemon(tmp, ports, cfg)
    d.start(timeout=120)
    http = ports.base + 6
    browser = await Browser(ports.base + 7).open(f"http://127.0.0.1:{http}/wallboard?token={TOKEN}")
    sink = RtpSink(ports.sink())
    events: list[tuple[float, str]] = []
    try:
        _api(http, "/api/agents/probe", {"action": "login"})
        for _ in range(100):
            if await browser.js("document.querySelector('[data-queue=probe]') !== null"):
                break
            await asyncio.sleep(0.05)
        await browser.js(OBSERVE)
        work = tmp / "sipp"
        work.mkdir()
        calls = int(rate * seconds)
        proc = subprocess.Popen(sipp_args("uac_hold.xml", d.edge, ports.caller(0), service="500", calls=calls,
                                          rate=rate, limit=workers * 2, hold_ms=int(hold * 1000),
                                          rtp_sink=sink.port, timeout=int(seconds) + 60),
                                cwd=work, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        await asyncio.sleep(2.0)  # the load is flowing
        paused = False
        end = time.monotonic() + seconds - 4
        while time.monotonic() < end:
            paused = not paused
            t = time.time()
            await asyncio.to_thread(_api, http, "/api/agents/probe",
                                    {"action": "pause", "reason": "bench"} if paused else {"action": "unpause"})
            events.append((t, "1 paused" if paused else "0 paused"))
            await asyncio.sleep(0.25)
        out, _ = await asyncio.to_thread(proc.communicate, timeout=int(seconds) + 90)
        ok, failed = _counts(out)
        shown = await browser.js("window.__shown")
    finally:
        await browser.close()
        sink.close()
        d.stop(timeout=120)
    lat = []
    for t, text in events:
        seen = next((s for s, v in shown if s / 1000 >= t and v == text), None)
        if seen is not None:
            lat.append(seen / 1000 - t)
    return {"calls_ok": ok, "calls_failed": failed, "events": len(events), "shown": len(lat),
            "p50": percentile(lat, 50) * 1000 if lat else -1, "p99": percentile(lat, 99) * 1000 if lat else -1,
            "max": max(lat) * 1000 if lat else -1}


def run(rate: float = 50.0, seconds: float = 20.0, hold: float = 1.0) -> None:
    r = asyncio.run(measure(rate, seconds, hold))
    figure("wallboard_load_rate", rate, "calls/s")
    figure("wallboard_load_calls_ok", r["calls_ok"], "calls")
    figure("wallboard_load_calls_failed", r["calls_failed"], "calls")
    figure("wallboard_events", r["events"], "events")
    figure("wallboard_events_shown", r["shown"], "events")
    figure("wallboard_event_to_screen_p50", round(r["p50"], 1), "ms")
    figure("wallboard_event_to_screen_p99", round(r["p99"], 1), "ms")
    figure("wallboard_event_to_screen_max", round(r["max"], 1), "ms")


if __name__ == "__main__":
    run()
