"""Transfers beyond the queue (issue 11 items 2 and 5): blind to an external number the plan
lists (a SIPp UAS behind a trunk plays that party's tone), refused for anything unlisted with
nothing dialled; attended transfer (a consult) completed and cancelled, with tone checks of
who hears whom; a worker full of calls refuses a consult with the reason. Real phones, SIPp,
Kamailio and workers; after each test no leg is up, every slot is free and SIGTERM exits 0."""

from __future__ import annotations

import asyncio
import json
import subprocess
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from ringmaster import protocol as p
from tests.helpers.audio import TONES_TOL, dominant_frequencies, has_tone, write_tone
from tests.helpers.mqtt import Client
from tests.helpers.phone import Phone
from tests.helpers.sipp import SCENARIOS
from tests.test_acd_calls import agents_up, wait_agent
from tests.test_api import http
from tests.test_hold_calls import _stats
from tests.test_presence_mqtt import INTEGRATION
from tests.test_transfer_calls import ALICE, BOB, CALLER, HOLD, _all_free, _config, _connected_to_alice, _hears, _rows
from tests.test_trunks import _carrier, _received
from tests.test_worker_defence import _stops_cleanly

EXTERNAL = 1900.0
NUMBER = "+4533445566"
ALICE_TOKEN = "alice-token-0123456789"


def _ulaw_tone(path: Path, freq: float, seconds: float) -> Path:
    """A G.711 u-law WAV of a pure tone (what SIPp's rtp_stream sends as PCMU as it is)."""
    t = np.arange(int(8000 * seconds)) / 8000
    x = np.clip(0.5 * np.sin(2 * np.pi * freq * t), -1, 1)
    mag = np.log1p(255 * np.abs(x)) / np.log1p(255)  # mu-law compression, then 8-bit code
    code = (np.round(mag * 127)).astype(np.int32)
    byte = np.where(x < 0, 0x7F - code, 0xFF - code).astype(np.uint8)
    with open(path, "wb") as f:
        data = byte.tobytes()
        fmt = (7).to_bytes(2, "little") + (1).to_bytes(2, "little") + (8000).to_bytes(4, "little") \
            + (8000).to_bytes(4, "little") + (1).to_bytes(2, "little") + (8).to_bytes(2, "little")
        body = b"WAVE" + b"fmt " + len(fmt).to_bytes(4, "little") + fmt + b"data" + len(data).to_bytes(4, "little") + data
        f.write(b"RIFF" + len(body).to_bytes(4, "little") + body)
    return path


