"""Webhooks out with the real daemon: a real aiohttp receiver on loopback verifies every
delivery with the Standard Webhooks reference library (PyPI `standardwebhooks`). Events arrive
in order per call and task, once per webhook-id, through a receiver outage, a daemon stop and
a daemon crash; dead letters show in the API, /metrics and `status` and an admin retry sends
them; a receiver that hangs neither slows routing nor gets more than max_in_flight requests."""

from __future__ import annotations

import asyncio
import base64
import json
import sqlite3
import subprocess
import sys
import time
from collections import defaultdict
from typing import Any

from ringmaster import protocol as p
from tests.helpers.mqtt import Client
from tests.helpers.phone import Phone
from tests.helpers.webhooks import Delivery, Receiver
from tests.test_acd_calls import acd_config, register, wait_agent
from tests.test_api import TOKENS, http, metric

SECRET = "whsec_" + base64.b64encode(b"ringmaster-webhook-test-key-0123").decode()
INTEGRATION = ("chatsys", "chatsys-secret")


def hook(rx: Receiver, path: str = "hook", **kw: Any) -> dict[str, Any]:
    return {"url": rx.url(path), "secret": SECRET, "events": ["*"], "timeout": 2, "backoff_initial": 0.2,
            "backoff_max": 1.0, **kw}


def chat_config(d, agents: tuple[str, ...] = ("ann",)) -> None:  # type: ignore[no-untyped-def]
    d.config["mqtt"] = {"embedded": True, "listen": f"127.0.0.1:{d.ports.base + 8}",
                        "clients": [{"username": INTEGRATION[0], "password": INTEGRATION[1]}]}
    d.config["agents"] = {a: {"softphone": {"username": a, "password": f"{a}-secret"}, "auto_login": False}
                          for a in agents}
    d.config["queues"] = {"chat": {"strategy": "linear", "members": list(agents), "offer_timeout": 10,
                                   "moh": "welcome"}}


def api_config(d) -> None:  # type: ignore[no-untyped-def]
    d.config["http"] = {"listen": f"127.0.0.1:{d.ports.base + 6}",
                        "tokens": [{"name": r, "token": t, "role": r} for r, t in TOKENS.items()]}


def integration(d) -> Client:  # type: ignore[no-untyped-def]
    c = Client(d.ports.base + 8, *INTEGRATION, client_id=f"chat-system-{time.monotonic_ns()}")
    c.subscribe("#")
    return c


def chat(c: Client, task: str, agent: str = "ann") -> float:
    """One chat from tasks/new to completed by `agent`; returns seconds from tasks/new to the offer."""
    t0 = time.monotonic()
    c.publish("tasks/new", {"version": 1, "id": task, "channel": "chat", "queue": "chat", "data": {"customer": "Dana"}})
    c.wait_for(f"agents/{agent}/offers", lambda m: m["event"] == "offer" and m["task"] == task)
    offered = time.monotonic() - t0
    c.publish(f"agents/{agent}/commands", {"version": 1, "command": "accept", "task": task})
    c.wait_for(f"tasks/{task}/events", lambda m: m["event"] == "assigned")
    c.publish(f"agents/{agent}/commands", {"version": 1, "command": "complete", "task": task})
    c.wait_for(f"tasks/{task}/events", lambda m: m["event"] == "completed")
    return offered


def outbox(d, state: str = "pending") -> list[dict[str, Any]]:  # type: ignore[no-untyped-def]
    con = sqlite3.connect(d.db_path)
    con.row_factory = sqlite3.Row
    try:
        return [dict(r) for r in con.execute("SELECT * FROM webhook_outbox WHERE state=? ORDER BY id", (state,))]
    finally:
        con.close()


def wait_outbox(d, count: int, timeout: float = 10.0) -> list[dict[str, Any]]:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    rows: list[dict[str, Any]] = []
    while time.monotonic() < deadline:
        rows = outbox(d)
        if len(rows) >= count:
            return rows
        time.sleep(0.05)
    raise AssertionError(f"{count} pending deliveries not stored in {timeout}s: {len(rows)}")


