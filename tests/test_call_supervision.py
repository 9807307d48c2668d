"""Supervision of live queue calls (issue 11 item 4): a supervisor listens, whispers or barges.
The real daemon, Kamailio edge and pjsua2 phones: the caller plays tone A, the agent tone B, the
supervisor tone C, and each phone's recording of what it hears proves who hears whom in each
mode; the API's and the CLI's refusals; the mode changed by the API and by the supervisor's
keys; the record of it; the worker's leg budget; no leg left up afterwards."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from ringmaster import protocol as p
from tests.helpers.audio import TONES_TOL, dominant_frequencies, has_tone, read_wav, write_tone
from tests.helpers.mqtt import Client
from tests.helpers.phone import Phone
from tests.test_acd_calls import agents_up, wait_agent
from tests.test_api import http
from tests.test_leg_slots import wait_slots_free
from tests.test_presence_mqtt import INTEGRATION
from tests.test_worker_defence import _stops_cleanly

HOLD, A, B, C = 440.0, 700.0, 1300.0, 2100.0  # hold music, caller, agent (alice), supervisor (carol)
CAROL_TOKEN = "carol-token-0123456789"
SUP_TOKEN = "any-supervisor-0123456789"
ADMIN_TOKEN = "admin-token-0123456789"


def _config(d, agents: tuple[str, ...] = ("alice", "carol", "dave")) -> None:  # type: ignore[no-untyped-def]
    write_tone(d.dir / "prompts" / "hold.wav", HOLD, 3.0)
    d.config["agents"] = {a: {"softphone": {"username": a, "password": f"{a}-secret"}} for a in agents}
    d.config["queues"] = {"sales": {"moh": "hold", "strategy": "linear", "members": ["alice"]},
                          "support": {"moh": "hold", "strategy": "linear", "members": ["alice"]}}
    d.config["flows"]["main"] = [{"queue": "sales"}, "hangup"]
    d.config["entry_points"].append({"number": "500", "flow": "main"})
    d.config["supervision"] = {"supervisors": {"carol": {}, "dave": {"queues": ["support"]}}}
    d.config["http"] = {"listen": f"127.0.0.1:{d.ports.base + 6}",
                        "tokens": [{"name": "carol", "token": CAROL_TOKEN, "role": "supervisor", "supervisor": "carol"},
                                   {"name": "sup", "token": SUP_TOKEN, "role": "supervisor"},
                                   {"name": "admin", "token": ADMIN_TOKEN, "role": "admin"},
                                   {"name": "op", "token": "op-token-0123456789", "role": "operator"},
                                   {"name": "alice", "token": "alice-token-0123456789", "role": "agent",
                                    "agent": "alice"}]}


def _rows(d, sql: str, *args: Any) -> list[tuple[Any, ...]]:  # type: ignore[no-untyped-def]
    con = sqlite3.connect(d.db_path)
    try:
        return [tuple(r) for r in con.execute(sql, args)]
    finally:
        con.close()


def _events(d, call_id: str, prefix: str = "SUPERVISE") -> list[tuple[str, dict[str, Any]]]:  # type: ignore[no-untyped-def]
    return [(e, json.loads(data)) for e, data in _rows(
        d, "SELECT event, data FROM call_events WHERE call_id=? ORDER BY id", call_id) if e.startswith(prefix)]


def _wait_events(d, call_id: str, count: int, timeout: float = 8.0) -> list[tuple[str, dict[str, Any]]]:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    got: list[tuple[str, dict[str, Any]]] = []
    while time.monotonic() < deadline:
        got = _events(d, call_id)
        if len(got) >= count:
            return got
        time.sleep(0.1)
    raise AssertionError(f"{count} SUPERVISE events not stored: {got}")


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


async def _hears(phone: Phone, leg: str, path: Path, seconds: float = 1.5) -> np.ndarray:
    phone.send(p.RecordStart(rec_id=path.stem, legs=(leg,), path=str(path)))
    await asyncio.sleep(seconds)
    phone.send(p.RecordStop(rec_id=path.stem))
    await phone.wait(p.RecordingDone, lambda m: m.rec_id == path.stem)
    return read_wav(path)[0]


async def _connected(d, caller: Phone, alice: Phone, tmp_path: Path) -> tuple[str, str, str]:  # type: ignore[no-untyped-def]
    """The caller in sales, talking to alice; each plays its tone. (caller leg, alice leg, call id)"""
    a = await caller.call(f"sip:500@{d.edge}")
    inc = await alice.wait(p.Incoming, timeout=10)
    alice.send(p.Answer(leg=inc.leg))
    await alice.wait(p.MediaReady, lambda m: m.leg == inc.leg)
    await asyncio.to_thread(d.wait_event, "acd.connected", 1, 10.0)
    caller.send(p.Play(leg=a, files=(str(tmp_path / "a.wav"),), loop=True))
    alice.send(p.Play(leg=inc.leg, files=(str(tmp_path / "b.wav"),), loop=True))
    return a, inc.leg, dict(inc.headers)["X-Ringmaster-Call"]


def _heard(samples: np.ndarray, tone: float) -> bool:
    return has_tone(samples, tone, tol=TONES_TOL)


def _not_heard(samples: np.ndarray, tone: float) -> bool:
    return not has_tone(samples, tone, tol=TONES_TOL, min_share=0.03)


@pytest.mark.parametrize("direct_media", [False, True])
async def test_supervisor_listens_then_whispers_then_barges_and_each_hears_whom_the_mode_says(
        daemon_factory, tmp_path: Path, direct_media: bool):
    d = daemon_factory(workers=1, start=False)
    _config(d)
    d.config["sip"]["direct_media"] = direct_media
    d.start()
    for name, tone in (("a", A), ("b", B), ("c", C)):
        write_tone(tmp_path / f"{name}.wav", tone, 30)
    alice, carol, dave = await agents_up(d, ("alice", "carol", "dave"))
    caller = await Phone("4511223344", d.ports.caller(1), d.ports.base + 90).start()
    heard: dict[str, np.ndarray] = {}
    try:
        a, alice_leg, call_id = await _connected(d, caller, alice, tmp_path)
        # who may not, and what cannot be: refused, nothing dialled
        for token, body, code, words in (
                ("op-token-0123456789", {"mode": "listen", "supervisor": "carol"}, 403, b"role"),
                ("alice-token-0123456789", {"mode": "listen", "supervisor": "carol"}, 403, b"role"),
                (CAROL_TOKEN, {"mode": "listen", "supervisor": "dave"}, 403, b"not 'dave'"),
                (SUP_TOKEN, {"mode": "listen", "supervisor": "dave"}, 403, b"does not oversee queue 'sales'"),
                (SUP_TOKEN, {"mode": "listen", "supervisor": "alice"}, 400, b"unknown supervisor"),
                (SUP_TOKEN, {"mode": "shout", "supervisor": "carol"}, 400, b"listen, whisper or barge"),
                (SUP_TOKEN, {"mode": "listen", "supervisor": "carol", "x": 1}, 400, b"unknown field"),
                (SUP_TOKEN, {"mode": "listen"}, 400, b"supervisor"),
                (SUP_TOKEN, {"mode": 5, "supervisor": "carol"}, 400, b"are strings"),
                (SUP_TOKEN, b"{not json", 400, b""),
        ):
            status, _, got = http(d, "POST", f"/api/calls/{call_id}/supervise", token=token, body=body)
            assert status == code and words in got, (token, body, status, got)
        status, _, got = http(d, "POST", "/api/calls/20990101000000-nothing/supervise", token=SUP_TOKEN,
                              body={"mode": "listen", "supervisor": "carol"})
        assert status == 404, got
        assert not [m for m in carol.events + dave.events if isinstance(m, p.Incoming)]
        # carol's own token, the supervisor named by it: her phone rings
        status, _, got = http(d, "POST", f"/api/calls/{call_id}/supervise", token=CAROL_TOKEN,
                              body={"mode": "listen"})
        assert status == 200 and json.loads(got)["state"] == "ringing", got
        inc = await carol.wait(p.Incoming, timeout=10)
        headers = dict(inc.headers)
        assert headers.get("X-Ringmaster-Call") == call_id and headers.get("X-Ringmaster-Supervise") == "listen"
        assert headers.get("X-Ringmaster-Supervised-Agent") == "alice", inc.headers
        carol.send(p.Answer(leg=inc.leg))
        await carol.wait(p.MediaReady, lambda m: m.leg == inc.leg)
        carol.send(p.Play(leg=inc.leg, files=(str(tmp_path / "c.wav"),), loop=True))
        _wait_events(d, call_id, 1)
        # carol (an agent who could be a queue member) is offered no call while supervising
        await asyncio.to_thread(wait_agent, d, "carol", "paused:supervising")
        await asyncio.sleep(0.5)  # with direct media: the re-INVITEs that bring the media back
        # a second supervisor on the same call: refused
        status, _, got = http(d, "POST", f"/api/calls/{call_id}/supervise", token=ADMIN_TOKEN,
                              body={"mode": "listen", "supervisor": "dave"})
        assert status in (403, 409), got
        heard["listen_carol"] = await _hears(carol, inc.leg, tmp_path / "listen_carol.wav")
        heard["listen_caller"] = await _hears(caller, a, tmp_path / "listen_caller.wav")
        heard["listen_alice"] = await _hears(alice, alice_leg, tmp_path / "listen_alice.wav")
        # whisper, from the API: alice hears carol, the caller does not
        status, _, got = http(d, "POST", f"/api/calls/{call_id}/supervise", token=CAROL_TOKEN,
                              body={"mode": "whisper"})
        assert status == 200 and json.loads(got)["mode"] == "whisper", got
        _wait_events(d, call_id, 2)
        await asyncio.sleep(0.3)
        heard["whisper_carol"] = await _hears(carol, inc.leg, tmp_path / "whisper_carol.wav")
        heard["whisper_caller"] = await _hears(caller, a, tmp_path / "whisper_caller.wav")
        heard["whisper_alice"] = await _hears(alice, alice_leg, tmp_path / "whisper_alice.wav")
        # barge, from carol's phone: key 3 (FreeSWITCH eavesdrop's three-way)
        carol.send(p.SendDtmf(leg=inc.leg, digits="3"))
        _wait_events(d, call_id, 3)
        await asyncio.sleep(0.3)
        heard["barge_carol"] = await _hears(carol, inc.leg, tmp_path / "barge_carol.wav")
        heard["barge_caller"] = await _hears(caller, a, tmp_path / "barge_caller.wav")
        heard["barge_alice"] = await _hears(alice, alice_leg, tmp_path / "barge_alice.wav")
        # carol leaves; caller and alice talk on
        carol.send(p.Hangup(leg=inc.leg))
        await carol.wait(p.CallState, lambda m: m.leg == inc.leg and m.state == "disconnected", timeout=5)
        _wait_events(d, call_id, 4)
        await asyncio.sleep(0.8 if direct_media else 0.3)
        heard["after_caller"] = await _hears(caller, a, tmp_path / "after_caller.wav")
        await caller.hangup(a)
        await alice.wait(p.CallState, lambda m: m.leg == alice_leg and m.state == "disconnected", timeout=5)
        wait_agent(d, "alice", "available")
        wait_agent(d, "carol", "available")
    finally:
        await caller.stop()
        for ph in (alice, carol, dave):
            await ph.stop()
    f = {k: dominant_frequencies(v) for k, v in heard.items()}
    # listen: carol hears both; neither hears her
    assert _heard(heard["listen_carol"], A) and _heard(heard["listen_carol"], B), f["listen_carol"]
    assert _heard(heard["listen_caller"], B) and _not_heard(heard["listen_caller"], C), f["listen_caller"]
    assert _heard(heard["listen_alice"], A) and _not_heard(heard["listen_alice"], C), f["listen_alice"]
    # whisper: alice hears carol; the caller does not; carol still hears both
    assert _heard(heard["whisper_carol"], A) and _heard(heard["whisper_carol"], B), f["whisper_carol"]
    assert _heard(heard["whisper_alice"], C) and _heard(heard["whisper_alice"], A), f["whisper_alice"]
    assert _heard(heard["whisper_caller"], B) and _not_heard(heard["whisper_caller"], C), f["whisper_caller"]
    # barge: everybody hears everybody
    assert _heard(heard["barge_carol"], A) and _heard(heard["barge_carol"], B), f["barge_carol"]
    assert _heard(heard["barge_alice"], C) and _heard(heard["barge_alice"], A), f["barge_alice"]
    assert _heard(heard["barge_caller"], C) and _heard(heard["barge_caller"], B), f["barge_caller"]
    # she left: the caller hears alice and no longer carol
    assert _heard(heard["after_caller"], B) and _not_heard(heard["after_caller"], C), f["after_caller"]
    events = _events(d, call_id)
    assert [(e, x.get("mode"), x.get("previous"), x.get("via")) for e, x in events] == [
        ("SUPERVISE", "listen", None, "api"), ("SUPERVISE", "whisper", "listen", "api"),
        ("SUPERVISE", "barge", "whisper", "dtmf"), ("SUPERVISE_END", "barge", None, None)], events
    assert all(x["supervisor"] == "carol" for _, x in events), events
    assert events[0][1]["agent"] == "alice" and events[0][1]["queue"] == "sales", events
    assert events[3][1]["how"] == "supervisor_hangup" and events[3][1]["seconds"] > 1, events
    if direct_media:
        # the media came back for her, and went direct again after she left
        paths = [(e["event"], e.get("reason")) for e in d.events("call.media_direct") + d.events("call.media_anchored")]
        assert ("call.media_anchored", "supervise") in paths, paths
        assert len(d.events("call.media_direct")) >= 2, paths
    row = d.wait_calls_ended(1)[0]
    assert row["agent"] == "alice" and row["disposition"] == "completed", row
    _all_free(d)
    _stops_cleanly(d)


async def test_cli_supervise_and_the_call_ending_hangs_up_the_supervisor_and_a_full_worker_refuses(
        daemon_factory, tmp_path: Path):
    """`ringmaster supervise` (the control socket: the operator of the host) rings carol; the
    caller hanging up ends her leg too (SUPERVISE_END how caller_hangup). A worker that holds
    two calls has no leg for a supervisor: refused with the reason, nothing dialled."""
    d = daemon_factory(workers=1, start=False)
    _config(d, agents=("alice", "bob", "carol"))
    d.config["queues"]["sales"]["members"] = ["alice", "bob"]
    d.config["supervision"] = {"supervisors": {"carol": {"queues": ["sales"]}}}
    d.start()
    for name, tone in (("a", A), ("b", B), ("c", C)):
        write_tone(tmp_path / f"{name}.wav", tone, 30)
    alice, bob, carol = await agents_up(d, ("alice", "bob", "carol"))
    caller = await Phone("4511223344", d.ports.caller(1), d.ports.base + 90).start()
    caller2 = await Phone("4511223355", d.ports.caller(5), d.ports.base + 94).start()

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "ringmaster.cli", "supervise", *args, "-c", str(d.config_path)],
                              capture_output=True, text=True, timeout=15)

    try:
        a, alice_leg, call_id = await _connected(d, caller, alice, tmp_path)
        out = cli(call_id, "--mode", "shout", "--supervisor", "carol")
        assert out.returncode == 2 and "invalid choice" in out.stderr, out
        out = cli("20990101000000-nothing", "--mode", "listen", "--supervisor", "carol")
        assert out.returncode == 1 and "not a live queue call" in out.stderr, out
        out = cli(call_id, "--stop")
        assert out.returncode == 1 and "nobody supervises" in out.stderr, out
        # a second call in the same worker: 2 calls x 2 legs, no leg left for a supervisor
        a2 = await caller2.call(f"sip:500@{d.edge}")
        inc2 = await bob.wait(p.Incoming, timeout=10)
        bob.send(p.Answer(leg=inc2.leg))
        await bob.wait(p.MediaReady, lambda m: m.leg == inc2.leg)
        await asyncio.to_thread(d.wait_event, "acd.connected", 2, 10.0)
        out = cli(call_id, "--mode", "barge", "--supervisor", "carol")
        assert out.returncode == 1 and "is full" in out.stderr, out
        await caller2.hangup(a2)
        await bob.wait(p.CallState, lambda m: m.leg == inc2.leg and m.state == "disconnected", timeout=5)
        await asyncio.sleep(0.3)
        out = cli(call_id, "--mode", "barge", "--supervisor", "carol")
        assert out.returncode == 0 and "carol barge (ringing)" in out.stdout, out
        inc = await carol.wait(p.Incoming, timeout=10)
        carol.send(p.Answer(leg=inc.leg))
        await carol.wait(p.MediaReady, lambda m: m.leg == inc.leg)
        carol.send(p.Play(leg=inc.leg, files=(str(tmp_path / "c.wav"),), loop=True))
        _wait_events(d, call_id, 1)
        await asyncio.sleep(0.3)
        barge_caller = await _hears(caller, a, tmp_path / "barge_caller.wav")
        # while carol is on the call, a new call to this worker would find no leg for its agent:
        # the worker refuses it (486) and, with one worker, the caller is turned away
        refused = "refused-1"
        caller2.send(p.Dial(leg=refused, uri=f"sip:500@{d.edge}"))
        st = await caller2.wait(p.CallState, lambda m: m.leg == refused and m.state == "disconnected", timeout=10)
        assert st.code >= 400, st
        await caller.hangup(a)
        await carol.wait(p.CallState, lambda m: m.leg == inc.leg and m.state == "disconnected", timeout=5)
        await alice.wait(p.CallState, lambda m: m.leg == alice_leg and m.state == "disconnected", timeout=5)
        wait_agent(d, "alice", "available")
    finally:
        await caller.stop()
        await caller2.stop()
        for ph in (alice, bob, carol):
            await ph.stop()
    assert has_tone(barge_caller, C, tol=TONES_TOL), dominant_frequencies(barge_caller)
    events = _events(d, call_id)
    assert [(e, x.get("mode"), x.get("via"), x.get("how")) for e, x in events] == [
        ("SUPERVISE", "barge", "cli", None), ("SUPERVISE_END", "barge", None, "caller_hangup")], events
    assert d.events("call.worker_full_refused"), "the new call was not refused for the supervisor's leg"
    _all_free(d)
    _stops_cleanly(d)


async def test_agent_is_told_by_a_beep_only_she_hears_and_on_mqtt_and_an_unanswered_supervisor_is_recorded(
        daemon_factory, tmp_path: Path):
    """supervision.tell_agent {beep, mqtt}: when carol joins, alice hears the beep prompt (the
    caller does not) and her desk gets `supervision` messages on agents/alice/offers (joined,
    left). A supervisor who does not answer within ring_timeout: SUPERVISE_FAILED, her phone
    stops ringing, the call goes on. The agent hanging up ends the supervisor's leg."""
    beep = 2900.0
    d = daemon_factory(workers=1, start=False)
    _config(d, agents=("alice", "carol"))
    d.config["supervision"] = {"supervisors": {"carol": {}}, "ring_timeout": 2,
                               "tell_agent": {"beep": True, "mqtt": True}}
    d.config["mqtt"] = {"embedded": True, "listen": f"127.0.0.1:{d.ports.base + 8}",
                        "clients": [{"username": INTEGRATION[0], "password": INTEGRATION[1]}]}
    d.config["agents"]["alice"]["mqtt_password"] = "alice-mqtt-pw"
    write_tone(d.dir / "prompts" / "beep.wav", beep, 1.0)
    d.start()
    for name, tone in (("a", A), ("b", B), ("c", C)):
        write_tone(tmp_path / f"{name}.wav", tone, 30)
    desk = Client(d.ports.base + 8, "alice", "alice-mqtt-pw", client_id="desk-alice")
    desk.subscribe("agents/alice/offers")
    alice, carol = await agents_up(d, ("alice", "carol"))
    caller = await Phone("4511223344", d.ports.caller(1), d.ports.base + 90).start()
    try:
        a, alice_leg, call_id = await _connected(d, caller, alice, tmp_path)
        # carol does not answer: rung for ring_timeout, then the ring ends and it is recorded
        status, _, got = http(d, "POST", f"/api/calls/{call_id}/supervise", token=SUP_TOKEN,
                              body={"mode": "whisper", "supervisor": "carol"})
        assert status == 200, got
        unanswered = await carol.wait(p.Incoming, timeout=10)
        await carol.wait(p.CallState, lambda m: m.leg == unanswered.leg and m.state == "disconnected", timeout=6)
        assert _wait_events(d, call_id, 1)[0][0] == "SUPERVISE_FAILED"
        # again; this time she answers while alice and the caller listen
        status, _, got = http(d, "POST", f"/api/calls/{call_id}/supervise", token=SUP_TOKEN,
                              body={"mode": "listen", "supervisor": "carol"})
        assert status == 200, got
        inc = await carol.wait(p.Incoming, lambda m: m.leg != unanswered.leg, timeout=10)
        alice_hears = asyncio.ensure_future(_hears(alice, alice_leg, tmp_path / "alice_beep.wav", 2.5))
        caller_hears = asyncio.ensure_future(_hears(caller, a, tmp_path / "caller_beep.wav", 2.5))
        await asyncio.sleep(0.3)
        carol.send(p.Answer(leg=inc.leg))
        heard_alice, heard_caller = await alice_hears, await caller_hears
        joined = await desk.until("agents/alice/offers", lambda m: m.get("event") == "supervision", timeout=5)
        assert (joined["call_id"], joined["supervisor"], joined["mode"], joined["state"]) == (
            call_id, "carol", "listen", "joined"), joined
        alice.send(p.Hangup(leg=alice_leg))  # the agent ends the call: the supervisor's leg ends too
        await carol.wait(p.CallState, lambda m: m.leg == inc.leg and m.state == "disconnected", timeout=5)
        await caller.wait(p.CallState, lambda m: m.leg == a and m.state == "disconnected", timeout=5)
        left = await desk.until("agents/alice/offers", lambda m: m.get("state") == "left", timeout=5)
        assert left["supervisor"] == "carol", left
    finally:
        desk.close()
        await caller.stop()
        for ph in (alice, carol):
            await ph.stop()
    assert has_tone(heard_alice, beep, tol=TONES_TOL), dominant_frequencies(heard_alice)
    assert not has_tone(heard_caller, beep, tol=TONES_TOL, min_share=0.03), dominant_frequencies(heard_caller)
    events = _events(d, call_id)
    assert [(e, x.get("mode"), x.get("how")) for e, x in events] == [
        ("SUPERVISE_FAILED", None, None), ("SUPERVISE", "listen", None),
        ("SUPERVISE_END", "listen", "agent_hangup")], events
    _all_free(d)
    _stops_cleanly(d)


