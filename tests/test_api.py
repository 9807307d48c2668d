"""The HTTP API and /metrics of a real daemon after real calls: what each role may read and
change, and that unauthorized or malformed requests get 401/403/400 and change nothing."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any

from ringmaster import protocol as p
from tests.helpers.phone import Phone
from tests.test_acd_calls import acd_config, agents_up, wait_agent

TOKENS = {"operator": "op-" + "o" * 20, "supervisor": "sup-" + "s" * 20, "admin": "adm-" + "a" * 20}


def metric(text: str, name: str, **labels: str) -> float | None:
    """One sample's value from a /metrics body, read with prometheus_client's parser (None: absent)."""
    from prometheus_client.parser import text_string_to_metric_families

    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            if s.name == name and s.labels == labels:
                return float(s.value)
    return None


def http(d, method: str, path: str, role: str | None = None, body: Any = None,  # type: ignore[no-untyped-def]
         token: str | None = None) -> tuple[int, dict[str, str], bytes]:
    url = f"http://127.0.0.1:{d.ports.base + 6}{path}"
    data = json.dumps(body).encode() if body is not None and not isinstance(body, bytes) else body
    req = urllib.request.Request(url, method=method, data=data)
    if role or token:
        req.add_header("Authorization", f"Bearer {token or TOKENS[role]}")  # type: ignore[index]
    if data is not None:
        req.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, dict(r.headers), r.read()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read()


async def test_api_roles_reads_changes_and_refusals(daemon_factory):
    d = daemon_factory(workers=1, start=False)
    acd_config(d, {"strategy": "linear", "members": ["alice"], "record": {"template": "{call_id}.wav"}})
    d.config["http"] = {"listen": f"127.0.0.1:{d.ports.base + 6}",
                        "tokens": [{"name": r, "token": t, "role": r} for r, t in TOKENS.items()]}
    d.start()
    (alice,) = await agents_up(d, ("alice",))
    caller = await Phone("4511223344", d.ports.caller(1), d.ports.base + 90).start()
    try:
        a = await caller.call(f"sip:500@{d.edge}")
        inc = await alice.wait(p.Incoming, timeout=5)
        alice.send(p.Answer(leg=inc.leg))
        await alice.wait(p.CallState, lambda m: m.leg == inc.leg and m.state == "confirmed")
        import asyncio

        await asyncio.sleep(1.0)  # talk a moment: the recording starts right after the bridge
        await caller.hangup(a)
        wait_agent(d, "alice", "available")
        row = d.wait_calls_ended(1)[0]

        # --- who may do what
        assert http(d, "GET", "/api/calls")[0] == 401
        status, headers, _ = http(d, "GET", "/api/calls", token="not-a-token-at-all-xx")
        assert status == 401 and headers.get("WWW-Authenticate") == "Bearer"
        code, _, body = http(d, "GET", "/api/calls?queue=sales", "operator")
        calls = json.loads(body)["calls"]
        assert code == 200 and [c["call_id"] for c in calls] == [row["call_id"]] and calls[0]["agent"] == "alice"
        assert json.loads(http(d, "GET", "/api/calls?queue=support", "operator")[2])["calls"] == []
        code, _, body = http(d, "GET", f"/api/calls/{row['call_id']}", "operator")
        detail = json.loads(body)
        assert code == 200 and [e["event"] for e in detail["queue_events"]] == ["ENTERQUEUE", "CONNECT", "COMPLETECALLER"]
        assert detail["call"]["ivr_path"][0] == "main:0:queue" and any(e["event"] == "ARRIVED" for e in detail["events"])
        assert http(d, "GET", "/api/calls/nope", "operator")[0] == 404
        assert http(d, "GET", f"/api/calls/{row['call_id']}/recording", "operator")[0] == 403
        code, headers, wav = http(d, "GET", f"/api/calls/{row['call_id']}/recording", "supervisor")
        assert code == 200 and headers["Content-Type"] == "audio/wav" and wav[:4] == b"RIFF"

        # --- bad parameters: 400 with the reason
        for bad in ("/api/calls?since=yesterday", "/api/calls?limit=0", "/api/calls?disposition=bogus",
                    "/api/calls?min_wait=abc", "/api/calls?colour=red"):
            code, _, body = http(d, "GET", bad, "operator")
            assert code == 400 and json.loads(body)["error"], bad

        # --- changes: supervisors change agents, operators cannot, bad bodies change nothing
        assert http(d, "POST", "/api/agents/alice", "operator", {"action": "pause", "reason": "x"})[0] == 403
        for bad_body in ({"action": "dance"}, b"not json", [1, 2], {"action": "pause", "reason": "r" * 100}):
            assert http(d, "POST", "/api/agents/alice", "supervisor", bad_body)[0] == 400, bad_body
        assert http(d, "POST", "/api/agents/zed", "supervisor", {"action": "pause"})[0] == 400
        assert json.loads(http(d, "GET", "/api/agents", "operator")[2])["agents"]["alice"] == "available"
        code, _, body = http(d, "POST", "/api/agents/alice", "supervisor", {"action": "pause", "reason": "coaching"})
        assert code == 200 and json.loads(body)["state"] == "paused:coaching"
        assert http(d, "POST", "/api/reload", "supervisor")[0] == 403
        code, _, body = http(d, "POST", "/api/reload", "admin")
        assert code == 200 and json.loads(body)["reloaded"] is True

        # --- queues and metrics
        code, _, body = http(d, "GET", "/api/queues", "operator")
        q = json.loads(body)["queues"]["sales"]
        assert code == 200 and q["waiting"] == 0 and q["agents"] == {"paused": 1}
        assert q["today"]["offered"] == 1 and q["today"]["answered"] == 1
        code, _, body = http(d, "GET", "/metrics", "operator")
        text = body.decode()
        assert code == 200 and metric(text, "ringmaster_calls_total", disposition="completed") == 1
        assert metric(text, "ringmaster_calls_in_progress") == 0
        assert metric(text, "ringmaster_queue_waiting", queue="sales", channel="voice") == 0
        assert metric(text, "ringmaster_agents", state="paused", channel="voice") == 1
        assert metric(text, "ringmaster_workers", alive="true") == 1
        assert metric(text, "ringmaster_store_last_commit_seconds") is not None
        assert http(d, "GET", "/metrics")[0] == 401
        code, _, body = http(d, "GET", "/openapi.json")
        doc = json.loads(body)
        assert code == 200 and "/api/calls" in doc["paths"]
        # every documented query parameter is taken; anything else is refused
        for path in ("/api/calls", "/api/tasks"):
            good = {"since": "1h", "until": "0s", "queue": "sales", "agent": "alice", "caller": "45",
                    "disposition": "completed", "min_wait": "0", "limit": "5", "channel": "chat", "state": "queued",
                    "direction": "inbound"}
            for prm in doc["paths"][path]["get"]["parameters"]:
                assert http(d, "GET", f"{path}?{prm['name']}={good[prm['name']]}", "operator")[0] == 200, (path, prm)
            assert http(d, "GET", f"{path}?undocumented=1", "operator")[0] == 400
    finally:
        await caller.stop()
        await alice.stop()