def lanes(got: list[Delivery]) -> dict[str, list[Delivery]]:
    out: dict[str, list[Delivery]] = defaultdict(list)
    for g in got:
        d = g.data
        lane = f"call:{d['call_id']}" if g.type.startswith(("call.", "callback.", "voicemail.")) else \
            f"task:{d['task']}" if g.type.startswith("task.") else f"agent:{d['agent']}"
        out[lane].append(g)
    return out


def assert_once_and_in_order(got: list[Delivery], expected_ids: list[str], restarted: bool = False) -> None:
    """Each expected webhook-id arrived exactly once, every signature verified, and within each
    lane the events arrived in the order they happened (their own timestamps). restarted: a
    started daemon also sends each agent's state at start (events of its own, not expected)."""
    ids = [g.id for g in got]
    assert len(ids) == len(set(ids)), [i for i in ids if ids.count(i) > 1]
    extra = [g for g in got if g.id not in set(expected_ids)]
    assert set(expected_ids) <= set(ids)
    assert all(restarted and g.type == "agent.state" for g in extra), [(g.type, g.data) for g in extra]
    assert all(g.verified for g in got)
    for lane, events in lanes(got).items():
        stamps = [g.body["timestamp"] for g in events]
        assert stamps == sorted(stamps), (lane, [(g.type, g.body["timestamp"]) for g in events])
        if lane.startswith("task:"):
            assert [g.type for g in events] == ["task.offered", "task.accepted", "task.completed"], lane


async def test_call_chat_and_agent_events_arrive_signed_in_order_and_each_webhook_gets_its_types(daemon_factory):
    d = daemon_factory(workers=1, start=False)
    acd_config(d, {"strategy": "linear", "members": ["alice"]})
    d.config["mqtt"] = {"embedded": True, "listen": f"127.0.0.1:{d.ports.base + 8}",
                        "clients": [{"username": INTEGRATION[0], "password": INTEGRATION[1]}]}
    rx = Receiver(d.ports.base + 7, SECRET).up()
    d.config["webhooks"] = {"crm": hook(rx, "all"),
                            "billing": hook(rx, "ended", events=["call.ended"], max_in_flight=1)}
    d.start()
    mq = integration(d)
    agent = await Phone("alice", d.ports.caller(0), d.ports.base + 80).start()
    caller = await Phone("4511223344", d.ports.caller(1), d.ports.base + 90).start()
    try:
        assert (await register(agent, d, "alice", "alice-secret")).registered
        wait_agent(d, "alice", "available")
        a = await caller.call(f"sip:500@{d.edge}")
        inc = await agent.wait(p.Incoming, timeout=10)
        agent.send(p.Answer(leg=inc.leg))
        await agent.wait(p.MediaReady, lambda m: m.leg == inc.leg)
        await asyncio.sleep(0.5)
        caller.send(p.Hangup(leg=a))
        await agent.wait(p.CallState, lambda m: m.leg == inc.leg and m.state == "disconnected", timeout=5)
        wait_agent(d, "alice", "available")
        mq.publish("tasks/new", {"version": 1, "id": "chat-1", "channel": "chat", "queue": "sales"})
        await mq.until("agents/alice/offers", lambda m: m["event"] == "offer" and m["task"] == "chat-1")
        mq.publish("agents/alice/commands", {"version": 1, "command": "accept", "task": "chat-1"})
        await mq.until("tasks/chat-1/events", lambda m: m["event"] == "assigned")
        mq.publish("agents/alice/commands", {"version": 1, "command": "complete", "task": "chat-1"})
        await mq.until("tasks/chat-1/events", lambda m: m["event"] == "completed")
    finally:
        await caller.stop()
        await agent.stop()
        mq.close()
    call_id = d.wait_calls_ended(1)[0]["call_id"]
    ended = rx.wait(1, "ended")
    got = rx.wait(1, "all")
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and not any(g.type == "task.completed" for g in got):
        time.sleep(0.1)
        got = rx.got("all")
    time.sleep(0.5)  # nothing more is due: whatever came twice would be here now
    got, ended = rx.got("all"), rx.got("ended")
    assert rx.bad_signatures == 0 and all(g.verified for g in got + ended)
    by_lane = lanes(got)
    assert [g.type for g in by_lane[f"call:{call_id}"]] == ["call.offered", "call.answered", "call.ended"]
    offered, answered, end = by_lane[f"call:{call_id}"]
    assert offered.data["queue"] == "sales" and offered.data["agents"] == ["alice"]
    assert offered.data["caller"] == "4511223344"
    assert answered.data["agent"] == "alice" and answered.data["wait"] >= 0
    assert end.data["disposition"] == "completed" and end.data["by"] == "caller" and end.data["flow"] == "main"
    assert [g.type for g in by_lane["task:chat-1"]] == ["task.offered", "task.accepted", "task.completed"]
    assert by_lane["task:chat-1"][1].data["agent"] == "alice"
    states = [g.data["summary"] for g in by_lane["agent:alice"]]
    assert "on-call" in states and "available" in states
    # a state is sent when it changed, not again (MQTT republishes retained states after a reconnect)
    alice = by_lane["agent:alice"]
    assert all(a.data != b.data for a, b in zip(alice, alice[1:], strict=False))
    # the other webhook wants call.ended only: the same event, the same webhook-id
    assert [(g.type, g.data["call_id"]) for g in ended] == [("call.ended", call_id)]
    assert ended[0].id == end.id
    ids = [g.id for g in got]
    assert len(ids) == len(set(ids))
    d.stop()
    assert outbox(d) == [] and outbox(d, "dead") == []  # delivered rows leave the outbox
    rx.close()


