"""Lookups with real calls: the daemon asks a CRM (a real aiohttp server on loopback) about
each caller during the call. A VIP goes to another queue, a CRM that does not answer in time
sends the caller on by `on_timeout` within the limit, one that answers 500 by `on_error`.
Prompts and hold music are pure tones, so the tones a pjsua2 test phone hears prove the path."""

from __future__ import annotations

import asyncio
import json
import sqlite3
from typing import Any

from aiohttp import web
from aiohttp.test_utils import TestServer

from ringmaster import protocol as p
from ringmaster.lookups import signature
from tests.helpers.audio import read_wav, tone_sequence, write_tone
from tests.helpers.phone import Phone

TONES = {"welcome": 500, "hold_sales": 440, "hold_vip": 1300, "late": 800, "down": 1100}
SECRET = "crm-shared-secret-0123"
TOKEN = "crm-bearer-token-0123"


class Crm:
    """The CRM: checks the bearer and the signature of every request, answers by path."""

    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        self.refused = 0
        app = web.Application()
        app.router.add_route("*", "/{what}", self.handle)
        self.app = app

    async def handle(self, req: web.Request) -> web.StreamResponse:
        body = await req.read()
        ts = req.headers.get("X-Ringmaster-Timestamp", "")
        payload = body if req.method == "POST" else req.rel_url.raw_query_string.encode()
        if req.headers.get("Authorization") != f"Bearer {TOKEN}" or \
                req.headers.get("X-Ringmaster-Signature") != signature(SECRET, ts, payload):
            self.refused += 1
            return web.Response(status=401)
        self.requests.append({"path": req.path, "query": dict(req.query), "body": body,
                              "call_id": req.headers.get("X-Ringmaster-Call-Id")})
        what = req.match_info["what"]
        if what == "slow":
            await asyncio.sleep(5)
        if what == "broken":
            return web.Response(status=500)
        caller = dict(req.query).get("caller", "")
        return web.json_response({"customer": {"tier": "vip" if caller.startswith("4570") else "standard"}})


async def crm_server() -> tuple[Crm, TestServer]:
    crm = Crm()
    server = TestServer(crm.app, host="127.0.0.1", port=0)
    await server.start_server()
    return crm, server


def endpoint(server: TestServer, path: str, **kw: Any) -> dict[str, Any]:
    return {"url": f"http://127.0.0.1:{server.port}/{path}", "bearer_token": TOKEN, "hmac_secret": SECRET, **kw}


def write_prompts(d) -> None:  # type: ignore[no-untyped-def]
    for name, freq in TONES.items():
        write_tone(d.dir / "prompts" / f"{name}.wav", freq, 3.0 if name.startswith("hold") else 0.6)


async def listen(d, phone: Phone, number: str, seconds: float | None = None) -> list[str]:  # type: ignore[no-untyped-def]
    """Call number, record what is heard for `seconds` (or until the daemon hangs up)."""
    leg = await phone.call(f"sip:{number}@{d.edge}")
    heard = d.dir / f"heard-{leg}.wav"
    phone.send(p.RecordStart(rec_id=leg, legs=(leg,), path=str(heard)))
    if seconds is None:
        await phone.wait(p.CallState, lambda m: m.leg == leg and m.state == "disconnected", timeout=15)
    else:
        await asyncio.sleep(seconds)
    phone.send(p.RecordStop(rec_id=leg))
    await phone.wait(p.RecordingDone, lambda m: m.rec_id == leg)
    if seconds is not None:
        await phone.hangup(leg)
    return [name for name, _ in tone_sequence(read_wav(heard)[0], TONES)]


def call_events(d, kind: str) -> list[dict[str, Any]]:  # type: ignore[no-untyped-def]
    con = sqlite3.connect(d.db_path)
    try:
        return [json.loads(r[0]) for r in con.execute("SELECT data FROM call_events WHERE event = ? ORDER BY id", (kind,))]
    finally:
        con.close()


