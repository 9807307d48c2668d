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


def queue_log(d, call_id: str | None = None) -> list[tuple[str, str, str]]:  # type: ignore[no-untyped-def]
    con = sqlite3.connect(d.db_path)
    try:
        q = "SELECT event, agent, data FROM queue_log" + (" WHERE call_id=?" if call_id else "") + " ORDER BY id"
        return [tuple(r) for r in con.execute(q, (call_id,) if call_id else ())]
    finally:
        con.close()


async def agents_up(d, names: tuple[str, ...]) -> list[Phone]:  # type: ignore[no-untyped-def]
    phones = []
    for i, name in enumerate(names):
        ph = await Phone(name, d.ports.caller(2 + i), d.ports.base + 100 + 16 * i).start()
        assert (await register(ph, d, name, f"{name}-secret")).registered
        phones.append(ph)
    for name in names:
        wait_agent(d, name, "available")
    return phones


async def test_ring_all_first_answer_wins_others_stop_ringing_and_all_are_available_after(daemon_factory):
    d = daemon_factory(workers=1, start=False)
    d.config["workers"]["rtp_ports"] = d.ports.rtp_spare
    acd_config(d, {"strategy": "ring-all", "members": ["alice", "bob", "carol"]}, agents=("alice", "bob", "carol"))
    d.start()
    phones = await agents_up(d, ("alice", "bob", "carol"))
    caller = await Phone("4511223344", d.ports.caller(1), d.ports.base + 90).start()
    try:
        a = await caller.call(f"sip:500@{d.edge}")
        incoming = [await ph.wait(p.Incoming, timeout=10) for ph in phones]
        for name in ("alice", "bob", "carol"):
            wait_agent(d, name, "ringing")
        phones[1].send(p.Answer(leg=incoming[1].leg))  # bob answers
        for ph, inc in ((phones[0], incoming[0]), (phones[2], incoming[2])):
            st = await ph.wait(p.CallState, lambda m, leg=inc.leg: m.leg == leg and m.state == "disconnected", timeout=5)
            assert st.code == 487, st  # cancelled by the edge: the call was completed elsewhere
        wait_agent(d, "bob", "on-call")
        wait_agent(d, "alice", "available")
        wait_agent(d, "carol", "available")
        await caller.hangup(a)
        await phones[1].wait(p.CallState, lambda m: m.leg == incoming[1].leg and m.state == "disconnected")
        wait_agent(d, "bob", "available")
    finally:
        await caller.stop()
        for ph in phones:
            await ph.stop()
    row = d.wait_calls_ended(1)[0]
    assert row["agent"] == "bob" and row["hangup_by"] == "caller"
    log = queue_log(d, row["call_id"])
    assert [e for e, _, _ in log] == ["ENTERQUEUE", "RINGCANCELED", "RINGCANCELED", "CONNECT", "COMPLETECALLER"]
    assert {agent for e, agent, _ in log if e == "RINGCANCELED"} == {"alice", "carol"}


