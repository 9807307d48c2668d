"""Calls agents place themselves (issue 12 item 4) and calls from a chat (issue 13 item 6):
the softphone's INVITE digest-checked at the edge as the agent, the dial plan's outbound rules
(number patterns per agent or profile, the trunk's own allowed numbers), click-to-dial by API
and MQTT (her phone rings first), a chat's customer called back. Real daemon, Kamailio, workers,
pjsua2 agent phones and a SIPp UAS as the trunk and customer (it echoes RTP, so the agent
hearing her own tone back proves audio both ways)."""

from __future__ import annotations

import asyncio
import json
import re
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from ringmaster import protocol as p
from ringmaster.config import load_config
from ringmaster.yamlsource import ConfigInvalid
from tests.helpers.audio import has_tone, read_wav, write_tone
from tests.helpers.mqtt import Client
from tests.helpers.phone import Phone
from tests.helpers.rawsip import RawSip, status_of
from tests.helpers.rawuac import Listener
from tests.helpers.sipp import SCENARIOS, agent_scenario
from tests.test_acd_calls import agents_up, wait_agent
from tests.test_api import http
from tests.test_presence_mqtt import INTEGRATION

ALICE, HOLD = 1300.0, 440.0
TOKENS = {"alice-token-0123456789": "alice", "bob-token-0123456789": "bob"}
CUSTOMER = "+4522334455"


def _config(d, trunk_port: int, password: str = "", record: bool = False) -> None:  # type: ignore[no-untyped-def]
    """alice and bob on softphones, alice in queue sales; a trunk (with digest credentials when
    `password` is given) that carries Danish numbers; alice may dial them, bob nothing."""
    write_tone(d.dir / "prompts" / "hold.wav", HOLD, 3.0)
    # only the queue caller's port is a trusted trunk: the agents' phones are not (never by address)
    d.config["sip"]["trusted"] = [{"name": "callers", "address": f"127.0.0.1:{d.ports.caller(1)}"}]
    trunk: dict[str, Any] = {"address": f"127.0.0.1:{trunk_port}", "allowed": [r"\+45[0-9]{8}"],
                             "caller_id": "+4570001000", "identity": "both"}
    if password:
        trunk |= {"username": "acme", "password": password}
    d.config["sip"]["trunks"] = {"carrier": trunk}
    d.config["agents"] = {a: {"softphone": {"username": a, "password": f"{a}-secret"}, "mqtt_password": f"{a}-mqtt-pw"}
                          for a in ("alice", "bob")}
    d.config["agents"]["alice"]["caller_id"] = "+4570001001"
    d.config["outbound"] = [{"name": "denmark", "numbers": [r"\+45[2-9][0-9]{7}"], "route": "carrier",
                             "agents": ["alice"], "caller_id": "agent", "record": record}]
    d.config["queues"] = {"sales": {"moh": "hold", "strategy": "linear", "members": ["alice"]},
                          "chat": {"moh": "hold", "strategy": "linear", "members": ["alice"]}}
    d.config["flows"]["main"] = [{"queue": "sales"}, "hangup"]
    d.config["entry_points"].append({"number": "500", "flow": "main"})
    d.config["http"] = {"listen": f"127.0.0.1:{d.ports.base + 6}",
                        "tokens": [{"name": name, "token": token, "role": "agent", "agent": name}
                                   for token, name in TOKENS.items()]
                        + [{"name": "op", "token": "op-token-0123456789", "role": "operator"}]}


def _mqtt(d) -> None:  # type: ignore[no-untyped-def]
    d.config["mqtt"] = {"embedded": True, "listen": f"127.0.0.1:{d.ports.base + 8}",
                        "clients": [{"username": INTEGRATION[0], "password": INTEGRATION[1]}]}