def test_leg_budget_a_worker_with_one_call_takes_a_supervisor_and_two_calls_do_not():
    from ringmaster.supervision import room_for_supervisor

    assert room_for_supervisor(0, 0) and room_for_supervisor(1, 0)
    assert not room_for_supervisor(2, 0)  # 2 calls x 2 legs: all 4 taken
    assert room_for_supervisor(1, 1)  # by the legs (one per call is Supervisions.request's own rule)
    assert not room_for_supervisor(1, 2)


def test_supervision_config_errors_name_file_and_line(tmp_path: Path):
    from tests.test_config_errors import GOOD, _errors

    text = GOOD + """\
agents:
  alice: {softphone: {username: alice, password: alice-secret}}
queues:
  sales: {members: [alice]}
supervision:
  supervisors:
    carol: {}
    alice: {queues: [sale]}
http:
  tokens:
    - {name: s, token: s-token-0123456789ab, role: supervisor, supervisor: dave}
"""
    errors = _errors(tmp_path, text)
    f = str(tmp_path / "ringmaster.yaml")
    assert any(e.startswith(f"{f}:27:") and "supervisor 'carol' is not an agent" in e for e in errors), errors
    assert any(e.startswith(f"{f}:28:") and "unknown queue 'sale' (did you mean 'sales'?)" in e for e in errors), errors
    assert any(e.startswith(f"{f}:31:") and "unknown supervisor 'dave'" in e for e in errors), errors
    errors = _errors(tmp_path, text.replace("role: supervisor, supervisor: dave", "role: operator, supervisor: alice"))
    assert any(e.startswith(f"{f}:31:") and "only a token of role supervisor names a supervisor" in e
               for e in errors), errors


