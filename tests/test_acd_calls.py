"""The ACD with real calls: agents are pjsua2 test phones registered at the edge with digest
auth; callers wait with hold music and are bridged to the agent the queue picks."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from pathlib import Path
from typing import Any

from ringmaster import protocol as p
from tests.helpers.audio import TONES_TOL, dominant_frequencies, has_tone, read_wav, write_tone
from tests.helpers.phone import Phone

HOLD, CALLER, AGENT = 440.0, 700.0, 1300.0


def acd_config(d, queue: dict[str, Any], agents: tuple[str, ...] = ("alice",)) -> None:  # type: ignore[no-untyped-def]
    write_tone(d.dir / "prompts" / "hold.wav", HOLD, 3.0)
    d.config["agents"] = {a: {"softphone": {"username": a, "password": f"{a}-secret"}} for a in agents}
    d.config["queues"] = {"sales": {"moh": "hold", **queue}}
    d.config["flows"]["main"] = [{"queue": "sales"}, "hangup"]
    d.config["entry_points"].append({"number": "500", "flow": "main"})


async def register(phone: Phone, d, user: str, password: str) -> p.RegState:  # type: ignore[no-untyped-def]
    mark = len(phone.events)
    phone.send(p.Register(reg_id=user, registrar=f"sip:{d.edge}", aor=f"sip:{user}@127.0.0.1",
                          username=user, password=password, expires=60, accept_calls=True))
    return await phone.wait(p.RegState, lambda m: m.reg_id == user and (m.registered or m.code >= 300),
                            timeout=10, after=mark)


def wait_agent(d, agent: str, state: str, timeout: float = 5.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    seen = None
    while time.monotonic() < deadline:
        st = d.status()
        seen = st["agents"].get(agent) if st else None
        if seen == state:
            return
        time.sleep(0.1)
    raise AssertionError(f"agent {agent} is {seen}, not {state}")


async def test_agent_registers_with_digest_and_wrong_password_is_refused(daemon_factory):
    d = daemon_factory(workers=1, start=False)
    acd_config(d, {"strategy": "linear", "members": ["alice"]})
    d.start()
    wait_agent(d, "alice", "logged-out")  # a static member counts once its softphone registers
    phone = await Phone("alice", d.ports.caller(0), d.ports.base + 80).start()
    try:
        bad = await register(phone, d, "alice", "wrong-password")
        assert not bad.registered and bad.code in (401, 403), bad
        good = await register(phone, d, "alice", "alice-secret")
        assert good.registered and good.code == 200, good
        wait_agent(d, "alice", "available")
        phone.send(p.Unregister(reg_id="alice"))
        wait_agent(d, "alice", "logged-out")
    finally:
        await phone.stop()


async def test_caller_hears_hold_music_then_agent_answers_and_they_hear_each_other(daemon_factory, tmp_path: Path):
    d = daemon_factory(workers=1, start=False)
    acd_config(d, {"strategy": "linear", "members": ["alice"], "record": {"template": "{queue}/{call_id}.wav"}})
    d.start()
    write_tone(tmp_path / "caller.wav", CALLER, 30)
    write_tone(tmp_path / "agent.wav", AGENT, 30)
    agent = await Phone("alice", d.ports.caller(0), d.ports.base + 80).start()
    caller = await Phone("4511223344", d.ports.caller(1), d.ports.base + 90).start()
    try:
        assert (await register(agent, d, "alice", "alice-secret")).registered
        wait_agent(d, "alice", "available")
        a = await caller.call(f"sip:500@{d.edge}")
        caller.send(p.RecordStart(rec_id="hold", legs=(a,), path=str(tmp_path / "hold.wav")))
        inc = await agent.wait(p.Incoming, timeout=10)
        await asyncio.sleep(1.5)  # the caller waits a moment with hold music
        caller.send(p.RecordStop(rec_id="hold"))
        agent.send(p.Answer(leg=inc.leg))
        await agent.wait(p.MediaReady, lambda m: m.leg == inc.leg)
        await asyncio.sleep(0.3)
        caller.send(p.Play(leg=a, files=(str(tmp_path / "caller.wav"),), loop=True))
        agent.send(p.Play(leg=inc.leg, files=(str(tmp_path / "agent.wav"),), loop=True))
        caller.send(p.RecordStart(rec_id="talk", legs=(a,), path=str(tmp_path / "caller_heard.wav")))
        agent.send(p.RecordStart(rec_id="talk", legs=(inc.leg,), path=str(tmp_path / "agent_heard.wav")))
        await asyncio.sleep(1.5)
        caller.send(p.RecordStop(rec_id="talk"))
        agent.send(p.RecordStop(rec_id="talk"))
        await caller.wait(p.RecordingDone, lambda m: m.rec_id == "talk")
        await agent.wait(p.RecordingDone, lambda m: m.rec_id == "talk")
        agent.send(p.Hangup(leg=inc.leg))  # the agent ends the call
        await caller.wait(p.CallState, lambda m: m.leg == a and m.state == "disconnected", timeout=5)
        wait_agent(d, "alice", "available")  # free again after the call (no wrap-up)
    finally:
        await caller.stop()
        await agent.stop()
    hold, _ = read_wav(tmp_path / "hold.wav")
    assert has_tone(hold, HOLD, tol=TONES_TOL), dominant_frequencies(hold)
    heard_by_caller, _ = read_wav(tmp_path / "caller_heard.wav")
    heard_by_agent, _ = read_wav(tmp_path / "agent_heard.wav")
    assert has_tone(heard_by_caller, AGENT, tol=TONES_TOL), dominant_frequencies(heard_by_caller)
    assert not has_tone(heard_by_caller, HOLD, tol=TONES_TOL, min_share=0.2)  # the hold music stopped
    assert has_tone(heard_by_agent, CALLER, tol=TONES_TOL), dominant_frequencies(heard_by_agent)
    row = d.wait_calls_ended(1)[0]
    assert row["queue"] == "sales" and row["agent"] == "alice" and row["disposition"] == "completed"
    assert row["hangup_by"] == "agent"
    assert 1.0 <= row["wait_seconds"] <= 4.0 and row["talk_seconds"] >= 1.5
    assert Path(row["recording"]).is_file()
    mixed, _ = read_wav(Path(row["recording"]))
    assert has_tone(mixed, CALLER, tol=TONES_TOL) and has_tone(mixed, AGENT, tol=TONES_TOL)
    con = sqlite3.connect(d.db_path)
    events = [r[0] for r in con.execute("SELECT event FROM queue_log WHERE call_id=? ORDER BY id", (row["call_id"],))]
    con.close()
    assert events == ["ENTERQUEUE", "CONNECT", "COMPLETEAGENT"], events