def _carrier(scenario: Path, port: int, cwd: Path, calls: int = 1) -> subprocess.Popen[str]:
    return subprocess.Popen(["sipp", "-sf", str(scenario), "-i", "127.0.0.1", "-p", str(port), "-m", str(calls),
                             # its media in the test's own port block: a caller port's RTP sink slot
                             # (base+30+i -> base+60+i; +2000 left the block, past 65535 at the top)
                             "-rtp_echo", "-mp", str(port + 30), "-timeout", "40s", "-nostdin",
                             "-trace_msg", "-fd", "1"],
                            cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _received(cwd: Path) -> list[str]:
    logs = list(cwd.glob("*_messages.log"))
    text = logs[0].read_text() if logs else ""
    return [m.group(1) for m in re.finditer(r"message received \[\d+\] bytes :\n\n(\w+ sip:[^\n]*\n(?:[^\n]+\n)*)", text)]


def _rows(d, sql: str, *args: Any) -> list[tuple[Any, ...]]:  # type: ignore[no-untyped-def]
    con = sqlite3.connect(d.db_path)
    try:
        return [tuple(r) for r in con.execute(sql, args)]
    finally:
        con.close()


def _outbound(d) -> list[dict[str, Any]]:  # type: ignore[no-untyped-def]
    return [r for r in d.calls() if r["direction"] == "outbound"]


async def _wait_outbound_ended(d, count: int, timeout: float = 15.0) -> list[dict[str, Any]]:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    rows: list[dict[str, Any]] = []
    while time.monotonic() < deadline:
        rows = _outbound(d)
        if len([r for r in rows if r["disposition"] != "in_progress"]) >= count:
            return rows
        await asyncio.sleep(0.2)
    raise AssertionError(f"{count} outbound calls not ended: {rows}")


async def _hears_own_tone(phone: Phone, leg: str, tmp: Path, name: str) -> bool:
    """The phone plays its tone and records what comes back: the customer's SIPp echoes RTP,
    so hearing it proves the bridge carries audio both ways."""
    phone.send(p.Play(leg=leg, files=(str(tmp / "alice.wav"),), loop=True))
    await asyncio.sleep(0.5)
    path = tmp / f"{name}.wav"
    phone.send(p.RecordStart(rec_id=name, legs=(leg,), path=str(path)))
    await asyncio.sleep(1.5)
    phone.send(p.RecordStop(rec_id=name))
    await phone.wait(p.RecordingDone, lambda m: m.rec_id == name)
    return has_tone(read_wav(path)[0], ALICE)


async def test_agent_dials_a_permitted_number_through_a_challenging_trunk_is_busy_and_both_hear_each_other(
        daemon_factory, tmp_path: Path):
    d = daemon_factory(workers=1, start=False)
    trunk_port = d.ports.caller(5)
    _config(d, trunk_port, password="Tr0nk-secret")
    d.start()
    write_tone(tmp_path / "alice.wav", ALICE, 30)
    carrier = _carrier(SCENARIOS / "uas_trunk_auth.xml", trunk_port, tmp_path)
    (alice,) = await agents_up(d, ("alice",))
    caller = await Phone("4511223344", d.ports.caller(1), d.ports.base + 90).start()
    try:
        leg = "alice-out1"
        alice.send(p.Dial(leg=leg, uri=f"sip:{CUSTOMER}@{d.edge}", account="alice"))
        st = await alice.wait(p.CallState, lambda m: m.leg == leg and m.state in ("confirmed", "disconnected"),
                              timeout=15)
        assert st.state == "confirmed", (st, d.log_text()[-3000:])
        await alice.wait(p.MediaReady, lambda m: m.leg == leg)
        wait_agent(d, "alice", "on-call")
        # busy in presence: a queue caller is not offered to her while she is on her own call
        q = await caller.call(f"sip:500@{d.edge}")
        await asyncio.sleep(2.0)
        assert not [m for m in alice.events if isinstance(m, p.Incoming)]
        assert await _hears_own_tone(alice, leg, tmp_path, "out1")
        alice.send(p.Hangup(leg=leg))
        await alice.wait(p.CallState, lambda m: m.leg == leg and m.state == "disconnected")
        # free again: now the waiting caller rings her
        inc = await alice.wait(p.Incoming, timeout=10)
        assert inc.leg
        await caller.hangup(q)
    finally:
        await caller.stop()
        await alice.stop()
        if carrier.poll() is None and not any(isinstance(m, p.MediaReady) for m in alice.events):
            carrier.kill()
    out, _ = carrier.communicate(timeout=45)
    assert carrier.returncode == 0, out[-2000:]
    invites = [r for r in _received(tmp_path) if r.startswith("INVITE ")]
    assert len(invites) == 2, invites
    assert "Authorization:" not in invites[0]
    assert re.search(r'\nAuthorization: Digest username="acme", realm="carrier.example"', invites[1]), invites[1]
    # caller ID: alice's own number (the rule says agent), in From and P-Asserted-Identity
    assert re.search(r"\nFrom: <sip:\+4570001001@127\.0\.0\.1>", invites[1]), invites[1]
    assert re.search(r"\nP-Asserted-Identity: <sip:\+4570001001@127\.0\.0\.1>", invites[1]), invites[1]
    assert "X-Ringmaster" not in invites[1] and "alice-secret" not in invites[1]
    rows = await _wait_outbound_ended(d, 1)
    (row,) = rows
    assert (row["agent"], row["called"], row["route"], row["outbound_rule"], row["disposition"]) == \
        ("alice", CUSTOMER, "carrier", "denmark", "completed")
    assert row["talk_seconds"] > 1.5 and row["hangup_by"] == "agent"
    assert d.events("outbound.connected")


async def test_forbidden_numbers_a_wrong_password_and_strangers_are_refused_and_nothing_reaches_the_trunk(
        daemon_factory, tmp_path: Path):
    d = daemon_factory(workers=1, start=False)
    trunk_port = d.ports.caller(5)
    _config(d, trunk_port)
    d.start()
    trunk = Listener(trunk_port)
    (alice, bob) = await agents_up(d, ("alice", "bob"))
    try:
        # a premium-rate number no rule lists, a Danish one outside her rule (+451...: it wants
        # 2-9 after 45), and bob, whom no rule lets dial anything
        for phone, user, number in ((alice, "alice", "+19005550100"), (alice, "alice", "+4512345678"),
                                    (bob, "bob", "+4522334455")):
            leg = f"{user}-{number}"
            phone.send(p.Dial(leg=leg, uri=f"sip:{number}@{d.edge}", account=user))
            st = await phone.wait(p.CallState, lambda m, leg=leg: m.leg == leg and m.state == "disconnected",
                                  timeout=10)
            assert (st.code, st.reason) == (403, "Not Allowed"), st
        # her phone with the wrong password: challenged again, never placed
        mark = len(alice.events)
        alice.send(p.Register(reg_id="alice-bad", registrar=f"sip:{d.edge}", aor="sip:alice@127.0.0.1",
                              username="alice", password="wrong-password", expires=60))
        await alice.wait(p.RegState, lambda m: m.reg_id == "alice-bad", timeout=10, after=mark)
        alice.send(p.Dial(leg="alice-bad1", uri=f"sip:+4522334455@{d.edge}", account="alice-bad"))
        st = await alice.wait(p.CallState, lambda m: m.leg == "alice-bad1" and m.state == "disconnected", timeout=10)
        assert st.code in (401, 403, 407), st
        # a stranger (no agent's name in From): 403 at the edge, no challenge
        raw = RawSip(d.ports.caller(7))
        try:
            raw.send(raw.invite(d.ports.edge, user="+4522334455"), d.ports.edge)
            assert status_of(raw.final_reply(3.0)) == 403
        finally:
            raw.close()
        # the refusal's reason as SIP carries it: 403 with a Warning (SIPp as her softphone)
        scenario = tmp_path / "uac_agent_auth.xml"
        scenario.write_text((SCENARIOS / "uac_agent_auth.xml").read_text().replace("@USER@", "alice")
                            .replace("@PASSWORD@", "alice-secret").replace("@CODE@", "403"))
        sipp = subprocess.run(["sipp", d.edge, "-sf", str(scenario), "-s", "+4912345678", "-i", "127.0.0.1", "-p",
                               str(d.ports.caller(8)), "-m", "1", "-timeout", "15s", "-timeout_error", "-nostdin",
                               "-trace_msg"], cwd=tmp_path, capture_output=True, text=True, timeout=30)
        assert sipp.returncode == 0, sipp.stdout[-2000:] + sipp.stderr[-2000:]
        answer = next(tmp_path.glob("uac_agent_auth_*_messages.log")).read_text()
        assert re.search(r'SIP/2.0 403 Not Allowed\n(?:.+\n)*?Warning: 399 ringmaster "\+4912345678 is not a number '
                         r"agent 'alice' may dial", answer), answer[-3000:]
        trunk_heard = trunk.methods()
    finally:
        trunk.close()
        await alice.stop()
        await bob.stop()
    assert trunk_heard == [], trunk_heard  # nothing reached the trunk
    rows = await _wait_outbound_ended(d, 4)
    assert sorted((r["agent"], r["called"], r["disposition"]) for r in rows) == [
        ("alice", "+19005550100", "refused"), ("alice", "+4512345678", "refused"), ("alice", "+4912345678", "refused"),
        ("bob", "+4522334455", "refused")]
    reasons = {r[0]: json.loads(r[1])["reason"] for r in _rows(
        d, "SELECT c.called, e.data FROM call_events e JOIN calls c USING (call_id) WHERE e.event='OUTBOUND_REFUSED'")}
    assert "is not a number agent 'alice' may dial" in reasons["+19005550100"]
    assert "may not place calls" in reasons["+4522334455"]
    assert len(d.events("outbound.refused")) == 4
    deadline = time.monotonic() + 12  # the controller reads the edge's counters every few seconds
    while time.monotonic() < deadline and d.status()["edge"]["counters"].get("agent_calls", 0) < 4:
        await asyncio.sleep(0.5)
    assert d.status()["edge"]["counters"]["agent_calls"] == 4  # the four authenticated INVITEs


def test_check_names_the_place_of_a_bad_outbound_rule(tmp_path: Path):
    base = """\
sip:
  listen: 127.0.0.1:25060
  trunks:
    carrier:
      address: 127.0.0.1:25080
      allowed: ['\\+45[0-9]{8}']
agents:
  alice:
    softphone: {username: alice, password: alice-secret}
outbound:
  - name: dk
    numbers: ['\\+45[0-9]{8}']
    route: carrier
    agents: [alice]
flows:
  demo: [hangup]
entry_points:
  - {number: "100", flow: demo}
"""
    (tmp_path / "prompts").mkdir()
    f = tmp_path / "sip.yaml"
    f.write_text(base)
    assert load_config(f).outbound[0].route == "carrier"
    for change, where, expected in [
        (("route: carrier", "route: carier"), "sip.yaml:13:", "route 'carier' is not a trunk of sip.trunks (did you mean 'carrier'?)"),
        (("numbers: ['\\+45[0-9]{8}']", "numbers: ['(+45']"), "sip.yaml:12:", "pattern '(+45'"),
        (("numbers: ['\\+45[0-9]{8}']", "numbers: ['\\+[0-9]+']"), "sip.yaml:12:",
         "a number trunk 'carrier' does not allow"),
        (("numbers: ['\\+45[0-9]{8}']", "numbers: ['(?!900)[0-9]+']"), "sip.yaml:12:", "cannot be checked at the edge"),
        (("agents: [alice]", "agents: [alise]"), "sip.yaml:14:", "unknown agent 'alise'"),
    ]:
        text = base.replace(*change)
        assert text != base, change
        f.write_text(text)
        with pytest.raises(ConfigInvalid) as exc:
            load_config(f)
        errors = [str(e) for e in exc.value.errors]
        assert any(where in e and expected in e for e in errors), (change, errors)


def _customer(tmp: Path, port: int, calls: int) -> subprocess.Popen[str]:
    """The customer's phone behind a trunk that does not challenge: answers after 0.5-1 s and
    echoes RTP until our BYE."""
    return _carrier(agent_scenario(tmp, copy_record_route=True), port, tmp, calls)


async def _answer_and_talk(d, alice: Phone, tmp: Path, name: str, count: int) -> p.Incoming:  # type: ignore[no-untyped-def]
    """Her phone rings first (the customer's number on it); she answers, the customer's phone
    rings and answers, she hears herself through the customer's echo, and hangs up."""
    inc = await alice.wait(p.Incoming, timeout=10)
    alice.events.remove(inc)
    alice.send(p.Answer(leg=inc.leg))
    await alice.wait(p.MediaReady, lambda m: m.leg == inc.leg)
    await asyncio.to_thread(d.wait_event, "outbound.connected", count, 15.0)
    wait_agent(d, "alice", "on-call")
    assert await _hears_own_tone(alice, inc.leg, tmp, name)
    alice.send(p.Hangup(leg=inc.leg))
    await alice.wait(p.CallState, lambda m: m.leg == inc.leg and m.state == "disconnected")
    return inc


async def test_click_to_dial_by_api_and_mqtt_rings_the_agent_first_then_the_customer(daemon_factory, tmp_path: Path):
    d = daemon_factory(workers=1, start=False)
    trunk_port = d.ports.caller(5)
    _config(d, trunk_port, record=True)
    _mqtt(d)
    d.start()
    write_tone(tmp_path / "alice.wav", ALICE, 30)
    customer = _customer(tmp_path, trunk_port, 2)
    (alice,) = await agents_up(d, ("alice",))
    desk = Client(d.ports.base + 8, "alice", "alice-mqtt-pw", client_id="desk-alice")
    watcher = Client(d.ports.base + 8, *INTEGRATION, client_id="crm")
    try:
        watcher.subscribe("errors")
        watcher.subscribe("calls/events")
        # another agent's token, an operator's, a number her rules do not list: refused
        for token, body, code, text in (
                ("bob-token-0123456789", {"number": CUSTOMER}, 403, "agent's own"),
                ("op-token-0123456789", {"number": CUSTOMER}, 403, "agent's own"),
                ("alice-token-0123456789", {"number": "+19005550100"}, 400, "is not a number agent 'alice' may dial"),
                ("alice-token-0123456789", {"number": "12; DROP"}, 400, "is not a number"),
                ("alice-token-0123456789", {"to": CUSTOMER}, 400, "unknown field")):
            status, _, raw = http(d, "POST", "/api/agents/alice/dial", token=token, body=body)
            assert status == code and text in json.loads(raw)["error"], (status, raw)
        status, _, raw = http(d, "POST", "/api/agents/alice/dial", token="alice-token-0123456789",
                              body={"number": CUSTOMER})
        assert status == 200, raw
        api_call = json.loads(raw)["call_id"]
        inc = await _answer_and_talk(d, alice, tmp_path, "api", 1)
        assert dict(inc.headers)["X-Ringmaster-Outbound"] == CUSTOMER
        # MQTT: a refused number on `errors`, then the same call from her desk
        desk.publish("agents/alice/commands", {"version": 1, "command": "dial", "number": "+19005550100"})
        err = await watcher.until("errors", lambda m: "may dial" in m.get("error", ""))
        assert err["topic"].endswith("agents/alice/commands") and err["field"] == "number"
        wait_agent(d, "alice", "available")
        desk.publish("agents/alice/commands", {"version": 1, "command": "dial", "number": CUSTOMER})
        await _answer_and_talk(d, alice, tmp_path, "mqtt", 2)
        ended = await watcher.until("calls/events", lambda m: m["event"] == "outbound_ended" and m["via"] == "mqtt")
        assert ended["disposition"] == "completed" and ended["agent"] == "alice"
    finally:
        desk.close()
        watcher.close()
        await alice.stop()
        if customer.poll() is None:
            await asyncio.sleep(1)
            customer.kill()
    out, _ = customer.communicate(timeout=45)
    invites = [r for r in _received(tmp_path) if r.startswith("INVITE ")]
    assert len(invites) == 2, (invites, out[-1500:])
    assert all(re.search(r"\nFrom: <sip:\+4570001001@", i) for i in invites), invites
    rows = await _wait_outbound_ended(d, 5)
    done = [r for r in rows if r["disposition"] == "completed"]
    assert [r["call_id"] for r in done][:1] == [api_call]
    assert [(r["agent"], r["called"], r["route"]) for r in done] == [("alice", CUSTOMER, "carrier")] * 2
    assert all(r["talk_seconds"] > 1.5 and r["recording"] and Path(r["recording"]).is_file() for r in done), done
    assert has_tone(read_wav(Path(done[0]["recording"]))[0], ALICE)  # `record: true`: both legs recorded
    # refused: the API's +1900 and '12; DROP', MQTT's +1900 (stored, nothing dialled)
    assert sorted(r["disposition"] for r in rows) == ["completed", "completed", "refused", "refused", "refused"]
    # `ringmaster calls --direction outbound` and the API filter list them; stats count them per agent
    cli = subprocess.run([sys.executable, "-m", "ringmaster.cli", "calls", "-c", str(d.config_path), "--direction",
                          "outbound", "--format", "json"], capture_output=True, text=True, timeout=20)
    assert [json.loads(line)["direction"] for line in cli.stdout.splitlines()] == ["outbound"] * 5, cli.stderr
    status, _, raw = http(d, "GET", "/api/calls?direction=outbound&disposition=completed", token="op-token-0123456789")
    assert status == 200 and len(json.loads(raw)["calls"]) == 2, raw
    stats = subprocess.run([sys.executable, "-m", "ringmaster.cli", "stats", "-c", str(d.config_path), "--format",
                            "json"], capture_output=True, text=True, timeout=20)
    (alice_out,) = json.loads(stats.stdout)["outbound"]
    assert (alice_out["agent"], alice_out["placed"], alice_out["answered"], alice_out["refused"]) == ("alice", 5, 2, 3)


async def test_a_chat_calls_its_customer_rings_the_agent_first_and_history_links_call_and_chat(daemon_factory,
                                                                                               tmp_path: Path):
    d = daemon_factory(workers=1, start=False)
    trunk_port = d.ports.caller(5)
    _config(d, trunk_port)
    _mqtt(d)
    d.config["customers"] = {"default_country": "DK"}
    d.start()
    write_tone(tmp_path / "alice.wav", ALICE, 30)
    customer = _customer(tmp_path, trunk_port, 2)
    (alice,) = await agents_up(d, ("alice",))
    desk = Client(d.ports.base + 8, "alice", "alice-mqtt-pw", client_id="desk-alice")
    chat = Client(d.ports.base + 8, *INTEGRATION, client_id="chat-system")
    try:
        for topic in ("errors", "tasks/+/events"):
            chat.subscribe(topic)
        desk.subscribe("agents/alice/offers")
        # two chats: one from a phone number (as the chat system has it), one from an address
        chat.publish("tasks/new", {"version": 1, "id": "chat-7", "channel": "chat", "queue": "chat",
                                   "customer": "+45 22 33 44 55"})
        await desk.until("agents/alice/offers", lambda m: m["event"] == "offer" and m["task"] == "chat-7")
        desk.publish("agents/alice/commands", {"version": 1, "command": "accept", "task": "chat-7"})
        await chat.until("tasks/chat-7/events", lambda m: m["event"] == "assigned")
        # refused: an operator, a task she does not hold, no such task
        status, _, raw = http(d, "POST", "/api/tasks/chat-7/call", token="op-token-0123456789")
        assert status == 403, raw
        status, _, raw = http(d, "POST", "/api/tasks/chat-7/call", token="bob-token-0123456789")
        assert status == 400 and "not held by agent 'bob'" in json.loads(raw)["error"], raw
        desk.publish("agents/alice/commands", {"version": 1, "command": "call", "task": "chat-404"})
        err = await chat.until("errors", lambda m: "chat-404" in m.get("error", ""))
        assert err["field"] == "task"
        # from her desk: her phone rings first, then the chat's customer
        desk.publish("agents/alice/commands", {"version": 1, "command": "call", "task": "chat-7"})
        linked = await chat.until("tasks/chat-7/events", lambda m: m["event"] == "call")
        assert linked["number"] == CUSTOMER and linked["agent"] == "alice"
        await _answer_and_talk(d, alice, tmp_path, "chat", 1)
        # the customer writes "/call": the same again, her phone first (the chat's `via`: customer)
        wait_agent(d, "alice", "busy")  # she still holds the chat
        chat.publish("tasks/chat-7/commands", {"version": 1, "command": "message", "text": "/call"})
        again = await chat.until("tasks/chat-7/events", lambda m: m["event"] == "call" and m["call_id"] != linked["call_id"])
        await _answer_and_talk(d, alice, tmp_path, "chat2", 2)
        desk.publish("agents/alice/commands", {"version": 1, "command": "complete", "task": "chat-7"})
        await chat.until("tasks/chat-7/events", lambda m: m["event"] == "completed")
    finally:
        desk.close()
        chat.close()
        await alice.stop()
        if customer.poll() is None:
            await asyncio.sleep(1)
            customer.kill()
    customer.communicate(timeout=45)
    invites = [r for r in _received(tmp_path) if r.startswith("INVITE ")]
    assert len(invites) == 2 and all(i.startswith(f"INVITE sip:{CUSTOMER}@") for i in invites), invites
    rows = await _wait_outbound_ended(d, 2)
    row, row2 = [r for r in rows if r["disposition"] == "completed"]
    assert (row2["call_id"], row2["task_ref"]) == (again["call_id"], "chat-7")
    assert (row["call_id"], row["task_ref"], row["customer_key"], row["agent"]) == \
        (linked["call_id"], "chat-7", CUSTOMER, "alice")
    # the customer's history: the chat and the call, each pointing at the other
    status, _, raw = http(d, "GET", "/api/customers/%2B4522334455", token="op-token-0123456789")
    assert status == 200, raw
    history = {h["channel"]: h for h in json.loads(raw)["history"]}
    assert (history["voice"]["ref"], history["voice"]["direction"], history["voice"]["link"]) == \
        (row["call_id"], "outbound", "chat-7")
    assert (history["chat"]["ref"], history["chat"]["link"]) == ("chat-7", row2["call_id"])  # its last call


async def test_a_busy_customer_is_stored_busy_and_her_phone_gets_600_not_a_retry_on_another_worker(
        daemon_factory, tmp_path: Path):
    d = daemon_factory(workers=2, start=False)
    trunk_port = d.ports.caller(5)
    _config(d, trunk_port)
    d.start()
    busy = _carrier(SCENARIOS / "uas_busy.xml", trunk_port, tmp_path, 2)
    (alice,) = await agents_up(d, ("alice",))
    try:
        alice.send(p.Dial(leg="alice-busy", uri=f"sip:{CUSTOMER}@{d.edge}", account="alice"))
        st = await alice.wait(p.CallState, lambda m: m.leg == "alice-busy" and m.state == "disconnected", timeout=10)
        assert st.code == 600, st  # 486 would make the edge try the INVITE on the other worker
        await asyncio.sleep(1.5)
        wait_agent(d, "alice", "available")
    finally:
        await alice.stop()
        busy.kill()
    busy.communicate(timeout=10)
    invites = [r for r in _received(tmp_path) if r.startswith("INVITE ")]
    assert len(invites) == 1, invites  # placed once
    (row,) = await _wait_outbound_ended(d, 1)
    assert (row["disposition"], row["hangup_cause"], row["hangup_code"]) == ("busy", "customer_busy", 486)
    assert row["talk_seconds"] is None


async def test_a_caller_sent_a_chat_link_gets_a_chat_that_carries_the_call_context(daemon_factory):
    d = daemon_factory(workers=1, start=False)
    _config(d, d.ports.caller(5))
    _mqtt(d)
    d.config["customers"] = {"default_country": "DK"}
    d.config["http"]["tokens"].append({"name": "sup", "token": "sup-token-0123456789", "role": "supervisor"})
    d.config["flows"]["hold"] = [{"set": {"order": "A-1234"}}, {"play": "long"}, "hangup"]
    d.start()
    (alice,) = await agents_up(d, ("alice",))
    desk = Client(d.ports.base + 8, "alice", "alice-mqtt-pw", client_id="desk-alice")
    caller = await Phone("4522334455", d.ports.caller(1), d.ports.base + 90).start()
    try:
        desk.subscribe("agents/alice/offers")
        leg = await caller.call(f"sip:200@{d.edge}")  # the IVR: an integration sends a chat link meanwhile
        (call_id,) = d.status()["calls"]["ids"]
        for token, path, body, code, text in (
                ("op-token-0123456789", f"/api/calls/{call_id}/chat", {"queue": "chat"}, 403, ""),
                ("sup-token-0123456789", "/api/calls/nosuchcall/chat", {"queue": "chat"}, 400, "no live call"),
                ("sup-token-0123456789", f"/api/calls/{call_id}/chat", {"queue": "nowhere"}, 400, "unknown queue"),
                ("sup-token-0123456789", f"/api/calls/{call_id}/chat", {"queue": "chat", "x": 1}, 400, "unknown field")):
            status, _, raw = http(d, "POST", path, token=token, body=body)
            assert status == code and text in raw.decode(), (path, status, raw)
        status, _, raw = http(d, "POST", f"/api/calls/{call_id}/chat", token="sup-token-0123456789",
                              body={"queue": "chat", "task": "link-1"})
        assert status == 200 and json.loads(raw) == {"task": "link-1", "queue": "chat", "call_id": call_id}, raw
        offer = await desk.until("agents/alice/offers", lambda m: m["event"] == "offer" and m["task"] == "link-1")
        assert offer["data"]["call_id"] == call_id and offer["data"]["variables"]["order"] == "A-1234"
        assert offer["customer"]["key"] == CUSTOMER  # the caller's number, E.164
        await caller.hangup(leg)
    finally:
        desk.close()
        await caller.stop()
        await alice.stop()
    events = _rows(d, "SELECT data FROM call_events WHERE call_id=? AND event='CHAT_OPENED'", call_id)
    assert [json.loads(e[0])["task"] for e in events] == ["link-1"]