def test_receiver_down_for_10_s_then_up_gets_every_event_once_in_order(daemon_factory):
    d = daemon_factory(workers=1, start=False)
    chat_config(d)
    api_config(d)
    rx = Receiver(d.ports.base + 7, SECRET)  # not listening yet: connection refused
    d.config["webhooks"] = {"crm": hook(rx)}
    d.start()
    mq = integration(d)
    try:
        t0 = time.monotonic()
        mq.publish("agents/ann/commands", {"version": 1, "command": "login"})
        mq.wait_for("agents/ann/state", lambda s: s["status"] == "available")
        for i in range(6):
            chat(mq, f"chat-{i}")
        pending = wait_outbox(d, 6 * 3 + 1)
        _, _, text = http(d, "GET", "/metrics", "operator")
        assert (metric(text.decode(), "ringmaster_webhook_pending", webhook="crm") or 0) >= 19
        assert (metric(text.decode(), "ringmaster_webhook_failed_attempts_total", webhook="crm") or 0) >= 1
        time.sleep(max(0.0, 10 - (time.monotonic() - t0)))
        assert rx.requests == 0
        pending = outbox(d)
        assert max(r["attempts"] for r in pending) >= 2  # retried while it was down
        rx.up()
        got = rx.wait(len(pending), timeout=10)
        time.sleep(1.5)  # nothing is sent twice
        got = rx.got()
        assert_once_and_in_order(got, [r["event_id"] for r in pending])
        assert {g.data["task"] for g in got if g.type.startswith("task.")} == {f"chat-{i}" for i in range(6)}
        assert outbox(d) == []
        _, _, text = http(d, "GET", "/metrics", "operator")
        assert metric(text.decode(), "ringmaster_webhook_pending", webhook="crm") == 0
        assert metric(text.decode(), "ringmaster_webhook_deliveries_total", webhook="crm") == len(pending)
    finally:
        mq.close()
        rx.close()


