"""IVR menus with real calls: a pjsua2 test phone dials the edge, presses keys by RFC 4733,
and records what it hears; every prompt is a pure tone, so the order of tones heard proves
the path the caller took through the plan."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

from ringmaster import protocol as p
from tests.helpers.audio import read_wav, tone_sequence, write_tone
from tests.helpers.phone import Phone

TONES = {"menu": 500, "short": 560, "invalid": 700, "timeout": 800, "sales": 900, "closed": 1100, "bye": 1200,
         "vip": 1300, "leave": 1400, "account": 1500, "caller_voice": 1700, "support": 1900}


def ivr_config(d, flows: dict[str, Any], entry: str = "main", **extra: Any) -> None:  # type: ignore[no-untyped-def]
    prompts = d.dir / "prompts"
    for name, freq in TONES.items():
        write_tone(prompts / f"{name}.wav", freq, 2.5 if name == "menu" else 0.6)
    d.config["flows"] = flows
    d.config["entry_points"] = [{"number": "100", "flow": entry}]
    d.config.update(extra)


MENU = {"greeting": "menu", "short_greeting": "short", "options": {1: "sales"}, "timeout": 2.0,
        "max_failures": 2, "max_timeouts": 2, "on_max_failures": "bye", "on_max_timeouts": "closed"}
MAIN = {"main": [{"id": "top", "menu": MENU},
                 {"id": "sales", "play": "sales"}, "hangup",
                 {"id": "bye", "play": "bye"}, "hangup",
                 {"id": "closed", "play": "closed"}, "hangup"]}


async def call_and_listen(d, phone: Phone, script: list[tuple[float, str]], number: str = "100",  # type: ignore[no-untyped-def]
                          timeout: float = 20.0) -> list[str]:
    """Dial, record what is heard, press keys at the given times; return the tones heard."""
    leg = await phone.call(f"sip:{number}@{d.edge}")
    heard = d.dir / f"heard-{leg}.wav"
    phone.send(p.RecordStart(rec_id=leg, legs=(leg,), path=str(heard)))
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    for at, digits in script:
        await asyncio.sleep(max(0.0, t0 + at - loop.time()))
        phone.send(p.SendDtmf(leg=leg, digits=digits))
    await phone.wait(p.CallState, lambda m: m.leg == leg and m.state == "disconnected", timeout=timeout)
    phone.send(p.RecordStop(rec_id=leg))
    await phone.wait(p.RecordingDone, lambda m: m.rec_id == leg)
    samples, _ = read_wav(heard)
    return [name for name, _ in tone_sequence(samples, TONES)]


async def test_press_9_hears_invalid_then_menu_again_then_press_1_reaches_sales(daemon_factory):
    d = daemon_factory(workers=1, start=False)
    ivr_config(d, MAIN)
    d.start()
    phone = await Phone("caller", d.ports.caller(0), d.ports.base + 80).start()
    try:
        heard = await call_and_listen(d, phone, [(3.0, "9"), (5.0, "1")])
    finally:
        await phone.stop()
    assert heard == ["menu", "invalid", "short", "sales"], heard
    row = d.wait_calls_ended(1)[0]
    assert json.loads(row["ivr_path"]) == ["main:top:menu", "main:sales:play", "main:2:hangup"]
    assert json.loads(row["variables"])["menu_top"] == "1"


async def test_max_failures_takes_the_configured_action(daemon_factory):
    d = daemon_factory(workers=1, start=False)
    ivr_config(d, MAIN)
    d.start()
    phone = await Phone("caller", d.ports.caller(0), d.ports.base + 80).start()
    try:
        heard = await call_and_listen(d, phone, [(3.0, "9"), (5.0, "8")])
    finally:
        await phone.stop()
    assert heard == ["menu", "invalid", "short", "bye"], heard


async def test_no_input_hears_timeout_prompt_and_after_max_timeouts_the_configured_action(daemon_factory):
    d = daemon_factory(workers=1, start=False)
    ivr_config(d, MAIN)
    d.start()
    phone = await Phone("caller", d.ports.caller(0), d.ports.base + 80).start()
    try:
        heard = await call_and_listen(d, phone, [])
    finally:
        await phone.stop()
    assert heard == ["menu", "timeout", "short", "closed"], heard


async def test_digit_during_greeting_stops_it_and_counts(daemon_factory):
    d = daemon_factory(workers=1, start=False)
    ivr_config(d, MAIN)
    d.start()
    phone = await Phone("caller", d.ports.caller(0), d.ports.base + 80).start()
    try:
        leg_heard = await call_and_listen(d, phone, [(0.8, "1")])
    finally:
        await phone.stop()
    assert leg_heard == ["menu", "sales"], leg_heard
    samples, _ = read_wav(next(d.dir.glob("heard-*.wav")))
    menu_seconds = dict(tone_sequence(samples, TONES))["menu"]
    assert menu_seconds < 1.5, f"greeting (2.5 s) was not cut by the digit: heard {menu_seconds} s"


async def test_vip_caller_id_goes_to_vip_branch_and_collected_digits_are_in_the_call_record(daemon_factory):
    d = daemon_factory(workers=1, start=False)
    flows = {"main": [{"branch": {"on": "caller", "cases": [{"prefix": "4570", "then": "vip"}]}},
                      {"play": "sales"}, "hangup",
                      {"id": "vip", "play": "vip"},
                      {"collect": {"var": "account", "prompt": "account", "min": 4, "max": 6, "timeout": 3}},
                      {"play": "bye"}, "hangup"]}
    ivr_config(d, flows)
    d.start()
    vip = await Phone("4570112233", d.ports.caller(0), d.ports.base + 80).start()
    other = await Phone("4511223344", d.ports.caller(1), d.ports.base + 90).start()
    try:
        heard_vip = await call_and_listen(d, vip, [(1.8, "4321#")])
        heard_other = await call_and_listen(d, other, [])
    finally:
        await vip.stop()
        await other.stop()
    assert heard_vip == ["vip", "account", "bye"], heard_vip
    assert heard_other == ["sales"], heard_other
    rows = {r["caller"]: r for r in d.wait_calls_ended(2)}
    assert json.loads(rows["4570112233"]["variables"])["account"] == "4321"
    assert "main:vip:play" in json.loads(rows["4570112233"]["ivr_path"])


async def test_after_hours_caller_hears_closed_and_leaves_a_stored_voicemail(daemon_factory):
    d = daemon_factory(workers=1, start=False)
    flows = {"main": [{"schedule": {"name": "office", "closed": "closed"}}, {"play": "sales"}, "hangup",
                      {"id": "closed", "play": "closed"},
                      {"voicemail": {"box": "sales", "greeting": "leave", "max_seconds": 10}},
                      {"play": "bye"}, "hangup"]}
    # open around the clock, so only the operator's override can close it
    ivr_config(d, flows, schedules={"office": {"timezone": "UTC", "hours": {"mon-sun": "00:00-24:00"}}},
               agents={"alice": {"softphone": {"username": "alice", "password": "alice-secret"}}},
               voicemail={"boxes": {"sales": {"agent": "alice"}}})
    d.start()
    cli = [sys.executable, "-m", "ringmaster.cli"]
    out = subprocess.run(cli + ["schedule", "office", "--closed", "-c", str(d.config_path)], capture_output=True, text=True)
    assert out.returncode == 0 and "closed" in out.stdout, out.stderr
    write_tone(d.dir / "voice.wav", TONES["caller_voice"], 1.5)
    phone = await Phone("4511223344", d.ports.caller(0), d.ports.base + 80).start()
    try:
        leg = await phone.call(f"sip:100@{d.edge}")
        await asyncio.sleep(1.6)  # closed (0.6 s) + leave a message (0.6 s) + a beat
        phone.send(p.Play(leg=leg, files=(str(d.dir / "voice.wav"),)))
        await phone.wait(p.PlaybackDone, lambda m: m.leg == leg, timeout=5)
        phone.send(p.SendDtmf(leg=leg, digits="#"))
        await phone.wait(p.CallState, lambda m: m.leg == leg and m.state == "disconnected", timeout=10)
    finally:
        await phone.stop()
    row = d.wait_calls_ended(1)[0]
    assert json.loads(row["variables"])["schedule_office"] == "closed"
    con = sqlite3.connect(d.db_path)
    vm = con.execute("SELECT box, caller, path, seconds FROM voicemails").fetchall()
    con.close()
    assert len(vm) == 1 and vm[0][0] == "sales" and vm[0][1] == "4511223344"
    assert 1.4 <= vm[0][3] <= 4.0, vm
    samples, _ = read_wav(Path(vm[0][2]))
    assert [n for n, _ in tone_sequence(samples, TONES)] == ["caller_voice"]
    # and back to the hours: the next caller is in business
    out = subprocess.run(cli + ["schedule", "office", "--auto", "-c", str(d.config_path)], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert d.status()["schedules"] == {"office": "auto"}
