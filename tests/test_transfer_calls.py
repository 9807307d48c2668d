"""Blind transfers by the agent (issue 11 item 2): from the API (her own token) and from her
phone's REFER, to a queue or a flow of the plan; anything else refused with nothing dialled.
Real phones, the real daemon; tones prove who the caller hears after the transfer."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import time
from pathlib import Path
from typing import Any

import pytest

from ringmaster import protocol as p
from tests.helpers.audio import TONES_TOL, dominant_frequencies, has_tone, read_wav, write_tone
from tests.helpers.mqtt import Client
from tests.helpers.phone import Phone
from tests.helpers.rawuac import Listener
from tests.test_acd_calls import agents_up, wait_agent
from tests.test_api import http
from tests.test_leg_slots import wait_slots_free
from tests.test_presence_mqtt import INTEGRATION

HOLD, CALLER, ALICE, BOB, GOODBYE = 440.0, 700.0, 1300.0, 1700.0, 2100.0
TOKENS = {"alice-token-0123456789": "alice", "bob-token-0123456789": "bob"}


def _config(d) -> None:  # type: ignore[no-untyped-def]
    write_tone(d.dir / "prompts" / "hold.wav", HOLD, 3.0)
    write_tone(d.dir / "prompts" / "goodbye.wav", GOODBYE, 3.0)
    d.config["agents"] = {a: {"softphone": {"username": a, "password": f"{a}-secret"}} for a in ("alice", "bob")}
    d.config["queues"] = {"sales": {"moh": "hold", "strategy": "linear", "members": ["alice"]},
                          "support": {"moh": "hold", "strategy": "linear", "members": ["bob"]}}
    d.config["flows"]["main"] = [{"set": {"account": "1234"}}, {"queue": "sales"}, "hangup"]
    d.config["flows"]["goodbye"] = [{"play": "goodbye"}, "hangup"]
    d.config["entry_points"].append({"number": "500", "flow": "main"})
    d.config["http"] = {"listen": f"127.0.0.1:{d.ports.base + 6}",
                        "tokens": [{"name": name, "token": token, "role": "agent", "agent": name}
                                   for token, name in TOKENS.items()]
                        + [{"name": "op", "token": "op-token-0123456789", "role": "operator"}]}


def _rows(d, sql: str, *args: Any) -> list[tuple[Any, ...]]:  # type: ignore[no-untyped-def]
    con = sqlite3.connect(d.db_path)
    try:
        return [tuple(r) for r in con.execute(sql, args)]
    finally:
        con.close()


def _all_free(d) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + 5
    st: dict[str, Any] | None = None
    while time.monotonic() < deadline:
        st = d.status()
        if st and st["calls"]["live"] == 0:
            break
        time.sleep(0.1)
    assert st and st["calls"]["live"] == 0, st and st["calls"]
    wait_slots_free(d, timeout=5)


async def _connected_to_alice(d, caller: Phone, alice: Phone) -> tuple[str, str]:  # type: ignore[no-untyped-def]
    a = await caller.call(f"sip:500@{d.edge}")
    inc = await alice.wait(p.Incoming, timeout=10)
    alice.send(p.Answer(leg=inc.leg))
    await alice.wait(p.MediaReady, lambda m: m.leg == inc.leg)
    await asyncio.to_thread(d.wait_event, "acd.connected", 1, 10.0)
    return a, inc.leg


async def _hears(phone: Phone, leg: str, path: Path, seconds: float = 1.5) -> Any:
    phone.send(p.RecordStart(rec_id=path.stem, legs=(leg,), path=str(path)))
    await asyncio.sleep(seconds)
    phone.send(p.RecordStop(rec_id=path.stem))
    await phone.wait(p.RecordingDone, lambda m: m.rec_id == path.stem)
    return read_wav(path)[0]


@pytest.mark.parametrize("direct_media", [False, True])
async def test_agent_transfers_by_api_to_a_queue_where_bob_answers_and_the_caller_hears_bob(daemon_factory,
                                                                                             tmp_path: Path,
                                                                                             direct_media: bool):
    d = daemon_factory(workers=1, start=False)
    _config(d)
    d.config["sip"]["direct_media"] = direct_media
    d.start()
    write_tone(tmp_path / "caller.wav", CALLER, 30)
    write_tone(tmp_path / "alice.wav", ALICE, 30)
    write_tone(tmp_path / "bob.wav", BOB, 30)
    alice, bob = await agents_up(d, ("alice", "bob"))
    caller = await Phone("4511223344", d.ports.caller(1), d.ports.base + 90).start()
    try:
        a, alice_leg = await _connected_to_alice(d, caller, alice)
        caller.send(p.Play(leg=a, files=(str(tmp_path / "caller.wav"),), loop=True))
        alice.send(p.Play(leg=alice_leg, files=(str(tmp_path / "alice.wav"),), loop=True))
        before = await _hears(caller, a, tmp_path / "before.wav", 1.0)
        # another agent's token, an operator's, a target the plan does not list: refused
        status, _, body = http(d, "POST", "/api/agents/alice/transfer", token="bob-token-0123456789",
                               body={"kind": "queue", "target": "support"})
        assert status == 403, body
        status, _, body = http(d, "POST", "/api/agents/alice/transfer", token="op-token-0123456789",
                               body={"kind": "queue", "target": "support"})
        assert status == 403, body
        status, _, body = http(d, "POST", "/api/agents/alice/transfer", token="alice-token-0123456789",
                               body={"kind": "queue", "target": "nowhere"})
        assert status == 400 and b"unknown queue 'nowhere'" in body, body
        status, _, body = http(d, "POST", "/api/agents/bob/transfer", token="bob-token-0123456789",
                               body={"kind": "queue", "target": "sales"})
        assert status == 400 and b"not connected" in body, body
        # alice sends the caller to support
        status, _, body = http(d, "POST", "/api/agents/alice/transfer", token="alice-token-0123456789",
                               body={"kind": "queue", "target": "support"})
        assert status == 200, body
        call_id = json.loads(body)["call_id"]
        await alice.wait(p.CallState, lambda m: m.leg == alice_leg and m.state == "disconnected", timeout=5)
        inc = await bob.wait(p.Incoming, timeout=10)
        headers = dict(inc.headers)
        assert headers.get("X-Ringmaster-Var-account") == "1234", inc.headers  # the IVR's variables went along
        assert headers.get("X-Ringmaster-Queue") == "support" and headers.get("X-Ringmaster-Call") == call_id
        waiting = await _hears(caller, a, tmp_path / "waiting.wav", 1.0)  # hold music while bob rings
        bob.send(p.Answer(leg=inc.leg))
        await bob.wait(p.MediaReady, lambda m: m.leg == inc.leg)
        bob.send(p.Play(leg=inc.leg, files=(str(tmp_path / "bob.wav"),), loop=True))
        await asyncio.to_thread(d.wait_event, "acd.connected", 2, 10.0)
        await asyncio.sleep(0.3)
        after = await _hears(caller, a, tmp_path / "after.wav")
        bob_heard = await _hears(bob, inc.leg, tmp_path / "bob_heard.wav")
        bob.send(p.Hangup(leg=inc.leg))
        await caller.wait(p.CallState, lambda m: m.leg == a and m.state == "disconnected", timeout=5)
        wait_agent(d, "alice", "available")
        wait_agent(d, "bob", "available")
    finally:
        await caller.stop()
        await alice.stop()
        await bob.stop()
    assert has_tone(before, ALICE, tol=TONES_TOL), dominant_frequencies(before)
    assert has_tone(waiting, HOLD, tol=TONES_TOL), dominant_frequencies(waiting)
    assert not has_tone(waiting, ALICE, tol=TONES_TOL, min_share=0.05), dominant_frequencies(waiting)
    assert has_tone(after, BOB, tol=TONES_TOL), dominant_frequencies(after)
    assert not has_tone(after, ALICE, tol=TONES_TOL, min_share=0.05), dominant_frequencies(after)
    assert has_tone(bob_heard, CALLER, tol=TONES_TOL), dominant_frequencies(bob_heard)
    row = d.wait_calls_ended(1)[0]
    assert row["call_id"] == call_id and row["agent"] == "bob" and row["disposition"] == "completed"
    assert json.loads(row["variables"])["account"] == "1234"
    qlog = _rows(d, "SELECT queue, agent, event, data FROM queue_log WHERE call_id=? ORDER BY id", call_id)
    assert [(q, ag, ev) for q, ag, ev, _ in qlog] == [
        ("sales", "NONE", "ENTERQUEUE"), ("sales", "alice", "CONNECT"), ("sales", "alice", "BLINDTRANSFER"),
        ("support", "NONE", "ENTERQUEUE"), ("support", "bob", "CONNECT"), ("support", "bob", "COMPLETEAGENT")], qlog
    extension, context, hold, talk, position = qlog[2][3].split("|")
    assert (extension, context, position) == ("support", "queue", "1") and int(talk) >= 1, qlog[2]
    events = [(e, json.loads(data)) for e, data in _rows(
        d, "SELECT event, data FROM call_events WHERE call_id=? ORDER BY id", call_id)]
    transfers = [data for e, data in events if e == "TRANSFER"]
    assert transfers == [{"mode": "blind", "agent": "alice", "queue": "sales", "kind": "queue",
                          "target": "support", "via": "api"}], transfers
    refused = [data for e, data in events if e == "TRANSFER_REFUSED"]
    assert len(refused) == 1 and refused[0]["target"] == "nowhere", refused
    st = d.status()
    assert st is not None and st["queues"]["sales"]["transferred"] == 1
    _all_free(d)


async def test_agent_refer_to_a_flow_is_carried_out_by_the_controller_and_an_unlisted_uri_is_not(daemon_factory,
                                                                                                tmp_path: Path):
    """Her phone's Transfer button: the worker refuses the REFER (603) and dials nothing; the
    controller sends the caller to the flow the Refer-To names. A Refer-To the plan does not
    list changes nothing: the listener (an external URI) sees no INVITE, the call goes on."""
    d = daemon_factory(workers=1, start=False)
    _config(d)
    d.start()
    listener = Listener(d.ports.caller(25))
    alice, bob = await agents_up(d, ("alice", "bob"))
    caller = await Phone("4511223344", d.ports.caller(1), d.ports.base + 90).start()
    try:
        a, alice_leg = await _connected_to_alice(d, caller, alice)
        alice.send(p.Refer(leg=alice_leg, target=listener.uri))
        unlisted = await alice.wait(p.ReferStatus, lambda m: m.leg == alice_leg and m.final, timeout=5)
        mark = len(alice.events)
        alice.send(p.Refer(leg=alice_leg, target=f"sip:alice@{d.edge}"))  # herself: she cannot take a call
        to_self = await alice.wait(p.ReferStatus, lambda m: m.leg == alice_leg and m.final, timeout=5, after=mark)
        await asyncio.sleep(1.0)  # long enough for a dialled target to be rung
        for phone, leg in ((caller, a), (alice, alice_leg)):
            assert not [m for m in phone.events if isinstance(m, p.CallState) and m.leg == leg
                        and m.state == "disconnected"], phone.events[-5:]
        mark = len(alice.events)
        alice.send(p.Refer(leg=alice_leg, target=f"sip:goodbye@{d.edge}"))
        await alice.wait(p.CallState, lambda m: m.leg == alice_leg and m.state == "disconnected", timeout=5,
                         after=mark)
        heard = await _hears(caller, a, tmp_path / "goodbye_heard.wav", 1.0)
        await caller.wait(p.CallState, lambda m: m.leg == a and m.state == "disconnected", timeout=8)
        wait_agent(d, "alice", "available")
        seen = listener.methods()
    finally:
        listener.close()
        await caller.stop()
        await alice.stop()
        await bob.stop()
    assert unlisted.code == 603 and to_self.code == 603, (unlisted, to_self)
    assert "INVITE" not in seen, seen
    assert not [m for m in bob.events if isinstance(m, p.Incoming)]
    assert has_tone(heard, GOODBYE, tol=TONES_TOL), dominant_frequencies(heard)
    row = d.wait_calls_ended(1)[0]
    assert row["agent"] == "alice" and row["hangup_by"] == "ringmaster", row
    assert json.loads(row["ivr_path"])[-2:] == ["goodbye:0:play", "goodbye:1:hangup"], row["ivr_path"]
    events = [(e, json.loads(data)) for e, data in _rows(
        d, "SELECT event, data FROM call_events WHERE call_id=? ORDER BY id", row["call_id"])]
    refused = [data for e, data in events if e == "TRANSFER_REFUSED"]
    assert [data["target"] for data in refused] == [listener.uri, "alice"], refused
    assert refused[1]["kind"] == "agent" and "cannot take a call now (on-call)" in refused[1]["reason"], refused
    assert [data for e, data in events if e == "TRANSFER"] == [
        {"mode": "blind", "agent": "alice", "queue": "sales", "kind": "flow", "target": "goodbye", "via": "refer"}]
    qlog = [ev for (ev,) in _rows(d, "SELECT event FROM queue_log WHERE call_id=? ORDER BY id", row["call_id"])]
    assert qlog == ["ENTERQUEUE", "CONNECT", "BLINDTRANSFER"], qlog
    _all_free(d)


async def test_agent_transfers_her_call_over_mqtt_and_a_bad_target_is_answered_on_errors(daemon_factory,
                                                                                        tmp_path: Path):
    d = daemon_factory(workers=1, start=False)
    _config(d)
    d.config["mqtt"] = {"embedded": True, "listen": f"127.0.0.1:{d.ports.base + 8}",
                        "clients": [{"username": INTEGRATION[0], "password": INTEGRATION[1]}]}
    for name in ("alice", "bob"):
        d.config["agents"][name]["mqtt_password"] = f"{name}-mqtt-pw"
    d.start()
    write_tone(tmp_path / "bob.wav", BOB, 30)
    watcher = Client(d.ports.base + 8, *INTEGRATION, client_id="crm")
    watcher.subscribe("errors")
    watcher.subscribe("calls/events")
    watcher.subscribe("queues/sales/stats")
    desk = Client(d.ports.base + 8, "alice", "alice-mqtt-pw", client_id="desk-alice")
    alice, bob = await agents_up(d, ("alice", "bob"))
    caller = await Phone("4511223344", d.ports.caller(1), d.ports.base + 90).start()
    try:
        a, alice_leg = await _connected_to_alice(d, caller, alice)
        desk.publish("agents/alice/commands", {"version": 1, "command": "transfer", "queue": "nowhere"})
        await watcher.until("errors", lambda m: "unknown queue 'nowhere'" in m["error"], timeout=5)
        desk.publish("agents/alice/commands", {"version": 1, "command": "transfer", "queue": "support",
                                               "flow": "goodbye"})
        await watcher.until("errors", lambda m: "exactly one of queue, agent, flow or external" in m["error"], timeout=5)
        assert not [m for m in alice.events if isinstance(m, p.CallState) and m.leg == alice_leg
                    and m.state == "disconnected"]
        desk.publish("agents/alice/commands", {"version": 1, "command": "transfer", "queue": "support"})
        await alice.wait(p.CallState, lambda m: m.leg == alice_leg and m.state == "disconnected", timeout=5)
        ended = await watcher.until("calls/events", lambda m: m["event"] == "ended", timeout=5)
        assert ended["agent"] == "alice" and ended["transfer"] == {"kind": "queue", "target": "support"}, ended
        assert ended["variables"]["account"] == "1234", ended
        await watcher.until("queues/sales/stats", lambda m: m["calls"]["transferred"] == 1, timeout=5)
        inc = await bob.wait(p.Incoming, timeout=10)
        bob.send(p.Answer(leg=inc.leg))
        await bob.wait(p.MediaReady, lambda m: m.leg == inc.leg)
        bob.send(p.Play(leg=inc.leg, files=(str(tmp_path / "bob.wav"),), loop=True))
        await asyncio.to_thread(d.wait_event, "acd.connected", 2, 10.0)
        await asyncio.sleep(0.3)
        after = await _hears(caller, a, tmp_path / "after.wav")
        caller.send(p.Hangup(leg=a))
        await bob.wait(p.CallState, lambda m: m.leg == inc.leg and m.state == "disconnected", timeout=5)
    finally:
        watcher.close()
        desk.close()
        await caller.stop()
        await alice.stop()
        await bob.stop()
    assert has_tone(after, BOB, tol=TONES_TOL), dominant_frequencies(after)
    row = d.wait_calls_ended(1)[0]
    assert row["agent"] == "bob" and row["hangup_by"] == "caller" and row["disposition"] == "completed", row
    qlog = [ev for (ev,) in _rows(d, "SELECT event FROM queue_log WHERE call_id=? ORDER BY id", row["call_id"])]
    assert qlog == ["ENTERQUEUE", "CONNECT", "BLINDTRANSFER", "ENTERQUEUE", "CONNECT", "COMPLETECALLER"], qlog
    transfers = [json.loads(data) for (data,) in _rows(
        d, "SELECT data FROM call_events WHERE call_id=? AND event='TRANSFER'", row["call_id"])]
    assert [t["via"] for t in transfers] == ["mqtt"], transfers
    _all_free(d)


async def test_agent_transfers_to_bob_who_answers_and_by_refer_to_bob_who_does_not_so_the_queue_serves_it(
        daemon_factory, tmp_path: Path):
    """To another agent: she rings alone (member of the queue or not); answered, the caller
    talks to her; unanswered (the queue's ring timeout), the caller waits in the queue it came
    from and its members are offered it again."""
    d = daemon_factory(workers=1, start=False)
    _config(d)
    d.config["queues"]["sales"].update({"ring_timeout": 3, "retry": 0})
    d.start()
    write_tone(tmp_path / "alice.wav", ALICE, 30)
    write_tone(tmp_path / "bob.wav", BOB, 30)
    alice, bob = await agents_up(d, ("alice", "bob"))
    caller = await Phone("4511223344", d.ports.caller(1), d.ports.base + 90).start()
    try:
        # 1. by the API; bob answers
        a, alice_leg = await _connected_to_alice(d, caller, alice)
        status, _, body = http(d, "POST", "/api/agents/alice/transfer", token="alice-token-0123456789",
                               body={"kind": "agent", "target": "bob"})
        assert status == 200, body
        await alice.wait(p.CallState, lambda m: m.leg == alice_leg and m.state == "disconnected", timeout=5)
        inc = await bob.wait(p.Incoming, timeout=10)
        bob.send(p.Answer(leg=inc.leg))
        await bob.wait(p.MediaReady, lambda m: m.leg == inc.leg)
        bob.send(p.Play(leg=inc.leg, files=(str(tmp_path / "bob.wav"),), loop=True))
        await asyncio.to_thread(d.wait_event, "acd.connected", 2, 10.0)
        await asyncio.sleep(0.3)
        heard_bob = await _hears(caller, a, tmp_path / "heard_bob.wav")
        caller.send(p.Hangup(leg=a))
        await bob.wait(p.CallState, lambda m: m.leg == inc.leg and m.state == "disconnected", timeout=5)
        wait_agent(d, "bob", "available")
        wait_agent(d, "alice", "available")
        # 2. by her phone's REFER; bob lets it ring, the call comes back to sales and alice
        bob_mark, alice_mark = len(bob.events), len(alice.events)
        a2 = await caller.call(f"sip:500@{d.edge}")
        inc2 = await alice.wait(p.Incoming, timeout=10, after=alice_mark)
        alice.send(p.Answer(leg=inc2.leg))
        await alice.wait(p.MediaReady, lambda m: m.leg == inc2.leg, after=alice_mark)
        await asyncio.to_thread(d.wait_event, "acd.connected", 3, 10.0)
        alice_mark = len(alice.events)
        alice.send(p.Refer(leg=inc2.leg, target=f"sip:bob@{d.edge}"))
        await alice.wait(p.CallState, lambda m: m.leg == inc2.leg and m.state == "disconnected", timeout=5,
                         after=alice_mark)
        await bob.wait(p.Incoming, timeout=10, after=bob_mark)  # rings, unanswered
        inc3 = await alice.wait(p.Incoming, timeout=10, after=alice_mark)  # back in sales after 3 s
        alice.send(p.Answer(leg=inc3.leg))
        await alice.wait(p.MediaReady, lambda m: m.leg == inc3.leg, after=alice_mark)
        alice.send(p.Play(leg=inc3.leg, files=(str(tmp_path / "alice.wav"),), loop=True))
        await asyncio.to_thread(d.wait_event, "acd.connected", 4, 10.0)
        await asyncio.sleep(0.3)
        heard_alice = await _hears(caller, a2, tmp_path / "heard_alice.wav")
        alice.send(p.Hangup(leg=inc3.leg))
        await caller.wait(p.CallState, lambda m: m.leg == a2 and m.state == "disconnected", timeout=5)
    finally:
        await caller.stop()
        await alice.stop()
        await bob.stop()
    assert has_tone(heard_bob, BOB, tol=TONES_TOL), dominant_frequencies(heard_bob)
    assert has_tone(heard_alice, ALICE, tol=TONES_TOL), dominant_frequencies(heard_alice)
    rows = d.wait_calls_ended(2)
    first, second = rows[0], rows[1]
    assert first["agent"] == "bob" and second["agent"] == "alice", rows
    qlog1 = [(q, ag, ev) for q, ag, ev, _ in _rows(
        d, "SELECT queue, agent, event, data FROM queue_log WHERE call_id=? ORDER BY id", first["call_id"])]
    assert qlog1 == [("sales", "NONE", "ENTERQUEUE"), ("sales", "alice", "CONNECT"), ("sales", "alice", "BLINDTRANSFER"),
                     ("sales", "NONE", "ENTERQUEUE"), ("sales", "bob", "CONNECT"), ("sales", "bob", "COMPLETECALLER")]
    qlog2 = [(ag, ev, data) for _, ag, ev, data in _rows(
        d, "SELECT queue, agent, event, data FROM queue_log WHERE call_id=? ORDER BY id", second["call_id"])]
    assert [(ag, ev) for ag, ev, _ in qlog2] == [
        ("NONE", "ENTERQUEUE"), ("alice", "CONNECT"), ("alice", "BLINDTRANSFER"), ("NONE", "ENTERQUEUE"),
        ("bob", "RINGNOANSWER"), ("alice", "CONNECT"), ("alice", "COMPLETEAGENT")], qlog2
    assert qlog2[2][2].startswith("bob|agent|"), qlog2[2]
    _all_free(d)