async def test_a_recorded_call_records_the_barging_supervisor_and_not_her_listening(daemon_factory, tmp_path: Path):
    """A recorded queue call (recorded in the worker, so never direct): carol barges, the file
    has her voice (the caller heard it); switched to listen, the file no longer has it."""
    d = daemon_factory(workers=1, start=False)
    _config(d, agents=("alice", "carol"))
    d.config["supervision"] = {"supervisors": {"carol": {}}}
    d.config["queues"]["sales"]["record"] = {"template": "{call_id}.wav"}
    d.start()
    for name, tone in (("a", A), ("b", B), ("c", C)):
        write_tone(tmp_path / f"{name}.wav", tone, 30)
    alice, carol = await agents_up(d, ("alice", "carol"))
    caller = await Phone("4511223344", d.ports.caller(1), d.ports.base + 90).start()
    try:
        a, alice_leg, call_id = await _connected(d, caller, alice, tmp_path)
        status, _, got = http(d, "POST", f"/api/calls/{call_id}/supervise", token=ADMIN_TOKEN,
                              body={"mode": "barge", "supervisor": "carol"})
        assert status == 200, got
        inc = await carol.wait(p.Incoming, timeout=10)
        carol.send(p.Answer(leg=inc.leg))
        await carol.wait(p.MediaReady, lambda m: m.leg == inc.leg)
        carol.send(p.Play(leg=inc.leg, files=(str(tmp_path / "c.wav"),), loop=True))
        _wait_events(d, call_id, 1)
        await asyncio.sleep(2.0)
        carol.send(p.SendDtmf(leg=inc.leg, digits="1"))  # back to listening
        _wait_events(d, call_id, 2)
        await asyncio.sleep(2.0)
        # ended by the API: her leg is hung up, the call goes on
        status, _, got = http(d, "DELETE", f"/api/calls/{call_id}/supervise", token=CAROL_TOKEN)
        assert status == 200 and json.loads(got)["state"] == "ended", got
        await carol.wait(p.CallState, lambda m: m.leg == inc.leg and m.state == "disconnected", timeout=5)
        status, _, got = http(d, "DELETE", f"/api/calls/{call_id}/supervise", token=CAROL_TOKEN)
        assert status == 404, got
        await asyncio.sleep(0.5)
        await caller.hangup(a)
        wait_agent(d, "alice", "available")
    finally:
        await caller.stop()
        for ph in (alice, carol):
            await ph.stop()
    row = d.wait_calls_ended(1)[0]
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and not Path(row["recording"]).is_file():
        time.sleep(0.1)
    assert [(e, x.get("how")) for e, x in _events(d, call_id)][-1] == ("SUPERVISE_END", "stopped")
    samples, rate = read_wav(Path(row["recording"]))
    tail = samples[-int(1.4 * rate):-int(0.2 * rate)]
    assert has_tone(samples, C, tol=TONES_TOL, min_share=0.03), dominant_frequencies(samples)
    assert has_tone(tail, A, tol=TONES_TOL) and has_tone(tail, B, tol=TONES_TOL), dominant_frequencies(tail)
    assert not has_tone(tail, C, tol=TONES_TOL, min_share=0.03), dominant_frequencies(tail)
    _all_free(d)
    _stops_cleanly(d)