async def test_unanswered_agent_is_ringnoanswer_next_agent_rings_and_auto_pause_applies(daemon_factory):
    d = daemon_factory(workers=1, start=False)
    acd_config(d, {"strategy": "linear", "members": ["alice", "bob"], "ring_timeout": 2, "retry": 0.5,
                   "auto_pause": {"after": 1, "reason": "missed"}}, agents=("alice", "bob"))
    d.start()
    alice, bob = await agents_up(d, ("alice", "bob"))
    caller = await Phone("4511223344", d.ports.caller(1), d.ports.base + 90).start()
    try:
        a = await caller.call(f"sip:500@{d.edge}")
        inc_a = await alice.wait(p.Incoming, timeout=5)  # alice lets it ring
        await alice.wait(p.CallState, lambda m: m.leg == inc_a.leg and m.state == "disconnected", timeout=5)
        inc_b = await bob.wait(p.Incoming, timeout=5)
        bob.send(p.Answer(leg=inc_b.leg))
        await bob.wait(p.CallState, lambda m: m.leg == inc_b.leg and m.state == "confirmed")
        wait_agent(d, "alice", "paused:missed")
        await caller.hangup(a)
        # a supervisor puts alice back, and can pause her with a reason of their own
        import subprocess
        import sys

        cli = [sys.executable, "-m", "ringmaster.cli", "agent"]
        out = subprocess.run(cli + ["alice", "--unpause", "-c", str(d.config_path)], capture_output=True, text=True)
        assert out.returncode == 0 and "available" in out.stdout, out.stdout + out.stderr
        out = subprocess.run(cli + ["alice", "--pause", "lunch", "-c", str(d.config_path)], capture_output=True, text=True)
        assert out.returncode == 0 and "paused:lunch" in out.stdout, out.stdout + out.stderr
        bad = subprocess.run(cli + ["zed", "--unpause", "-c", str(d.config_path)], capture_output=True, text=True)
        assert bad.returncode == 1 and "unknown agent 'zed'" in bad.stderr
    finally:
        await caller.stop()
        await alice.stop()
        await bob.stop()
    row = d.wait_calls_ended(1)[0]
    log = queue_log(d)
    events = [(e, ag) for e, ag, _ in log if e not in ("ADDMEMBER", "REMOVEMEMBER")]
    assert events[:4] == [("ENTERQUEUE", "NONE"), ("RINGNOANSWER", "alice"), ("PAUSE", "alice"), ("CONNECT", "bob")], events
    assert ("UNPAUSE", "alice") in events and events.count(("PAUSE", "alice")) == 2
    ring_ms = int(next(data for e, ag, data in log if e == "RINGNOANSWER"))
    assert 1900 <= ring_ms <= 2600, ring_ms
    assert row["agent"] == "bob"


async def test_max_wait_overflows_to_a_flow_abandon_records_wait_and_exit_key_leads_to_callback(daemon_factory):
    d = daemon_factory(workers=2, start=False)
    acd_config(d, {"strategy": "linear", "members": ["alice"], "max_wait": 2, "overflow": {"flow": "closed"},
                   "exit_key": {"key": "1", "flow": "callback"}})
    d.config["flows"]["closed"] = [{"play": "other"}, "hangup"]
    d.config["flows"]["callback"] = [{"callback": {"queue": "sales"}}, {"play": "other"}, "hangup"]
    d.config["sip"]["trunks"] = {"carrier": {"address": f"127.0.0.1:{d.ports.caller(9)}"}}
    d.config["queues"]["sales"]["callback"] = {"route": "carrier", "caller_id": "4570000000"}
    d.start()  # alice never registers: nobody can answer
    first = await Phone("4500000001", d.ports.caller(1), d.ports.base + 80).start()
    second = await Phone("4500000002", d.ports.caller(2), d.ports.base + 96).start()
    third = await Phone("4500000003", d.ports.caller(3), d.ports.base + 112).start()
    try:
        a = await first.call(f"sip:500@{d.edge}")   # waits out max_wait -> overflow flow -> hung up
        await first.wait(p.CallState, lambda m: m.leg == a and m.state == "disconnected", timeout=8)
        b = await second.call(f"sip:500@{d.edge}")  # gives up after 1 s
        await asyncio.sleep(1.0)
        await second.hangup(b)
        c = await third.call(f"sip:500@{d.edge}")   # presses the exit key
        await asyncio.sleep(0.5)
        third.send(p.SendDtmf(leg=c, digits="1"))
        await third.wait(p.CallState, lambda m: m.leg == c and m.state == "disconnected", timeout=8)
    finally:
        for ph in (first, second, third):
            await ph.stop()
    rows = {r["caller"]: r for r in d.wait_calls_ended(3)}
    log = queue_log(d)
    by_call = {r["caller"]: [(e, data) for e, _, data in queue_log(d, r["call_id"])] for r in rows.values()}
    assert by_call["4500000001"][-1][0] == "EXITWITHTIMEOUT" and by_call["4500000001"][-1][1].endswith("|2")
    assert "closed:0:play" in rows["4500000001"]["ivr_path"]
    ab = by_call["4500000002"][-1]
    assert ab[0] == "ABANDON" and ab[1].split("|")[2] == "1", ab
    assert 0.8 <= rows["4500000002"]["wait_seconds"] <= 1.6  # the call record has the wait too
    # answered by the IVR for hold music but never served: abandoned, not completed
    assert rows["4500000002"]["disposition"] == "abandoned" and rows["4500000002"]["hangup_by"] == "caller"
    assert 1.9 <= rows["4500000001"]["wait_seconds"] <= 2.6
    assert by_call["4500000003"][-2][0] == "EXITWITHKEY" and by_call["4500000003"][-2][1].startswith("1|")
    # the exit key's flow asks for a callback: it enters the queue behind those waiting
    assert by_call["4500000003"][-1][0] == "CALLBACKREQUEST"
    con = sqlite3.connect(d.db_path)
    cb = con.execute("SELECT queue, number FROM callbacks").fetchall()
    con.close()
    assert cb == [("sales", "4500000003")]
    assert len(log) >= 6