def _external(d, tmp_path: Path, port: int) -> subprocess.Popen[str]:  # type: ignore[no-untyped-def]
    """The external party: a SIPp UAS at the trunk's address that answers one call with a tone."""
    tone = _ulaw_tone(tmp_path / "external.wav", EXTERNAL, 10)
    scenario = tmp_path / "uas_external.xml"
    scenario.write_text((SCENARIOS / "uas_external.xml").read_text().replace("[tone]", str(tone)))
    return subprocess.Popen(["sipp", "-sf", str(scenario), "-i", "127.0.0.1", "-p", str(port), "-mp",
                             str(d.ports.sink(0)), "-m", "1", "-timeout", "40s", "-nostdin", "-trace_msg", "-fd", "1"],
                            cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _with_external(d, port: int) -> None:  # type: ignore[no-untyped-def]
    _config(d)
    d.config["sip"]["trunks"] = {"carrier": {"address": f"127.0.0.1:{port}", "allowed": [r"\+45[0-9]{8}"]}}
    d.config["transfer_targets"] = {"accounting": {"number": NUMBER, "trunk": "carrier", "ring_timeout": 10}}


def _invites(tmp_path: Path) -> list[str]:
    logs = list(tmp_path.glob("*_messages.log"))
    text = logs[0].read_text() if logs else ""
    return [ln for ln in text.splitlines() if ln.startswith("INVITE ")]


def _events(d, call_id: str) -> list[tuple[str, dict[str, Any]]]:  # type: ignore[no-untyped-def]
    return [(e, json.loads(data)) for e, data in _rows(
        d, "SELECT event, data FROM call_events WHERE call_id=? ORDER BY id", call_id)]


async def test_blind_transfer_to_a_listed_external_number_the_caller_hears_it_and_unlisted_ones_dial_nothing(
        daemon_factory, tmp_path: Path):
    d = daemon_factory(workers=1, start=False)
    port = d.ports.caller(20)
    _with_external(d, port)
    d.start()
    write_tone(tmp_path / "caller.wav", CALLER, 30)
    write_tone(tmp_path / "alice.wav", ALICE, 30)
    uas = _external(d, tmp_path, port)
    alice, bob = await agents_up(d, ("alice", "bob"))
    caller = await Phone("4511223344", d.ports.caller(1), d.ports.base + 90).start()
    try:
        a, alice_leg = await _connected_to_alice(d, caller, alice)
        caller.send(p.Play(leg=a, files=(str(tmp_path / "caller.wav"),), loop=True))
        alice.send(p.Play(leg=alice_leg, files=(str(tmp_path / "alice.wav"),), loop=True))
        # an unlisted number by the API, and by her phone's REFER: refused, the call goes on
        status, _, body = http(d, "POST", "/api/agents/alice/transfer", token=ALICE_TOKEN,
                               body={"kind": "external", "target": "+4590901234"})
        assert status == 400 and b"not a listed transfer target" in body, body
        alice.send(p.Refer(leg=alice_leg, target=f"sip:+4590901234@{d.edge}"))
        refused = await alice.wait(p.ReferStatus, lambda m: m.leg == alice_leg and m.final, timeout=5)
        await asyncio.sleep(1.0)
        assert _invites(tmp_path) == []  # nothing dialled
        before = await _hears(caller, a, tmp_path / "before.wav", 1.0)
        # the listed one, by her phone's REFER naming the number
        mark = len(alice.events)
        alice.send(p.Refer(leg=alice_leg, target=f"sip:{NUMBER}@{d.edge}"))
        await alice.wait(p.CallState, lambda m: m.leg == alice_leg and m.state == "disconnected", timeout=5,
                         after=mark)
        await asyncio.to_thread(d.wait_event, "call.transfer_out", 1, 5.0)
        await asyncio.sleep(1.0)
        after = await _hears(caller, a, tmp_path / "after.wav")
        wait_agent(d, "alice", "available")
        caller.send(p.Hangup(leg=a))
        await caller.wait(p.CallState, lambda m: m.leg == a and m.state == "disconnected", timeout=5)
        out, _ = await asyncio.to_thread(uas.communicate, timeout=45)
    finally:
        if uas.poll() is None:
            uas.kill()
            uas.wait()
        await caller.stop()
        await alice.stop()
        await bob.stop()
    assert refused.code == 603
    assert uas.returncode == 0, out[-2000:]
    invites = _invites(tmp_path)
    assert len(invites) == 1 and invites[0].startswith(f"INVITE sip:{NUMBER}@127.0.0.1:{port}"), invites
    assert has_tone(before, ALICE, tol=TONES_TOL), dominant_frequencies(before)
    assert has_tone(after, EXTERNAL, tol=TONES_TOL), dominant_frequencies(after)
    assert not has_tone(after, ALICE, tol=TONES_TOL, min_share=0.05), dominant_frequencies(after)
    row = d.wait_calls_ended(1)[0]
    assert row["agent"] == "alice" and row["disposition"] == "completed" and row["hangup_by"] == "caller", row
    qlog = _rows(d, "SELECT agent, event, data FROM queue_log WHERE call_id=? ORDER BY id", row["call_id"])
    assert [(ag, ev) for ag, ev, _ in qlog] == [("NONE", "ENTERQUEUE"), ("alice", "CONNECT"),
                                                ("alice", "BLINDTRANSFER")], qlog
    assert qlog[2][2].startswith("accounting|external|"), qlog
    events = _events(d, row["call_id"])
    assert [data for e, data in events if e == "TRANSFER"] == [
        {"mode": "blind", "agent": "alice", "queue": "sales", "kind": "external", "target": "accounting",
         "number": NUMBER, "via": "refer"}]
    assert [e for e, _ in events if e == "TRANSFER_ANSWERED"] == ["TRANSFER_ANSWERED"]
    refusals = [data for e, data in events if e == "TRANSFER_REFUSED"]
    assert [r["target"] for r in refusals] == ["+4590901234", "sip:+4590901234@" + d.edge], refusals
    _all_free(d)
    _stops_cleanly(d)


@pytest.mark.parametrize("direct_media", [False, True])
async def test_attended_transfer_consult_bob_then_complete_the_caller_hears_hold_music_then_bob(
        daemon_factory, tmp_path: Path, direct_media: bool):
    d = daemon_factory(workers=1, start=False)
    _config(d)
    d.config["sip"]["direct_media"] = direct_media
    d.start()
    for name, freq in (("caller", CALLER), ("alice", ALICE), ("bob", BOB)):
        write_tone(tmp_path / f"{name}.wav", freq, 30)
    alice, bob = await agents_up(d, ("alice", "bob"))
    caller = await Phone("4511223344", d.ports.caller(1), d.ports.base + 90).start()
    try:
        a, alice_leg = await _connected_to_alice(d, caller, alice)
        caller.send(p.Play(leg=a, files=(str(tmp_path / "caller.wav"),), loop=True))
        alice.send(p.Play(leg=alice_leg, files=(str(tmp_path / "alice.wav"),), loop=True))
        status, _, body = http(d, "POST", "/api/agents/alice/transfer", token=ALICE_TOKEN,
                               body={"action": "complete"})
        assert status == 400 and b"no consult under way" in body, body
        status, _, body = http(d, "POST", "/api/agents/alice/transfer", token=ALICE_TOKEN,
                               body={"mode": "attended", "kind": "flow", "target": "goodbye"})
        assert status == 400 and b"an agent or an external target" in body, body
        status, _, body = http(d, "POST", "/api/agents/alice/transfer", token=ALICE_TOKEN,
                               body={"mode": "attended", "kind": "agent", "target": "bob"})
        assert status == 200 and json.loads(body)["state"] == "ringing", body
        inc = await bob.wait(p.Incoming, timeout=10)
        assert dict(inc.headers).get("X-Ringmaster-Consult") == "alice", inc.headers
        wait_agent(d, "bob", "on-call")  # held for the consult: no queue offers him a call
        status, _, body = http(d, "POST", "/api/agents/alice/transfer", token=ALICE_TOKEN,
                               body={"action": "complete"})
        assert status == 400 and b"has not answered yet" in body, body
        bob.send(p.Answer(leg=inc.leg))
        await bob.wait(p.MediaReady, lambda m: m.leg == inc.leg)
        bob.send(p.Play(leg=inc.leg, files=(str(tmp_path / "bob.wav"),), loop=True))
        await asyncio.to_thread(d.wait_event, "acd.consult_answered", 1, 5.0)
        await asyncio.sleep(0.3)
        caller_heard, alice_heard, bob_heard = await asyncio.gather(
            _hears(caller, a, tmp_path / "c1.wav"), _hears(alice, alice_leg, tmp_path / "a1.wav"),
            _hears(bob, inc.leg, tmp_path / "b1.wav"))
        status, _, body = http(d, "POST", "/api/agents/alice/transfer", token=ALICE_TOKEN,
                               body={"action": "complete"})
        assert status == 200, body
        await alice.wait(p.CallState, lambda m: m.leg == alice_leg and m.state == "disconnected", timeout=5)
        await asyncio.sleep(0.5)
        caller_after, bob_after = await asyncio.gather(_hears(caller, a, tmp_path / "c2.wav"),
                                                       _hears(bob, inc.leg, tmp_path / "b2.wav"))
        st = d.status()
        assert st["agents"]["alice"] in ("wrap-up", "available") and st["agents"]["bob"] == "on-call", st["agents"]
        bob.send(p.Hangup(leg=inc.leg))
        await caller.wait(p.CallState, lambda m: m.leg == a and m.state == "disconnected", timeout=5)
        wait_agent(d, "bob", "available")
    finally:
        await caller.stop()
        await alice.stop()
        await bob.stop()
    # during the consult: the caller hears hold music, not alice; alice and bob hear each other
    assert has_tone(caller_heard, HOLD, tol=TONES_TOL), dominant_frequencies(caller_heard)
    assert not has_tone(caller_heard, ALICE, tol=TONES_TOL, min_share=0.05), dominant_frequencies(caller_heard)
    assert not has_tone(caller_heard, BOB, tol=TONES_TOL, min_share=0.05), dominant_frequencies(caller_heard)
    assert has_tone(alice_heard, BOB, tol=TONES_TOL), dominant_frequencies(alice_heard)
    assert not has_tone(alice_heard, CALLER, tol=TONES_TOL, min_share=0.05), dominant_frequencies(alice_heard)
    assert has_tone(bob_heard, ALICE, tol=TONES_TOL), dominant_frequencies(bob_heard)
    # after the complete: the caller and bob hear each other
    assert has_tone(caller_after, BOB, tol=TONES_TOL), dominant_frequencies(caller_after)
    assert not has_tone(caller_after, HOLD, tol=TONES_TOL, min_share=0.05), dominant_frequencies(caller_after)
    assert has_tone(bob_after, CALLER, tol=TONES_TOL), dominant_frequencies(bob_after)
    row = d.wait_calls_ended(1)[0]
    assert row["agent"] == "bob" and row["disposition"] == "completed" and row["hangup_by"] == "agent", row
    qlog = _rows(d, "SELECT queue, agent, event, data FROM queue_log WHERE call_id=? ORDER BY id", row["call_id"])
    assert [(ag, ev) for _, ag, ev, _ in qlog] == [("NONE", "ENTERQUEUE"), ("alice", "CONNECT"),
                                                   ("alice", "ATTENDEDTRANSFER"), ("bob", "COMPLETEAGENT")], qlog
    dest, target, hold, talk, position = qlog[2][3].split("|")
    assert (dest, target, position) == ("BRIDGE", "bob", "1") and int(talk) >= 1, qlog[2]
    events = _events(d, row["call_id"])
    names = [e for e, _ in events]
    assert names.index("CONSULT") < names.index("CONSULT_ANSWERED") < names.index("TRANSFER"), names
    transfer = next(data for e, data in events if e == "TRANSFER")
    assert {k: transfer[k] for k in ("mode", "agent", "queue", "kind", "target", "via")} == {
        "mode": "attended", "agent": "alice", "queue": "sales", "kind": "agent", "target": "bob", "via": "api"}
    assert d.status()["queues"]["sales"]["transferred"] == 1
    stats = _stats(d)
    assert next(q for q in stats["queues"] if q["queue"] == "sales")["transferred"] == 1
    assert next(a for a in stats["agents"] if a["agent"] == "alice")["transferred"] == 1
    _all_free(d)
    _stops_cleanly(d)


async def test_consult_with_a_listed_external_number_then_complete_the_caller_talks_to_it(daemon_factory,
                                                                                         tmp_path: Path):
    """An attended transfer to an external party (a SIPp UAS behind the trunk, playing its tone):
    alice hears it during the consult while the caller hears hold music; after the complete the
    caller hears it and alice is released; the caller's hang-up ends the external leg."""
    d = daemon_factory(workers=1, start=False)
    port = d.ports.caller(20)
    _with_external(d, port)
    d.start()
    for name, freq in (("caller", CALLER), ("alice", ALICE)):
        write_tone(tmp_path / f"{name}.wav", freq, 30)
    uas = _external(d, tmp_path, port)
    alice, bob = await agents_up(d, ("alice", "bob"))
    caller = await Phone("4511223344", d.ports.caller(1), d.ports.base + 90).start()
    try:
        a, alice_leg = await _connected_to_alice(d, caller, alice)
        caller.send(p.Play(leg=a, files=(str(tmp_path / "caller.wav"),), loop=True))
        alice.send(p.Play(leg=alice_leg, files=(str(tmp_path / "alice.wav"),), loop=True))
        status, _, body = http(d, "POST", "/api/agents/alice/transfer", token=ALICE_TOKEN,
                               body={"mode": "attended", "kind": "external", "target": NUMBER})
        assert status == 200 and json.loads(body)["target"] == "accounting", body
        await asyncio.to_thread(d.wait_event, "acd.consult_answered", 1, 8.0)
        await asyncio.sleep(0.5)
        caller_during, alice_during = await asyncio.gather(_hears(caller, a, tmp_path / "c1.wav"),
                                                           _hears(alice, alice_leg, tmp_path / "a1.wav"))
        status, _, body = http(d, "POST", "/api/agents/alice/transfer", token=ALICE_TOKEN,
                               body={"action": "complete"})
        assert status == 200, body
        await alice.wait(p.CallState, lambda m: m.leg == alice_leg and m.state == "disconnected", timeout=5)
        await asyncio.sleep(0.5)
        caller_after = await _hears(caller, a, tmp_path / "c2.wav")
        wait_agent(d, "alice", "available")
        caller.send(p.Hangup(leg=a))
        await caller.wait(p.CallState, lambda m: m.leg == a and m.state == "disconnected", timeout=5)
        out, _ = await asyncio.to_thread(uas.communicate, timeout=45)
    finally:
        if uas.poll() is None:
            uas.kill()
            uas.wait()
        await caller.stop()
        await alice.stop()
        await bob.stop()
    assert uas.returncode == 0, out[-2000:]  # it got its BYE when the caller hung up
    assert has_tone(caller_during, HOLD, tol=TONES_TOL), dominant_frequencies(caller_during)
    assert not has_tone(caller_during, EXTERNAL, tol=TONES_TOL, min_share=0.05), dominant_frequencies(caller_during)
    assert has_tone(alice_during, EXTERNAL, tol=TONES_TOL), dominant_frequencies(alice_during)
    assert has_tone(caller_after, EXTERNAL, tol=TONES_TOL), dominant_frequencies(caller_after)
    assert not has_tone(caller_after, ALICE, tol=TONES_TOL, min_share=0.05), dominant_frequencies(caller_after)
    row = d.wait_calls_ended(1)[0]
    assert row["agent"] == "alice" and row["disposition"] == "completed" and row["hangup_by"] == "caller", row
    qlog = _rows(d, "SELECT agent, event, data FROM queue_log WHERE call_id=? ORDER BY id", row["call_id"])
    assert [(ag, ev) for ag, ev, _ in qlog] == [("NONE", "ENTERQUEUE"), ("alice", "CONNECT"),
                                                ("alice", "ATTENDEDTRANSFER")], qlog
    assert qlog[2][2].startswith("BRIDGE|accounting|"), qlog
    transfer = next(data for e, data in _events(d, row["call_id"]) if e == "TRANSFER")
    assert (transfer["mode"], transfer["kind"], transfer["target"]) == ("attended", "external", "accounting")
    _all_free(d)
    _stops_cleanly(d)


async def test_consult_over_mqtt_then_cancel_alice_is_back_with_the_caller_and_bob_is_free(
        daemon_factory, tmp_path: Path):
    d = daemon_factory(workers=1, start=False)
    _config(d)
    d.config["mqtt"] = {"embedded": True, "listen": f"127.0.0.1:{d.ports.base + 8}",
                        "clients": [{"username": INTEGRATION[0], "password": INTEGRATION[1]}]}
    d.config["agents"]["alice"]["mqtt_password"] = "alice-mqtt-pw"
    d.start()
    for name, freq in (("caller", CALLER), ("alice", ALICE), ("bob", BOB)):
        write_tone(tmp_path / f"{name}.wav", freq, 30)
    watcher = Client(d.ports.base + 8, *INTEGRATION, client_id="crm")
    watcher.subscribe("errors")
    desk = Client(d.ports.base + 8, "alice", "alice-mqtt-pw", client_id="desk-alice")
    alice, bob = await agents_up(d, ("alice", "bob"))
    caller = await Phone("4511223344", d.ports.caller(1), d.ports.base + 90).start()
    try:
        a, alice_leg = await _connected_to_alice(d, caller, alice)
        caller.send(p.Play(leg=a, files=(str(tmp_path / "caller.wav"),), loop=True))
        alice.send(p.Play(leg=alice_leg, files=(str(tmp_path / "alice.wav"),), loop=True))
        desk.publish("agents/alice/commands", {"version": 1, "command": "transfer", "action": "cancel"})
        await watcher.until("errors", lambda m: "no consult under way" in m["error"], timeout=5)
        desk.publish("agents/alice/commands", {"version": 1, "command": "transfer", "mode": "attended",
                                               "external": "+4590901234"})
        await watcher.until("errors", lambda m: "not a listed transfer target" in m["error"], timeout=5)
        desk.publish("agents/alice/commands", {"version": 1, "command": "transfer", "mode": "attended",
                                               "agent": "bob"})
        inc = await bob.wait(p.Incoming, timeout=10)
        bob.send(p.Answer(leg=inc.leg))
        await bob.wait(p.MediaReady, lambda m: m.leg == inc.leg)
        bob.send(p.Play(leg=inc.leg, files=(str(tmp_path / "bob.wav"),), loop=True))
        await asyncio.to_thread(d.wait_event, "acd.consult_answered", 1, 5.0)
        await asyncio.sleep(0.3)
        caller_during, alice_during = await asyncio.gather(_hears(caller, a, tmp_path / "c1.wav"),
                                                           _hears(alice, alice_leg, tmp_path / "a1.wav"))
        desk.publish("agents/alice/commands", {"version": 1, "command": "transfer", "action": "cancel"})
        await bob.wait(p.CallState, lambda m: m.leg == inc.leg and m.state == "disconnected", timeout=5)
        wait_agent(d, "bob", "available")
        await asyncio.sleep(0.5)
        caller_back, alice_back = await asyncio.gather(_hears(caller, a, tmp_path / "c2.wav"),
                                                       _hears(alice, alice_leg, tmp_path / "a2.wav"))
        assert d.status()["agents"]["alice"] == "on-call"
        alice.send(p.Hangup(leg=alice_leg))
        await caller.wait(p.CallState, lambda m: m.leg == a and m.state == "disconnected", timeout=5)
    finally:
        watcher.close()
        desk.close()
        await caller.stop()
        await alice.stop()
        await bob.stop()
    assert has_tone(caller_during, HOLD, tol=TONES_TOL), dominant_frequencies(caller_during)
    assert not has_tone(caller_during, ALICE, tol=TONES_TOL, min_share=0.05), dominant_frequencies(caller_during)
    assert has_tone(alice_during, BOB, tol=TONES_TOL), dominant_frequencies(alice_during)
    assert has_tone(caller_back, ALICE, tol=TONES_TOL), dominant_frequencies(caller_back)
    assert not has_tone(caller_back, HOLD, tol=TONES_TOL, min_share=0.05), dominant_frequencies(caller_back)
    assert has_tone(alice_back, CALLER, tol=TONES_TOL), dominant_frequencies(alice_back)
    row = d.wait_calls_ended(1)[0]
    assert row["agent"] == "alice" and row["hangup_by"] == "agent", row
    qlog = [ev for (ev,) in _rows(d, "SELECT event FROM queue_log WHERE call_id=? ORDER BY id", row["call_id"])]
    assert qlog == ["ENTERQUEUE", "CONNECT", "COMPLETEAGENT"], qlog
    events = _events(d, row["call_id"])
    ended = [data for e, data in events if e == "CONSULT_ENDED"]
    assert len(ended) == 1 and ended[0]["outcome"] == "cancelled" and ended[0]["via"] == "mqtt", ended
    assert not [e for e, _ in events if e == "TRANSFER"]
    _all_free(d)
    _stops_cleanly(d)


async def test_a_worker_full_of_calls_refuses_a_consult_with_the_reason_and_one_with_room_makes_it(
        daemon_factory, tmp_path: Path):
    """Leg budget (acd/consult.py): one worker, two callers talking to alice and bob hold its 4
    legs; alice's consult with carol is refused with the reason and carol is not rung. Once the
    second call ends the worker has room: the same consult rings carol, and while it does the
    worker takes no new caller (whose agent leg would be a fifth)."""
    d = daemon_factory(workers=1, start=False)
    _config(d)
    d.config["agents"]["carol"] = {"softphone": {"username": "carol", "password": "carol-secret"}}
    d.config["queues"]["sales"]["members"] = ["alice", "bob"]
    d.start()
    alice, bob, carol = await agents_up(d, ("alice", "bob", "carol"))
    c1 = await Phone("4511223344", d.ports.caller(1), d.ports.base + 90).start()
    c2 = await Phone("4522334455", d.ports.caller(6), d.ports.base + 180).start()
    try:
        a1, alice_leg = await _connected_to_alice(d, c1, alice)
        a2 = await c2.call(f"sip:500@{d.edge}")
        inc = await bob.wait(p.Incoming, timeout=10)
        bob.send(p.Answer(leg=inc.leg))
        await bob.wait(p.MediaReady, lambda m: m.leg == inc.leg)
        await asyncio.to_thread(d.wait_event, "acd.connected", 2, 10.0)
        status, _, body = http(d, "POST", "/api/agents/alice/transfer", token=ALICE_TOKEN,
                               body={"mode": "attended", "kind": "agent", "target": "carol"})
        assert status == 400 and b"no call leg free for the consult" in body, body
        await asyncio.sleep(1.0)
        assert not [m for m in carol.events if isinstance(m, p.Incoming)]
        assert d.status()["agents"]["carol"] == "available"
        c2.send(p.Hangup(leg=a2))
        await bob.wait(p.CallState, lambda m: m.leg == inc.leg and m.state == "disconnected", timeout=5)
        await asyncio.sleep(0.5)
        status, _, body = http(d, "POST", "/api/agents/alice/transfer", token=ALICE_TOKEN,
                               body={"mode": "attended", "kind": "agent", "target": "carol"})
        assert status == 200, body
        ring = await carol.wait(p.Incoming, timeout=10)
        # the consult holds the worker's third leg: a new caller (2 more legs) does not fit
        with pytest.raises(AssertionError, match="failed"):
            await c2.call(f"sip:500@{d.edge}")
        assert d.events("call.worker_full_refused"), "the worker took a call it had no legs for"
        status, _, body = http(d, "POST", "/api/agents/alice/transfer", token=ALICE_TOKEN, body={"action": "cancel"})
        assert status == 200, body
        await carol.wait(p.CallState, lambda m: m.leg == ring.leg and m.state == "disconnected", timeout=5)
        wait_agent(d, "carol", "available")
        c1.send(p.Hangup(leg=a1))
        await alice.wait(p.CallState, lambda m: m.leg == alice_leg and m.state == "disconnected", timeout=5)
    finally:
        await c1.stop()
        await c2.stop()
        for ph in (alice, bob, carol):
            await ph.stop()
    rows = d.wait_calls_ended(2)
    first = next(r for r in rows if r["agent"] == "alice")
    events = _events(d, first["call_id"])
    refused = [data for e, data in events if e == "TRANSFER_REFUSED"]
    assert len(refused) == 1 and refused[0]["mode"] == "attended" and "4 of its 4 legs" in refused[0]["reason"], refused
    ended = [data for e, data in events if e == "CONSULT_ENDED"]
    assert [x["outcome"] for x in ended] == ["cancelled"], ended
    _all_free(d)
    _stops_cleanly(d)


async def test_a_caller_or_an_agent_hanging_up_during_a_consult_ends_the_consult_leg_too(daemon_factory,
                                                                                      tmp_path: Path):
    """No leg is left up: the caller hangs up while bob's phone rings for the consult (the ring
    stops, bob is free); then on a second call the agent hangs up while she talks to bob (the
    caller and bob are hung up)."""
    d = daemon_factory(workers=1, start=False)
    _config(d)
    d.start()
    alice, bob = await agents_up(d, ("alice", "bob"))
    caller = await Phone("4511223344", d.ports.caller(1), d.ports.base + 90).start()
    try:
        a, alice_leg = await _connected_to_alice(d, caller, alice)
        status, _, body = http(d, "POST", "/api/agents/alice/transfer", token=ALICE_TOKEN,
                               body={"mode": "attended", "kind": "agent", "target": "bob"})
        assert status == 200, body
        ring = await bob.wait(p.Incoming, timeout=10)
        caller.send(p.Hangup(leg=a))
        await bob.wait(p.CallState, lambda m: m.leg == ring.leg and m.state == "disconnected", timeout=5)
        await alice.wait(p.CallState, lambda m: m.leg == alice_leg and m.state == "disconnected", timeout=5)
        wait_agent(d, "bob", "available")
        wait_agent(d, "alice", "available")
        bob_mark, alice_mark = len(bob.events), len(alice.events)
        a2 = await caller.call(f"sip:500@{d.edge}")
        inc = await alice.wait(p.Incoming, timeout=10, after=alice_mark)
        alice.send(p.Answer(leg=inc.leg))
        await asyncio.to_thread(d.wait_event, "acd.connected", 2, 10.0)
        status, _, body = http(d, "POST", "/api/agents/alice/transfer", token=ALICE_TOKEN,
                               body={"mode": "attended", "kind": "agent", "target": "bob"})
        assert status == 200, body
        ring2 = await bob.wait(p.Incoming, timeout=10, after=bob_mark)
        bob.send(p.Answer(leg=ring2.leg))
        await asyncio.to_thread(d.wait_event, "acd.consult_answered", 1, 5.0)
        alice.send(p.Hangup(leg=inc.leg))
        await caller.wait(p.CallState, lambda m: m.leg == a2 and m.state == "disconnected", timeout=5)
        await bob.wait(p.CallState, lambda m: m.leg == ring2.leg and m.state == "disconnected", timeout=5)
        wait_agent(d, "bob", "available")
    finally:
        await caller.stop()
        await alice.stop()
        await bob.stop()
    first, second = d.wait_calls_ended(2)[:2]
    outcomes = []
    for row in (first, second):
        outcomes += [data["outcome"] for e, data in _events(d, row["call_id"]) if e == "CONSULT_ENDED"]
        assert row["agent"] == "alice", row
    assert sorted(outcomes) == ["agent_hangup", "caller_hangup"], outcomes
    qlog = [ev for (ev,) in _rows(d, "SELECT event FROM queue_log WHERE call_id IN (?, ?) ORDER BY id",
                                  first["call_id"], second["call_id"])]
    assert qlog == ["ENTERQUEUE", "CONNECT", "COMPLETECALLER", "ENTERQUEUE", "CONNECT", "COMPLETEAGENT"], qlog
    _all_free(d)
    _stops_cleanly(d)


async def test_a_transfer_target_behind_a_challenging_trunk_gets_that_trunks_credentials(daemon_factory,
                                                                                        tmp_path: Path):
    """The edge answers the target's trunk's 401 with that trunk's credentials (not the mobile
    trunk's, which has its own), once; the caller is then connected to the target."""
    d = daemon_factory(workers=1, start=False)
    port = d.ports.caller(20)
    _config(d)
    d.config["sip"]["trunks"] = {
        "mobiles": {"address": f"127.0.0.1:{d.ports.caller(21)}", "username": "mob", "password": "Mob-secret"},
        "carrier": {"address": f"127.0.0.1:{port}", "username": "acme", "password": "Tr0nk-secret",
                    "allowed": [r"\+45[0-9]{8}"]}}
    d.config["sip"]["mobile_trunk"] = "mobiles"
    d.config["transfer_targets"] = {"accounting": {"number": NUMBER, "trunk": "carrier"}}
    d.start()
    carrier = _carrier(port, tmp_path)
    alice, bob = await agents_up(d, ("alice", "bob"))
    caller = await Phone("4511223344", d.ports.caller(1), d.ports.base + 90).start()
    try:
        a, alice_leg = await _connected_to_alice(d, caller, alice)
        status, _, body = http(d, "POST", "/api/agents/alice/transfer", token=ALICE_TOKEN,
                               body={"kind": "external", "target": "accounting"})
        assert status == 200, body
        await alice.wait(p.CallState, lambda m: m.leg == alice_leg and m.state == "disconnected", timeout=5)
        await asyncio.to_thread(d.wait_event, "call.transfer_out", 1, 5.0)
        for _ in range(50):
            row = _rows(d, "SELECT count(*) FROM call_events WHERE event='TRANSFER_ANSWERED'")
            if row[0][0]:
                break
            await asyncio.sleep(0.1)
        caller.send(p.Hangup(leg=a))
        await caller.wait(p.CallState, lambda m: m.leg == a and m.state == "disconnected", timeout=5)
        out, _ = await asyncio.to_thread(carrier.communicate, timeout=40)
    finally:
        if carrier.poll() is None:
            carrier.kill()
            carrier.wait()
        await caller.stop()
        await alice.stop()
        await bob.stop()
    assert carrier.returncode == 0, out[-2000:]
    reqs = _received(next(tmp_path.glob("*_messages.log")).read_text())
    invites = [r for r in reqs if r.startswith("INVITE ")]
    assert len(invites) == 2 and "Authorization:" not in invites[0], reqs
    assert 'Authorization: Digest username="acme"' in invites[1] and "Tr0nk-secret" not in "".join(reqs)
    row = d.wait_calls_ended(1)[0]
    events = [e for e, _ in _events(d, row["call_id"])]
    assert "TRANSFER_ANSWERED" in events and row["hangup_by"] == "caller", (events, row)
    _all_free(d)
    _stops_cleanly(d)