def test_the_outbox_survives_a_daemon_stop_and_a_daemon_crash(daemon_factory):
    d = daemon_factory(workers=1, start=False)
    chat_config(d)
    rx = Receiver(d.ports.base + 7, SECRET)
    d.config["webhooks"] = {"crm": hook(rx)}
    d.start()
    mq = integration(d)
    try:
        mq.publish("agents/ann/commands", {"version": 1, "command": "login"})
        mq.wait_for("agents/ann/state", lambda s: s["status"] == "available")
        for i in range(3):
            chat(mq, f"chat-{i}")
        before_stop = wait_outbox(d, 3 * 3 + 1)
    finally:
        mq.close()
    assert d.stop() == 0
    stopped = outbox(d)  # what the stopped daemon left: at least everything made before the stop
    assert {r["event_id"] for r in before_stop} <= {r["event_id"] for r in stopped}
    rx.up()
    d.start()
    got = rx.wait(len(stopped), timeout=15)
    time.sleep(1.0)
    assert_once_and_in_order(rx.got(), [r["event_id"] for r in stopped], restarted=True)
    # a crash: deliveries committed before it are sent by the next start
    rx.down()
    mq = integration(d)
    try:
        mq.publish("agents/ann/commands", {"version": 1, "command": "pause", "reason": "lunch"})
        mq.wait_for("agents/ann/state", lambda s: s["status"] == "paused")
        mq.publish("agents/ann/commands", {"version": 1, "command": "unpause"})
        mq.wait_for("agents/ann/state", lambda s: s["status"] == "available")
        chat(mq, "chat-after")
        crashed = wait_outbox(d, 3 + 2)
        time.sleep(0.5)  # a batch commit is milliseconds: everything made is stored by now
        crashed = outbox(d)
    finally:
        mq.close()
    assert d.proc is not None
    d.proc.kill()
    d.proc.wait(10)
    d.stop()
    before = len(rx.got())
    rx.up()
    d.start()
    rx.wait(before + len(crashed), timeout=15)
    time.sleep(1.0)
    got = rx.got()[before:]
    assert_once_and_in_order(got, [r["event_id"] for r in crashed], restarted=True)
    assert [g.type for g in got if g.data.get("task") == "chat-after"] == \
        ["task.offered", "task.accepted", "task.completed"]
    paused = [g for g in got if g.type == "agent.state" and g.data["status"] == "paused"]
    assert paused and paused[0].data["reason"] == "lunch"
    rx.close()