async def test_second_caller_in_line_hears_its_position(daemon_factory, tmp_path: Path):
    d = daemon_factory(workers=1, start=False)
    acd_config(d, {"strategy": "linear", "members": ["alice"], "announce": {"every": 5, "wait_time": False}})
    prompts = d.dir / "prompts"
    (prompts / "digits").mkdir(parents=True, exist_ok=True)
    write_tone(prompts / "you-are-caller.wav", 1000, 0.4)
    write_tone(prompts / "digits" / "2.wav", 1600, 0.4)
    write_tone(prompts / "in-line.wav", 1900, 0.4)
    d.start()
    first = await Phone("4500000001", d.ports.caller(1), d.ports.base + 80).start()
    second = await Phone("4500000002", d.ports.caller(2), d.ports.base + 96).start()
    try:
        await first.call(f"sip:500@{d.edge}")
        await asyncio.sleep(0.3)
        b = await second.call(f"sip:500@{d.edge}")
        second.send(p.RecordStart(rec_id="r", legs=(b,), path=str(tmp_path / "second.wav")))
        await asyncio.sleep(6.5)
        second.send(p.RecordStop(rec_id="r"))
        await second.wait(p.RecordingDone)
    finally:
        await first.stop()
        await second.stop()
    from tests.helpers.audio import tone_sequence

    samples, _ = read_wav(tmp_path / "second.wav")
    heard = [n for n, _ in tone_sequence(samples, {"hold": HOLD, "you": 1000, "two": 1600, "inline": 1900})]
    assert heard == ["hold", "you", "two", "inline", "hold"], heard


