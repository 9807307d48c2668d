"""Hold and resume from a party's phone (RFC 3264 8.4; issue 11 item 3).

An agent's pjsua2 phone re-INVITEs with sendonly or inactive: the caller hears the queue's hold
music (and not the agent), the stretch is stored as hold time (call record, call events,
queue_log HOLD/UNHOLD, `ringmaster stats`), and on resume (sendrecv) the two hear each other
again; with direct media the bridge goes direct again. The SDP reading (sendonly, inactive,
c=0.0.0.0) is checked on its own too."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from ringmaster import protocol as p
from ringmaster.worker.directmedia import offer_direction, puts_on_hold
from tests.helpers.audio import TONES_TOL, dominant_frequencies, has_tone, read_wav, rms, write_tone
from tests.helpers.phone import Phone
from tests.test_acd_calls import HOLD, acd_config, register, wait_agent
from tests.test_leg_slots import wait_slots_free

CALLER, AGENT = 700.0, 1300.0

SDP = ("v=0\r\no=- 1 2 IN IP4 192.0.2.7\r\ns=-\r\n{session}t=0 0\r\n"
       "m=audio 4000 RTP/AVP 0\r\n{media}a=rtpmap:0 PCMU/8000\r\n")


@pytest.mark.parametrize(("session", "media", "direction"), [
    ("c=IN IP4 192.0.2.7\r\n", "", "sendrecv"),
    ("c=IN IP4 192.0.2.7\r\n", "a=sendonly\r\n", "sendonly"),
    ("c=IN IP4 192.0.2.7\r\na=inactive\r\n", "", "inactive"),  # session-level attribute
    ("c=IN IP4 192.0.2.7\r\na=inactive\r\n", "a=sendrecv\r\n", "sendrecv"),  # the stream's wins
    ("c=IN IP4 0.0.0.0\r\n", "", "inactive"),  # RFC 2543 hold
    ("", "c=IN IP4 0.0.0.0\r\na=sendonly\r\n", "sendonly"),
    ("c=IN IP4 192.0.2.7\r\n", "a=recvonly\r\n", "recvonly"),
])
def test_an_offer_holds_when_sendonly_inactive_or_addressed_to_0_0_0_0(session: str, media: str,
                                                                       direction: str) -> None:
    sdp = SDP.format(session=session, media=media)
    assert offer_direction(sdp) == direction
    assert puts_on_hold(direction) == (direction in ("sendonly", "inactive"))


def test_an_sdp_without_audio_says_nothing_about_hold() -> None:
    assert offer_direction("v=0\r\no=- 1 2 IN IP4 0.0.0.0\r\ns=-\r\nc=IN IP4 0.0.0.0\r\nt=0 0\r\n") == ""
    assert not puts_on_hold("")


async def _heard(phone: Phone, leg: str, path: Path, seconds: float = 1.5) -> Any:
    rec_id = path.stem
    phone.send(p.RecordStart(rec_id=rec_id, legs=(leg,), path=str(path)))
    await asyncio.sleep(seconds)
    phone.send(p.RecordStop(rec_id=rec_id))
    await phone.wait(p.RecordingDone, lambda m: m.rec_id == rec_id)
    return read_wav(path)[0]


def _stats(d) -> dict[str, Any]:  # type: ignore[no-untyped-def]
    out = subprocess.run([sys.executable, "-m", "ringmaster.cli", "stats", "--since", "1h", "--format", "json",
                          "-c", str(d.config_path)], capture_output=True, text=True, timeout=20)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


@pytest.mark.parametrize(("direct_media", "direction"), [(False, "sendonly"), (True, "inactive"), (True, "sendonly")])
async def test_agent_holds_caller_hears_hold_music_then_both_talk_again(daemon_factory, tmp_path: Path,
                                                                       direct_media: bool, direction: str):
    d = daemon_factory(workers=1, start=False)
    acd_config(d, {"strategy": "linear", "members": ["alice"]})
    d.config["sip"]["direct_media"] = direct_media
    d.start()
    write_tone(tmp_path / "caller.wav", CALLER, 30)
    write_tone(tmp_path / "agent.wav", AGENT, 30)
    agent = await Phone("alice", d.ports.caller(0), d.ports.base + 80).start()
    caller = await Phone("4511223344", d.ports.caller(1), d.ports.base + 90).start()
    try:
        assert (await register(agent, d, "alice", "alice-secret")).registered
        wait_agent(d, "alice", "available")
        a = await caller.call(f"sip:500@{d.edge}")
        b = await agent.answer_next()
        if direct_media:
            await asyncio.to_thread(d.wait_event, "call.media_direct", 1, 10.0)
        caller.send(p.Play(leg=a, files=(str(tmp_path / "caller.wav"),), loop=True))
        agent.send(p.Play(leg=b, files=(str(tmp_path / "agent.wav"),), loop=True))
        await asyncio.sleep(0.5)

        agent.send(p.Hold(leg=b, direction=direction))
        await asyncio.to_thread(d.wait_event, "call.hold", 1, 10.0)
        await asyncio.sleep(0.8)  # hold music starts (with direct media: after the media came back)
        on_hold = await _heard(caller, a, tmp_path / "caller_on_hold.wav")
        assert has_tone(on_hold, HOLD, tol=TONES_TOL), dominant_frequencies(on_hold)
        assert not has_tone(on_hold, AGENT, tol=TONES_TOL), dominant_frequencies(on_hold)

        agent.send(p.Hold(leg=b, direction="sendrecv"))
        await asyncio.to_thread(d.wait_event, "call.unhold", 1, 10.0)
        if direct_media:
            await asyncio.to_thread(d.wait_event, "call.media_direct", 2, 10.0)
        await asyncio.sleep(0.8)
        caller_after = await _heard(caller, a, tmp_path / "caller_after.wav")
        agent_after = await _heard(agent, b, tmp_path / "agent_after.wav")
        assert has_tone(caller_after, AGENT, tol=TONES_TOL), (dominant_frequencies(caller_after), dominant_frequencies(agent_after))
        assert not has_tone(caller_after, HOLD, tol=TONES_TOL), dominant_frequencies(caller_after)
        assert has_tone(agent_after, CALLER, tol=TONES_TOL), dominant_frequencies(agent_after)

        caller.send(p.Hangup(leg=a))
        await agent.wait(p.CallState, lambda m: m.leg == b and m.state == "disconnected", timeout=8)
    finally:
        await caller.stop()
        await agent.stop()

    row = d.wait_calls_ended(1)[0]
    hold = d.events("call.unhold")[0]
    assert row["holds"] == 1 and row["disposition"] == "completed" and row["agent"] == "alice"
    assert 2.0 <= row["hold_seconds"] < 6.0 and abs(row["hold_seconds"] - hold["seconds"]) < 0.01, row
    con = sqlite3.connect(d.db_path)
    try:
        events = [(e, json.loads(data)) for e, data in con.execute(
            "SELECT event, data FROM call_events WHERE call_id=? AND event IN ('HOLD','UNHOLD') ORDER BY id",
            (row["call_id"],))]
        qlog = [tuple(r) for r in con.execute(
            "SELECT queue, agent, event, data FROM queue_log WHERE call_id=? AND event IN ('HOLD','UNHOLD') ORDER BY id",
            (row["call_id"],))]
    finally:
        con.close()
    assert [e for e, _ in events] == ["HOLD", "UNHOLD"]
    assert events[0][1]["party"] == "agent" and events[0][1]["direction"] == direction
    assert events[0][1]["recording_offset"] is None  # not recorded
    assert qlog == [("sales", "alice", "HOLD", "agent"),
                    ("sales", "alice", "UNHOLD", f"{round(row['hold_seconds'])}|agent")]
    stats = _stats(d)
    q = next(s for s in stats["queues"] if s["queue"] == "sales")
    ag = next(s for s in stats["agents"] if s["agent"] == "alice")
    assert (q["holds"], q["hold_seconds"], q["avg_hold"]) == (1, round(row["hold_seconds"]), float(round(row["hold_seconds"])))
    assert (ag["holds"], ag["avg_hold"]) == (1, q["avg_hold"])
    if direct_media:
        # direct, taken back for the hold music, direct again after the resume
        assert d.status()["calls"]["media_paths"] == {"direct": 2, "anchored": 1}
    wait_slots_free(d, timeout=5)


async def test_caller_holds_a_recorded_call_agent_hears_music_and_the_recording_marks_a_silent_stretch(
        daemon_factory, tmp_path: Path):
    d = daemon_factory(workers=1, start=False)
    acd_config(d, {"strategy": "linear", "members": ["alice"], "record": {"template": "{queue}/{call_id}.wav"}})
    d.config["sip"]["direct_media"] = True  # a recorded bridge keeps its media in the worker anyway
    d.start()
    write_tone(tmp_path / "caller.wav", CALLER, 30)
    write_tone(tmp_path / "agent.wav", AGENT, 30)
    agent = await Phone("alice", d.ports.caller(0), d.ports.base + 80).start()
    caller = await Phone("4511223344", d.ports.caller(1), d.ports.base + 90).start()
    try:
        assert (await register(agent, d, "alice", "alice-secret")).registered
        wait_agent(d, "alice", "available")
        a = await caller.call(f"sip:500@{d.edge}")
        b = await agent.answer_next()
        caller.send(p.Play(leg=a, files=(str(tmp_path / "caller.wav"),), loop=True))
        agent.send(p.Play(leg=b, files=(str(tmp_path / "agent.wav"),), loop=True))
        await asyncio.sleep(1.5)
        caller.send(p.Hold(leg=a, direction="sendonly"))
        await asyncio.to_thread(d.wait_event, "call.hold", 1, 10.0)
        await asyncio.sleep(0.5)
        on_hold = await _heard(agent, b, tmp_path / "agent_on_hold.wav", 2.0)
        assert has_tone(on_hold, HOLD, tol=TONES_TOL), dominant_frequencies(on_hold)
        assert not has_tone(on_hold, CALLER, tol=TONES_TOL), dominant_frequencies(on_hold)
        caller.send(p.Hold(leg=a, direction="sendrecv"))
        await asyncio.to_thread(d.wait_event, "call.unhold", 1, 10.0)
        await asyncio.sleep(0.5)
        agent_after = await _heard(agent, b, tmp_path / "agent_after.wav")
        assert has_tone(agent_after, CALLER, tol=TONES_TOL), dominant_frequencies(agent_after)
        await asyncio.sleep(1.0)
        agent.send(p.Hangup(leg=b))  # the agent ends it: COMPLETEAGENT
        await caller.wait(p.CallState, lambda m: m.leg == a and m.state == "disconnected", timeout=8)
    finally:
        await caller.stop()
        await agent.stop()
    row = d.wait_calls_ended(1)[0]
    assert row["holds"] == 1 and row["hangup_by"] == "agent"
    con = sqlite3.connect(d.db_path)
    try:
        marks = [(e, json.loads(data)) for e, data in con.execute(
            "SELECT event, data FROM call_events WHERE call_id=? AND event IN ('HOLD','UNHOLD') ORDER BY id",
            (row["call_id"],))]
        qlog = [r[0] for r in con.execute("SELECT event FROM queue_log WHERE call_id=? ORDER BY id", (row["call_id"],))]
    finally:
        con.close()
    assert [(e, m["party"]) for e, m in marks] == [("HOLD", "caller"), ("UNHOLD", "caller")]
    start, end = marks[0][1]["recording_offset"], marks[1][1]["recording_offset"]
    assert 1.0 < start < end and abs((end - start) - row["hold_seconds"]) < 0.05
    assert qlog[-3:] == ["HOLD", "UNHOLD", "COMPLETEAGENT"]
    mixed, rate = read_wav(Path(row["recording"]))
    before = mixed[int(0.3 * rate):int((start - 0.2) * rate)]
    during = mixed[int((start + 0.3) * rate):int((end - 0.3) * rate)]
    after = mixed[int((end + 0.5) * rate):]
    assert has_tone(before, CALLER, tol=TONES_TOL) and has_tone(before, AGENT, tol=TONES_TOL)
    # paused on hold: the stretch is in the file (the timeline keeps its length) and silent
    assert len(during) > rate and rms(during) < 50, rms(during)
    assert has_tone(after, CALLER, tol=TONES_TOL) and has_tone(after, AGENT, tol=TONES_TOL)
    wait_slots_free(d, timeout=5)


def test_stats_average_hold_per_stretch_by_queue_and_agent() -> None:
    from ringmaster.reports.stats import compute

    events = [
        (10.0, "c1", "sales", "alice", "CONNECT", "3|c1|1"),
        (20.0, "c1", "sales", "alice", "HOLD", "agent"),
        (30.0, "c1", "sales", "alice", "UNHOLD", "10|agent"),
        (40.0, "c1", "sales", "alice", "HOLD", "caller"),
        (44.0, "c1", "sales", "alice", "UNHOLD", "4|caller"),
        (50.0, "c2", "sales", "bob", "HOLD", "agent"),  # still on hold at the interval's end
        (60.0, "c3", "support", "bob", "UNHOLD", "7|agent"),
    ]
    queues, agents = compute(events, 0.0, 100.0, {}, {})
    q = {s.queue: s for s in queues}
    a = {s.agent: s for s in agents}
    assert (q["sales"].holds, q["sales"].hold_seconds, q["sales"].avg_hold) == (2, 14, 7.0)
    assert (q["support"].holds, q["support"].avg_hold) == (1, 7.0)
    assert (a["alice"].holds, a["alice"].avg_hold) == (2, 7.0)
    assert (a["bob"].holds, a["bob"].hold_seconds) == (1, 7)


async def test_a_store_from_before_hold_time_gets_its_columns(tmp_path: Path) -> None:
    from ringmaster.store import MIGRATIONS, Store

    db = tmp_path / "v8.db"
    old = sqlite3.connect(db)
    for sql in MIGRATIONS[:8]:
        old.executescript(sql)
    old.execute("PRAGMA user_version=8")
    old.commit()
    old.close()
    store = Store(db)
    await store.open()
    await store.close()
    con = sqlite3.connect(db)
    try:
        cols = {r[1] for r in con.execute("PRAGMA table_info(calls)")}
        assert con.execute("PRAGMA user_version").fetchone()[0] == len(MIGRATIONS)
    finally:
        con.close()
    assert {"hold_seconds", "holds"} <= cols