def test_dead_letters_show_in_api_metrics_and_status_and_an_admin_retry_delivers_them(daemon_factory):
    d = daemon_factory(workers=1, start=False)
    chat_config(d)
    api_config(d)
    rx = Receiver(d.ports.base + 7, SECRET).up()
    rx.mode = "fail"
    d.config["webhooks"] = {"crm": hook(rx, events=["agent.state"], max_attempts=2, backoff_initial=0.1,
                                        backoff_max=0.2)}
    d.start()
    for action in ("login", "pause", "unpause"):
        status, _, _ = http(d, "POST", "/api/agents/ann", "supervisor", {"action": action, "reason": "x"} if action == "pause" else {"action": action})
        assert status == 200
        time.sleep(0.3)  # apart by more than the 50 ms agent states are coalesced over
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and len(outbox(d, "dead")) < 4:
        time.sleep(0.1)
    dead_rows = outbox(d, "dead")  # ann's state at start, then after each change
    assert len(dead_rows) == 4 and all(r["attempts"] == 2 and r["last_status"] == 500 for r in dead_rows)
    status, _, body = http(d, "GET", "/api/webhooks/dead-letters", "operator")
    assert status == 200
    listed = json.loads(body)["dead_letters"]
    assert [x["event_id"] for x in listed] == [r["event_id"] for r in dead_rows]
    assert listed[0]["event"] == "agent.state" and listed[0]["payload"]["data"]["agent"] == "ann"
    assert "max_attempts" in listed[0]["last_error"] and listed[0]["last_status"] == 500
    _, _, text = http(d, "GET", "/metrics", "operator")
    assert metric(text.decode(), "ringmaster_webhook_dead_letters", webhook="crm") == 4
    assert metric(text.decode(), "ringmaster_webhook_failed_attempts_total", webhook="crm") == 8
    st = d.status()
    assert st is not None and st["webhooks"]["crm"]["dead"] == 4 and st["webhooks"]["crm"]["pending"] == 0
    text_status = subprocess.run([sys.executable, "-m", "ringmaster.cli", "status", "-c", str(d.config_path)],
                                 capture_output=True, text=True, timeout=15).stdout
    assert "webhook crm: 0 pending, 0 in flight, 4 dead letters" in text_status, text_status
    status, _, _ = http(d, "GET", "/api/webhooks/dead-letters?limit=0", "operator")
    assert status == 400
    status, _, _ = http(d, "POST", f"/api/webhooks/dead-letters/{listed[0]['id']}/retry", "operator")
    assert status == 403  # an admin's
    status, _, _ = http(d, "POST", "/api/webhooks/dead-letters/999999/retry", "admin")
    assert status == 404
    requests_before = rx.requests
    rx.mode = "ok"
    for x in listed:
        status, _, body = http(d, "POST", f"/api/webhooks/dead-letters/{x['id']}/retry", "admin")
        assert status == 200, body
    got = rx.wait(4)
    assert [g.id for g in got] == [x["event_id"] for x in listed] and all(g.verified for g in got)
    assert [g.data["status"] for g in got] == ["logged-out", "available", "paused", "available"]
    assert rx.requests == requests_before + 4
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and (outbox(d, "dead") or outbox(d)):
        time.sleep(0.1)
    assert outbox(d, "dead") == [] and outbox(d) == []
    _, _, text = http(d, "GET", "/metrics", "operator")
    assert metric(text.decode(), "ringmaster_webhook_dead_letters", webhook="crm") == 0
    assert metric(text.decode(), "ringmaster_webhook_deliveries_total", webhook="crm") == 4
    status, _, body = http(d, "GET", "/api/webhooks", "operator")
    assert json.loads(body)["webhooks"]["crm"]["dead"] == 0
    rx.close()


async def test_a_hanging_receiver_slows_neither_calls_nor_chats_and_gets_at_most_max_in_flight(daemon_factory):
    d = daemon_factory(workers=1, start=False)
    chat_config(d, ("ann", "ben", "cy"))
    rx = Receiver(d.ports.base + 7, SECRET).up()
    rx.mode = "hang"
    d.config["webhooks"] = {"crm": hook(rx, timeout=1.0, max_in_flight=2, backoff_initial=0.1, backoff_max=0.2)}
    d.start()
    mq = integration(d)
    caller = await Phone("4511223344", d.ports.caller(1), d.ports.base + 90).start()
    try:
        for a in ("ann", "ben", "cy"):  # three agents: three lanes of agent states, all due at once
            mq.publish(f"agents/{a}/commands", {"version": 1, "command": "login"})
        offers = [chat(mq, f"chat-{i}", "ann") for i in range(8)]
        t0 = time.monotonic()
        leg = await caller.call(f"sip:100@{d.edge}")  # the demo flow: answered, a prompt, hang-up
        answered = time.monotonic() - t0
        await caller.wait(p.CallState, lambda m: m.leg == leg and m.state == "disconnected", timeout=10)
    finally:
        await caller.stop()
        mq.close()
    assert max(offers) < 0.5, offers  # typically a few ms: the hung deliveries are elsewhere
    assert answered < 1.5, answered
    assert rx.requests >= 2 and rx.max_in_flight <= 2, (rx.requests, rx.max_in_flight)
    st = d.status()
    assert st is not None and st["webhooks"]["crm"]["in_flight"] <= 2 and st["webhooks"]["crm"]["pending"] >= 20
    assert "no answer within 1 s" in st["webhooks"]["crm"]["last_error"]
    rx.close()