async def test_recording_pause_leaves_a_silent_stretch_and_resume_records_again(daemon_factory, tmp_path: Path):
    import subprocess
    import sys

    import numpy as np

    d = daemon_factory(workers=1, start=False)
    acd_config(d, {"strategy": "linear", "members": ["alice"], "record": {"template": "{call_id}.wav"}})
    d.start()
    write_tone(tmp_path / "caller.wav", CALLER, 30)
    (agent,) = await agents_up(d, ("alice",))
    caller = await Phone("4511223344", d.ports.caller(1), d.ports.base + 90).start()
    cli = [sys.executable, "-m", "ringmaster.cli", "recording"]
    try:
        a = await caller.call(f"sip:500@{d.edge}")
        inc = await agent.wait(p.Incoming, timeout=5)
        agent.send(p.Answer(leg=inc.leg))
        await agent.wait(p.MediaReady, lambda m: m.leg == inc.leg)
        caller.send(p.Play(leg=a, files=(str(tmp_path / "caller.wav"),), loop=True))
        await asyncio.sleep(1.5)
        call_id = d.status()["calls"]["ids"][0]
        # the pause starts while the first command runs and ends while the second one runs:
        # each CLI process takes its own start-up time (more on a loaded machine)
        pause_sent = time.monotonic()
        out = subprocess.run(cli + [call_id, "--pause", "-c", str(d.config_path)], capture_output=True, text=True)
        pause_done = time.monotonic()
        assert out.returncode == 0 and "paused" in out.stdout, out.stderr
        await asyncio.sleep(1.5)  # "my card number is ..."
        resume_sent = time.monotonic()
        out = subprocess.run(cli + [call_id, "--resume", "-c", str(d.config_path)], capture_output=True, text=True)
        resume_done = time.monotonic()
        assert out.returncode == 0, out.stderr
        await asyncio.sleep(1.5)
        bad = subprocess.run(cli + ["nosuchcall", "--pause", "-c", str(d.config_path)], capture_output=True, text=True)
        assert bad.returncode == 1 and "no live call" in bad.stderr
        await caller.hangup(a)
    finally:
        await caller.stop()
        await agent.stop()
    row = d.wait_calls_ended(1)[0]
    samples, rate = read_wav(Path(row["recording"]))
    win = rate // 10
    loud = [float(np.sqrt(np.mean(samples[i:i + win].astype(float) ** 2))) > 300 for i in range(0, len(samples) - win, win)]
    # sound, then a silent stretch of about the paused 1.5 s, then sound again
    runs: list[tuple[bool, int]] = []
    for x in loud:
        if runs and runs[-1][0] == x:
            runs[-1] = (x, runs[-1][1] + 1)
        else:
            runs.append((x, 1))
    silent_gaps = [n for x, n in runs if not x and n >= 5]
    shortest, longest = (resume_sent - pause_done) * 10, (resume_done - pause_sent) * 10  # in 100 ms windows
    assert len(silent_gaps) == 1 and shortest - 3 <= silent_gaps[0] <= longest + 3, (runs, shortest, longest)
    assert runs[0][0] or runs[1][0]  # recorded before the pause
    assert any(x and n >= 8 for x, n in runs[runs.index((False, silent_gaps[0])) + 1:]), runs  # and after it


async def test_agent_in_two_queues_never_gets_two_calls_and_wrapup_is_the_calls_queues(daemon_factory):
    d = daemon_factory(workers=2, start=False)
    acd_config(d, {"strategy": "linear", "members": ["alice"], "wrapup": 2})
    d.config["queues"]["support"] = {"moh": "hold", "strategy": "linear", "members": ["alice"], "wrapup": 6}
    d.config["flows"]["support"] = [{"queue": "support"}, "hangup"]
    d.config["entry_points"].append({"number": "600", "flow": "support"})
    d.start()
    (alice,) = await agents_up(d, ("alice",))
    c1 = await Phone("4500000001", d.ports.caller(1), d.ports.base + 80).start()
    c2 = await Phone("4500000002", d.ports.caller(0), d.ports.base + 96).start()
    loop = asyncio.get_running_loop()
    try:
        a1 = await c1.call(f"sip:500@{d.edge}")   # sales
        a2 = await c2.call(f"sip:600@{d.edge}")   # support, both wait for alice
        first = await alice.wait(p.Incoming, timeout=5)
        alice.send(p.Answer(leg=first.leg))
        await alice.wait(p.CallState, lambda m: m.leg == first.leg and m.state == "confirmed")
        await asyncio.sleep(2.0)
        assert sum(isinstance(m, p.Incoming) for m in alice.events) == 1  # no second offer while talking
        assert d.status()["queues"]["support"]["waiting"] == 1
        await c1.hangup(a1)
        ended = loop.time()
        mark = len(alice.events)
        second = await alice.wait(p.Incoming, timeout=8, after=mark)
        offered_after = loop.time() - ended
        assert 1.8 <= offered_after <= 4.0, offered_after  # sales' 2 s wrap-up, not support's 6 s
        alice.send(p.Answer(leg=second.leg))
        await alice.wait(p.CallState, lambda m: m.leg == second.leg and m.state == "confirmed")
        await asyncio.sleep(0.3)  # they talk: a hang-up crossing the answer is an abandon
        await c2.hangup(a2)
    finally:
        await c1.stop()
        await c2.stop()
        await alice.stop()
    rows = {r["called"]: r for r in d.wait_calls_ended(2)}
    assert rows["500"]["agent"] == "alice" and rows["600"]["agent"] == "alice"
    assert rows["600"]["wait_seconds"] >= 3.8