async def test_crm_lookup_routes_a_vip_caller_to_the_vip_queue(daemon_factory):
    crm, server = await crm_server()
    d = daemon_factory(workers=1, start=False)
    write_prompts(d)
    d.config["http_endpoints"] = {"crm": endpoint(server, "customer")}
    d.config["queues"] = {"sales": {"moh": "hold_sales"}, "vip": {"moh": "hold_vip"}}
    d.config["flows"] = {"main": [
        {"http": {"endpoint": "crm", "params": {"caller": "${caller}"}, "map": {"tier": "customer.tier"}}},
        {"branch": {"on": "tier", "cases": [{"exact": "vip", "then": "vip"}]}},
        {"queue": "sales"},
        {"id": "vip", "queue": "vip"}]}
    d.config["entry_points"] = [{"number": "100", "flow": "main"}]
    d.start()
    vip = await Phone("4570112233", d.ports.caller(0), d.ports.base + 80).start()
    other = await Phone("4511223344", d.ports.caller(1), d.ports.base + 96).start()
    try:
        heard_vip = await listen(d, vip, "100", 2.5)
        heard_other = await listen(d, other, "100", 2.5)
    finally:
        await vip.stop()
        await other.stop()
        await server.close()
    assert heard_vip == ["hold_vip"], heard_vip
    assert heard_other == ["hold_sales"], heard_other
    assert crm.refused == 0 and [r["query"] for r in crm.requests] == [{"caller": "4570112233"}, {"caller": "4511223344"}]
    rows = {r["caller"]: r for r in d.wait_calls_ended(2)}
    assert rows["4570112233"]["queue"] == "vip" and rows["4511223344"]["queue"] == "sales"
    assert json.loads(rows["4570112233"]["variables"])["tier"] == "vip"
    assert {r["call_id"] for r in crm.requests} == {rows["4570112233"]["call_id"], rows["4511223344"]["call_id"]}
    assert [e["result"] for e in call_events(d, "HTTP")] == ["ok", "ok"]


async def test_a_slow_crm_takes_on_timeout_within_the_limit_and_a_500_takes_on_error(daemon_factory):
    crm, server = await crm_server()
    d = daemon_factory(workers=1, start=False)
    write_prompts(d)
    d.config["http_endpoints"] = {"slow": endpoint(server, "slow", timeout=1.0, retries=2),
                                  "broken": endpoint(server, "broken", retries=1, retry_delay=0.1)}

    def flow(ep: str) -> list[Any]:
        return [{"play": "welcome"},
                {"http": {"endpoint": ep, "params": {"caller": "${caller}"}, "on_timeout": "late", "on_error": "down"}},
                "hangup",
                {"id": "late", "play": "late"}, "hangup",
                {"id": "down", "play": "down"}, "hangup"]

    d.config["flows"] = {"slow": flow("slow"), "broken": flow("broken")}
    d.config["entry_points"] = [{"number": "101", "flow": "slow"}, {"number": "102", "flow": "broken"}]
    d.start()
    phone = await Phone("4511223344", d.ports.caller(0), d.ports.base + 80).start()
    try:
        heard_slow = await listen(d, phone, "101")
        heard_broken = await listen(d, phone, "102")
    finally:
        await phone.stop()
        await server.close()
    assert heard_slow == ["welcome", "late"], heard_slow
    assert heard_broken == ["welcome", "down"], heard_broken
    events = {e["endpoint"]: e for e in call_events(d, "HTTP")}
    # the caller waited the endpoint's 1 s, not the CRM's 5 s nor 3 attempts' worth
    assert events["slow"]["result"] == "timeout" and 1000 <= events["slow"]["ms"] < 1400, events
    assert events["broken"]["result"] == "error" and events["broken"]["status"] == 500
    assert [r["path"] for r in crm.requests] == ["/slow", "/broken", "/broken"]  # a 500 is retried once
    logged = {e["endpoint"]: e for e in d.events("call.http")}
    assert logged["slow"]["result"] == "timeout" and logged["broken"]["detail"] == "HTTP 500"
    rows = d.wait_calls_ended(2)
    assert [json.loads(r["variables"])["http_result"] for r in rows] == ["timeout", "error"]
