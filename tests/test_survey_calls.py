"""After-call survey (issue 11 item 6): a queue's `continue_on_agent_hangup: FLOW` (Asterisk's
Queue option c) sends the caller on to a flow when the agent hangs up, instead of hanging up;
the survey's digits land in the call record (variables, DIGITS events) and `ringmaster calls`
shows them. With direct media the caller's media, away at the agent, is taken back first."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from ringmaster import protocol as p
from tests.helpers.audio import TONES_TOL, dominant_frequencies, has_tone, read_wav, write_tone
from tests.helpers.phone import Phone
from tests.test_acd_calls import acd_config, register, wait_agent
from tests.test_leg_slots import wait_slots_free

SURVEY = 1850.0  # "rate the call from 1 to 5"


def _survey_config(d) -> None:  # type: ignore[no-untyped-def]
    acd_config(d, {"strategy": "linear", "members": ["alice"], "continue_on_agent_hangup": "survey"})
    write_tone(d.dir / "prompts" / "rate-us.wav", SURVEY, 2.0)
    d.config["flows"]["survey"] = [
        {"collect": {"var": "rating", "prompt": "rate-us", "min": 1, "max": 1, "timeout": 6,
                     "invalid_prompt": "rate-us"}},
        {"set": {"survey": "done"}},
        "hangup",
    ]


@pytest.mark.parametrize("direct_media", [False, True])
async def test_caller_rates_the_call_after_the_agent_hangs_up(daemon_factory, tmp_path: Path, direct_media: bool):
    d = daemon_factory(workers=1, start=False)
    _survey_config(d)
    d.config["sip"]["direct_media"] = direct_media
    d.start()
    agent = await Phone("alice", d.ports.caller(0), d.ports.base + 80).start()
    caller = await Phone("4511223344", d.ports.caller(1), d.ports.base + 90).start()
    try:
        assert (await register(agent, d, "alice", "alice-secret")).registered
        wait_agent(d, "alice", "available")
        a = await caller.call(f"sip:500@{d.edge}")
        b = await agent.answer_next()
        if direct_media:
            await asyncio.to_thread(d.wait_event, "call.media_direct", 1, 10.0)
        await asyncio.sleep(1.0)
        await agent.hangup(b)
        await asyncio.to_thread(d.wait_event, "call.continue_after_agent", 1, 10.0)
        caller.send(p.RecordStart(rec_id="survey", legs=(a,), path=str(tmp_path / "survey.wav")))
        await asyncio.sleep(1.2)
        caller.send(p.RecordStop(rec_id="survey"))
        await caller.wait(p.RecordingDone, lambda m: m.rec_id == "survey")
        heard, _ = read_wav(tmp_path / "survey.wav")
        assert has_tone(heard, SURVEY, tol=TONES_TOL), dominant_frequencies(heard)
        caller.send(p.SendDtmf(leg=a, digits="4"))
        # the flow hangs up after the answer: the caller's leg ends from the server's side
        await caller.wait(p.CallState, lambda m: m.leg == a and m.state == "disconnected", timeout=10)
    finally:
        await caller.stop()
        await agent.stop()
    row = d.wait_calls_ended(1)[0]
    assert row["agent"] == "alice" and row["talk_seconds"] >= 0.8 and row["disposition"] == "completed"
    assert row["hangup_by"] == "ringmaster"  # the survey flow's hangup, not the agent's
    variables = json.loads(row["variables"])
    assert variables["rating"] == "4" and variables["survey"] == "done"
    con = sqlite3.connect(d.db_path)
    try:
        events = [(e, json.loads(data)) for e, data in con.execute(
            "SELECT event, data FROM call_events WHERE call_id=? ORDER BY id", (row["call_id"],))]
        qlog = [r[0] for r in con.execute("SELECT event FROM queue_log WHERE call_id=? ORDER BY id", (row["call_id"],))]
    finally:
        con.close()
    assert ("CONTINUE", {"flow": "survey", "after": "agent_hangup"}) in events
    assert ("DIGITS", {"digits": "4", "reason": "max_digits"}) in events
    assert qlog[-1] == "COMPLETEAGENT"  # the queue's part ended with the agent
    out = subprocess.run([sys.executable, "-m", "ringmaster.cli", "calls", "--since", "1h", "-c", str(d.config_path)],
                         capture_output=True, text=True, timeout=20)
    assert out.returncode == 0, out.stderr
    assert "rating=4" in out.stdout and "survey=done" in out.stdout, out.stdout
    wait_slots_free(d, timeout=5)


def test_a_survey_flow_that_does_not_exist_is_an_error_with_its_place(tmp_path: Path):
    cfg = tmp_path / "bad.yaml"
    cfg.write_text("agents:\n  alice:\n    softphone: {username: alice, password: alice-secret}\n"
                   "queues:\n  sales:\n    members: [alice]\n    continue_on_agent_hangup: survy\n"
                   "flows:\n  survey:\n    - hangup\n")
    out = subprocess.run([sys.executable, "-m", "ringmaster.cli", "check", str(cfg)], capture_output=True, text=True,
                         timeout=20)
    assert out.returncode != 0
    text = out.stdout + out.stderr
    assert f"{cfg}:7:" in text and "unknown flow 'survy'" in text and "survey" in text, text