async def test_mobile_agent_is_reached_through_the_trunk(daemon_factory, tmp_path: Path):
    import subprocess

    d = daemon_factory(workers=1, start=False)
    trunk_port = d.ports.caller(5)
    d.config["sip"]["mobile_trunk"] = f"127.0.0.1:{trunk_port}"
    write_tone(d.dir / "prompts" / "hold.wav", HOLD, 3.0)
    d.config["agents"] = {"bob": {"mobile": "+4512345678"}}
    d.config["queues"] = {"sales": {"moh": "hold", "strategy": "linear", "members": ["bob"]}}
    d.config["flows"]["main"] = [{"queue": "sales"}, "hangup"]
    d.config["entry_points"].append({"number": "500", "flow": "main"})
    d.start()
    # the mobile carrier: a SIPp UAS that answers and waits for the BYE
    uas = subprocess.Popen(["sipp", "-sn", "uas", "-i", "127.0.0.1", "-p", str(trunk_port), "-m", "1",
                            "-timeout", "20s", "-nostdin", "-trace_msg", "-fd", "1"],
                           cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    caller = await Phone("4511223344", d.ports.caller(1), d.ports.base + 90).start()
    try:
        await asyncio.sleep(0.3)
        a = await caller.call(f"sip:500@{d.edge}")
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and (d.status() or {}).get("agents", {}).get("bob") != "on-call":
            await asyncio.sleep(0.1)
        assert d.status()["agents"]["bob"] == "on-call"
        await asyncio.sleep(0.5)
        await caller.hangup(a)
    finally:
        await caller.stop()
    out, _ = uas.communicate(timeout=30)
    assert uas.returncode == 0, out[-2000:]
    msgs = (next(tmp_path.glob("*_messages.log"))).read_text()
    assert "INVITE sip:+4512345678@" in msgs and "BYE sip:" in msgs
    row = d.wait_calls_ended(1)[0]
    assert row["agent"] == "bob"
    assert [e for e, _, _ in queue_log(d, row["call_id"])] == ["ENTERQUEUE", "CONNECT", "COMPLETECALLER"]


async def test_press_1_in_the_menu_reaches_the_sales_queue_and_an_agent(daemon_factory):
    import json

    d = daemon_factory(workers=1, start=False)
    acd_config(d, {"strategy": "linear", "members": ["alice"]})
    write_tone(d.dir / "prompts" / "menu.wav", 500, 2.0)
    d.config["flows"]["main"] = [
        {"id": "top", "menu": {"greeting": "menu", "options": {1: "sales"}, "invalid_prompt": "menu",
                               "timeout_prompt": "menu"}},
        {"id": "sales", "queue": {"name": "sales", "priority": 3}}, "hangup"]
    d.start()
    (alice,) = await agents_up(d, ("alice",))
    caller = await Phone("4511223344", d.ports.caller(1), d.ports.base + 90).start()
    try:
        a = await caller.call(f"sip:500@{d.edge}")
        await asyncio.sleep(0.5)
        caller.send(p.SendDtmf(leg=a, digits="1"))
        inc = await alice.wait(p.Incoming, timeout=5)
        headers = dict(inc.headers)
        assert headers.get("X-Ringmaster-Queue") == "sales"  # for the agent's screen
        assert headers.get("X-Ringmaster-Var-menu_top") == "1" and headers.get("X-Ringmaster-Var-caller") == "4511223344"
        alice.send(p.Answer(leg=inc.leg))
        await alice.wait(p.CallState, lambda m: m.leg == inc.leg and m.state == "confirmed")
        await asyncio.sleep(0.3)  # they talk: a hang-up crossing the answer is an abandon
        await caller.hangup(a)
    finally:
        await caller.stop()
        await alice.stop()
    row = d.wait_calls_ended(1)[0]
    assert row["queue"] == "sales" and row["agent"] == "alice"
    assert json.loads(row["ivr_path"])[:2] == ["main:top:menu", "main:sales:queue"]
    assert json.loads(row["variables"])["menu_top"] == "1"


async def _answer_rounds(d, caller: Phone, agents: dict[str, Phone], calls: int) -> list[str]:  # type: ignore[no-untyped-def]
    """Place calls one after another; whichever agent rings answers; return who answered."""
    order = []
    for _ in range(calls):
        marks = {n: len(ph.events) for n, ph in agents.items()}
        a = await caller.call(f"sip:500@{d.edge}")
        deadline = asyncio.get_running_loop().time() + 5
        rung = None
        while rung is None and asyncio.get_running_loop().time() < deadline:
            for n, ph in agents.items():
                if any(isinstance(m, p.Incoming) for m in ph.events[marks[n]:]):
                    rung = n
            await asyncio.sleep(0.02)
        assert rung is not None, "no agent rang"
        ph = agents[rung]
        inc = next(m for m in ph.events[marks[rung]:] if isinstance(m, p.Incoming))
        ph.send(p.Answer(leg=inc.leg))
        await ph.wait(p.CallState, lambda m, leg=inc.leg: m.leg == leg and m.state == "confirmed", after=marks[rung])
        await asyncio.sleep(0.2)  # they talk: a hang-up crossing the answer is an abandon
        await caller.hangup(a)
        await ph.wait(p.CallState, lambda m, leg=inc.leg: m.leg == leg and m.state == "disconnected", after=marks[rung])
        wait_agent(d, rung, "available")
        order.append(rung)
    return order


async def test_round_robin_rotates_over_six_real_calls(daemon_factory):
    d = daemon_factory(workers=1, start=False)
    d.config["workers"]["rtp_ports"] = d.ports.rtp_spare
    acd_config(d, {"strategy": "round-robin", "members": ["alice", "bob", "carol"]}, agents=("alice", "bob", "carol"))
    d.start()
    phones = await agents_up(d, ("alice", "bob", "carol"))
    caller = await Phone("4511223344", d.ports.caller(1), d.ports.base + 90).start()
    try:
        order = await _answer_rounds(d, caller, dict(zip(("alice", "bob", "carol"), phones, strict=True)), 6)
    finally:
        await caller.stop()
        for ph in phones:
            await ph.stop()
    assert order == ["alice", "bob", "carol", "alice", "bob", "carol"], order


async def test_longest_idle_agent_answers_first_and_a_later_tier_rings_after_its_wait(daemon_factory):
    d = daemon_factory(workers=1, start=False)
    acd_config(d, {"strategy": "longest-idle", "tier_wait": 2,
                   "members": ["alice", "bob", {"agent": "carol", "tier": 2}]}, agents=("alice", "bob", "carol"))
    d.start()
    phones = await agents_up(d, ("alice", "bob"))   # alice has been idle longest
    caller = await Phone("4511223344", d.ports.caller(1), d.ports.base + 90).start()
    try:
        order = await _answer_rounds(d, caller, dict(zip(("alice", "bob"), phones, strict=True)), 2)
        assert order == ["alice", "bob"], order  # after her call, alice is the one idle the shortest
        for ph in phones:
            ph.send(p.Unregister(reg_id=ph.spec.name))  # tier 1 leaves
        wait_agent(d, "alice", "logged-out")
        wait_agent(d, "bob", "logged-out")
        carol = await Phone("carol", d.ports.caller(6), d.ports.base + 140).start()
        phones.append(carol)
        assert (await register(carol, d, "carol", "carol-secret")).registered
        loop = asyncio.get_running_loop()
        a = await caller.call(f"sip:500@{d.edge}")
        t0 = loop.time()
        await carol.wait(p.Incoming, timeout=5)
        waited = loop.time() - t0
        assert 1.8 <= waited <= 3.0, waited  # tier 2 only after tier_wait (2 s) of waiting
        await caller.hangup(a)
    finally:
        await caller.stop()
        for ph in phones:
            await ph.stop()