async def test_a_supervisor_dials_a_feature_code_and_is_rung_back_listening(daemon_factory, tmp_path: Path):
    # *1alice from carol's own phone (digest-checked at the edge as carol): her INVITE gets 480
    # "Ringing You Back", then her phone rings from the worker that holds alice's call and she
    # hears both parties; dave may oversee only support: his *1alice is refused with the reason
    d = daemon_factory(workers=1, start=False)
    _config(d)
    # only the caller's port is a trusted trunk: the phones' own INVITEs are agents' calls
    d.config["sip"]["trusted"] = [{"name": "callers", "address": f"127.0.0.1:{d.ports.caller(1)}"}]
    d.start()
    for name, tone in (("a", A), ("b", B), ("c", C)):
        write_tone(tmp_path / f"{name}.wav", tone, 30)
    alice, carol, dave = await agents_up(d, ("alice", "carol", "dave"))
    caller = await Phone("4511223344", d.ports.caller(1), d.ports.base + 90).start()
    try:
        a, alice_leg, call_id = await _connected(d, caller, alice, tmp_path)
        dave.send(p.Dial(leg="dave-code", uri=f"sip:*1alice@{d.edge}", account="dave"))
        ended = await dave.wait(p.CallState, lambda m: m.leg == "dave-code" and m.state == "disconnected", timeout=10)
        assert ended.code == 403, ended
        carol.send(p.Dial(leg="carol-code", uri=f"sip:*1alice@{d.edge}", account="carol"))
        ended = await carol.wait(p.CallState, lambda m: m.leg == "carol-code" and m.state == "disconnected", timeout=10)
        assert ended.code == 480, ended
        inc = await carol.wait(p.Incoming, timeout=10)
        carol.send(p.Answer(leg=inc.leg))
        await carol.wait(p.MediaReady, lambda m: m.leg == inc.leg)
        carol.send(p.Play(leg=inc.leg, files=(str(tmp_path / "c.wav"),), loop=True))
        events = _wait_events(d, call_id, 1)
        assert events[0][0] == "SUPERVISE" and events[0][1]["mode"] == "listen"
        assert events[0][1]["via"] == "feature_code" and events[0][1]["supervisor"] == "carol"
        await asyncio.sleep(0.5)
        heard = await _hears(carol, inc.leg, tmp_path / "carol.wav")
        caller_heard = await _hears(caller, a, tmp_path / "caller.wav")
        assert _heard(heard, A) and _heard(heard, B), dominant_frequencies(heard)
        assert _not_heard(caller_heard, C), dominant_frequencies(caller_heard)
        assert [e for e in d.events("supervision.code_refused") if e["supervisor"] == "dave"]
        caller.send(p.Hangup(leg=a))
        await carol.wait(p.CallState, lambda m: m.leg == inc.leg and m.state == "disconnected", timeout=8)
    finally:
        await caller.stop()
        for ph in (alice, carol, dave):
            await ph.stop()
    _all_free(d)