def test_a_reload_adds_an_endpoint_and_moves_one_to_a_new_url(daemon_factory):
    d = daemon_factory(workers=1, start=False)
    chat_config(d)
    api_config(d)
    rx = Receiver(d.ports.base + 7, SECRET).up()
    d.config["webhooks"] = {"crm": hook(rx, "old", events=["agent.state"])}
    d.start()
    assert http(d, "POST", "/api/agents/ann", "supervisor", {"action": "login"})[0] == 200
    rx.wait(2, "old")  # ann's state at start, then logged in
    d.config["webhooks"] = {"crm": hook(rx, "new", events=["agent.state"]),
                            "wfm": hook(rx, "wfm", events=["agent.state"])}
    d.write_config()
    status, _, body = http(d, "POST", "/api/reload", "admin")
    assert status == 200, body
    assert http(d, "POST", "/api/agents/ann", "supervisor", {"action": "pause", "reason": "lunch"})[0] == 200
    moved, added = rx.wait(1, "new"), rx.wait(1, "wfm")
    assert [g.data["status"] for g in moved] == ["paused"] and [g.data["status"] for g in added] == ["paused"]
    assert moved[0].id == added[0].id and len(rx.got("old")) == 2
    d.config["webhooks"]["crm"]["secret"] = "whsec_short"
    d.write_config()
    status, _, body = http(d, "POST", "/api/reload", "admin")
    assert status == 422 and b"webhooks.crm.secret" in body  # a bad endpoint keeps the live ones
    assert http(d, "POST", "/api/agents/ann", "supervisor", {"action": "unpause"})[0] == 200
    assert [g.data["status"] for g in rx.wait(2, "new")] == ["paused", "available"]
    rx.close()


async def test_callback_voicemail_and_the_calls_end_arrive_without_mqtt(daemon_factory, tmp_path):
    from tests.helpers.audio import write_tone
    from tests.test_voicemail import leave_message, vm_config

    d = daemon_factory(workers=1, start=False)
    vm_config(d)  # no MQTT: webhooks do not need a broker
    d.config["flows"]["vm-alice"] = [{"callback": "sales"}, {"voicemail": {"box": "alice", "max_seconds": 20}},
                                     "hangup"]
    d.config["sip"]["trunks"] = {"carrier": {"address": f"127.0.0.1:{d.ports.caller(9)}"}}
    d.config["queues"]["sales"]["callback"] = {"route": "carrier", "caller_id": "4570000000"}
    rx = Receiver(d.ports.base + 7, SECRET).up()
    d.config["webhooks"] = {"crm": hook(rx, events=["callback.requested", "voicemail.new", "call.ended"])}
    d.start()
    write_tone(tmp_path / "voice.wav", 1700.0, 1.5)
    caller = await Phone("4511223344", d.ports.caller(0), d.ports.base + 80).start()
    try:
        await leave_message(d, caller, "100", tmp_path / "voice.wav")
    finally:
        await caller.stop()
    call_id = d.wait_calls_ended(1)[0]["call_id"]
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline and len(rx.got()) < 3:
        await asyncio.sleep(0.1)
    got = rx.got()
    assert sorted(g.type for g in got) == ["call.ended", "callback.requested", "voicemail.new"], [g.type for g in got]
    assert all(g.verified and g.data["call_id"] == call_id for g in got)
    assert got[0].type == "callback.requested" and got[0].data["number"] == "4511223344"
    assert got[0].data["queue"] == "sales"
    stamps = [g.body["timestamp"] for g in got]
    assert stamps == sorted(stamps)  # one lane: the call's events in the order they happened
    vm = next(g for g in got if g.type == "voicemail.new")
    assert vm.data["box"] == "alice" and vm.data["caller"] == "4511223344" and vm.data["seconds"] > 1
    end = next(g for g in got if g.type == "call.ended")
    assert end.data["disposition"] == "completed" and end.data["flow"] == "vm-alice"
    assert end.data["variables"]["callback_requested"] == "4511223344"
    rx.close()
