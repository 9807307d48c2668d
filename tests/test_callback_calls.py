"""Queued callbacks with real calls (docs/callbacks.md): a caller behind others presses the
callback key and hangs up keeping its place; those behind are counted after it; when the agent
is free she previews the callback, the customer (a pjsua2 phone, or a SIPp UAS, behind the
queue's trunk) is rung with the configured caller ID, hears the prompt, and the two hear each
other; retries and failure on busy; the after-hours window; a restart keeps callbacks in place;
`check` names bad callback settings."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
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
from tests.helpers.audio import TONES_TOL, dominant_frequencies, has_tone, read_wav, write_tone
from tests.helpers.phone import Phone
from tests.helpers.sipp import SCENARIOS
from tests.test_acd_calls import queue_log, register, wait_agent
from tests.test_api import TOKENS, http
from tests.test_presence_mqtt import INTEGRATION, integration

HOLD, CONFIRM, GREETING, CUSTOMER, AGENT, OFFER = 440.0, 900.0, 1500.0, 700.0, 1300.0, 1100.0
CALLER_ID = "4570001111"


def callback_config(d, trunk_port: int, **callback: Any) -> None:  # type: ignore[no-untyped-def]
    prompts = d.dir / "prompts"
    write_tone(prompts / "hold.wav", HOLD, 3.0)
    write_tone(prompts / "callback-confirm.wav", CONFIRM, 0.8)
    write_tone(prompts / "cbhello.wav", GREETING, 1.0)
    d.config["sip"]["trunks"] = {"carrier": {"address": f"127.0.0.1:{trunk_port}", "allowed": ["45[0-9]{8}"]}}
    d.config["agents"] = {"alice": {"softphone": {"username": "alice", "password": "alice-secret"}}}
    d.config["queues"] = {"sales": {"moh": "hold", "strategy": "linear", "members": ["alice"],
                                    "record": {"template": "{queue}/{call_id}.wav"},
                                    "callback": {"key": "5", "route": "carrier", "caller_id": CALLER_ID,
                                                 "preview": 10, "customer_prompt": "cbhello", **callback}}}
    d.config["flows"]["main"] = [{"queue": "sales"}, "hangup"]
    d.config["entry_points"].append({"number": "500", "flow": "main"})
    d.config["http"] = {"listen": f"127.0.0.1:{d.ports.base + 6}",
                        "tokens": [{"name": r, "token": t, "role": r} for r, t in TOKENS.items()]}


def positions(d) -> dict[str, int]:  # type: ignore[no-untyped-def]
    return d.status()["queues"]["sales"]["positions"]


def callbacks_api(d) -> list[dict[str, Any]]:  # type: ignore[no-untyped-def]
    status, _, body = http(d, "GET", "/api/callbacks", "operator")
    assert status == 200, body
    return json.loads(body)["callbacks"]


def call_id_of(d, caller: str) -> str:  # type: ignore[no-untyped-def]
    return next(r["call_id"] for r in d.calls() if r["caller"] == caller)


def until(pred, timeout: float = 8.0, what: str = "") -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return
        time.sleep(0.1)
    raise AssertionError(f"not true in {timeout} s: {what}")


async def press_for_callback(phone: Phone, leg: str, heard: Path | None = None, number: str = "") -> None:
    """Press the callback key (then key in `number`, for `number: ask`) and wait to be hung up."""
    if heard is not None:
        phone.send(p.RecordStart(rec_id="confirm", legs=(leg,), path=str(heard)))
    phone.send(p.SendDtmf(leg=leg, digits="5"))
    if number:
        await asyncio.sleep(1.0)
        phone.send(p.SendDtmf(leg=leg, digits=number))
    await phone.wait(p.CallState, lambda m: m.leg == leg and m.state == "disconnected", timeout=10)
    if heard is not None:
        phone.send(p.RecordStop(rec_id="confirm"))
        await phone.wait(p.RecordingDone, lambda m: m.rec_id == "confirm")


async def test_a_caller_keeps_their_place_as_a_callback_and_the_agent_calls_the_customer_back(daemon_factory,
                                                                                                tmp_path: Path):
    d = daemon_factory(workers=1, start=False)
    callback_config(d, d.ports.caller(5), offer_prompt="cboffer")
    write_tone(d.dir / "prompts" / "cboffer.wav", OFFER, 0.8)
    d.config["queues"]["sales"]["announce"] = {"every": 5, "position": False, "wait_time": False}
    d.config["mqtt"] = {"embedded": True, "listen": f"127.0.0.1:{d.ports.base + 8}",
                        "clients": [{"username": INTEGRATION[0], "password": INTEGRATION[1]}]}
    d.start()
    crm = integration(d)
    write_tone(tmp_path / "customer.wav", CUSTOMER, 30)
    write_tone(tmp_path / "agent.wav", AGENT, 30)
    first = await Phone("4511111111", d.ports.caller(1), d.ports.base + 80).start()
    second = await Phone("4522222222", d.ports.caller(2), d.ports.base + 96).start()
    third = await Phone("4533333333", d.ports.caller(3), d.ports.base + 112).start()
    customer = await Phone("customer", d.ports.caller(5), d.ports.base + 128).start()
    alice = await Phone("alice", d.ports.caller(6), d.ports.base + 144).start()
    try:
        a = await first.call(f"sip:500@{d.edge}")  # nobody is logged in: callers wait
        b = await second.call(f"sip:500@{d.edge}")
        await asyncio.sleep(0.5)
        await press_for_callback(second, b, tmp_path / "confirm.wav")  # the server says so and hangs up
        first_id, second_id = call_id_of(d, "4511111111"), call_id_of(d, "4522222222")
        cb_id = f"cb-{second_id}"
        assert positions(d) == {first_id: 1, cb_id: 2}
        c = await third.call(f"sip:500@{d.edge}")
        third_called = time.monotonic()
        # the third caller's wait: the periodic announcement offers the callback
        third.send(p.RecordStart(rec_id="wait", legs=(c,), path=str(tmp_path / "third_waits.wav")))
        until(lambda: any(r["caller"] == "4533333333" for r in d.calls()), what="the third call stored")
        third_id = call_id_of(d, "4533333333")
        until(lambda: positions(d).get(third_id) == 3, what="the third caller is behind the callback")
        (cb,) = callbacks_api(d)
        assert cb["callback_id"] == cb_id and cb["number"] == "4522222222" and cb["position"] == 2
        await first.hangup(a)  # the first caller gives up: the callback moves up, not past anyone
        until(lambda: positions(d) == {cb_id: 1, third_id: 2}, what="callback first, third caller second")
        # the agent comes: she previews the callback first, the number and IVR variables on screen
        await asyncio.sleep(max(0.0, 6.5 - (time.monotonic() - third_called)))  # one announcement heard
        third.send(p.RecordStop(rec_id="wait"))
        assert (await register(alice, d, "alice", "alice-secret")).registered
        inc = await alice.wait(p.Incoming, timeout=10)
        offer = await crm.until("calls/events", lambda m: m.get("kind") == "callback" and m["event"] == "offered")
        assert (offer["callback_id"], offer["caller"], offer["agents"]) == (cb_id, "4522222222", ["alice"])
        assert offer["variables"]["caller"] == "4522222222" and offer["preview"] == 10
        headers = dict(inc.headers)
        assert headers.get("X-Ringmaster-Callback") == cb_id
        assert headers.get("X-Ringmaster-Callback-Number") == "4522222222"
        assert headers.get("X-Ringmaster-Var-caller") == "4522222222"
        assert "4522222222" in inc.from_uri
        alice.send(p.Answer(leg=inc.leg))
        ring = await customer.wait(p.Incoming, timeout=10)
        assert CALLER_ID in ring.from_uri and "4522222222" in ring.request_uri, ring
        customer.send(p.Answer(leg=ring.leg))
        await customer.wait(p.MediaReady, lambda m: m.leg == ring.leg)
        customer.send(p.RecordStart(rec_id="greeting", legs=(ring.leg,), path=str(tmp_path / "greeting.wav")))
        await asyncio.sleep(0.8)
        customer.send(p.RecordStop(rec_id="greeting"))
        await asyncio.sleep(0.6)  # the prompt ends, then the two are joined
        customer.send(p.Play(leg=ring.leg, files=(str(tmp_path / "customer.wav"),), loop=True))
        alice.send(p.Play(leg=inc.leg, files=(str(tmp_path / "agent.wav"),), loop=True))
        customer.send(p.RecordStart(rec_id="talk", legs=(ring.leg,), path=str(tmp_path / "customer_heard.wav")))
        alice.send(p.RecordStart(rec_id="talk", legs=(inc.leg,), path=str(tmp_path / "agent_heard.wav")))
        await asyncio.sleep(1.5)
        customer.send(p.RecordStop(rec_id="talk"))
        alice.send(p.RecordStop(rec_id="talk"))
        await customer.wait(p.RecordingDone, lambda m: m.rec_id == "talk")
        await alice.wait(p.RecordingDone, lambda m: m.rec_id == "talk")
        alice.send(p.Hangup(leg=inc.leg))
        await customer.wait(p.CallState, lambda m: m.leg == ring.leg and m.state == "disconnected", timeout=5)
        # the third caller is next
        nxt = await alice.wait(p.Incoming, lambda m: m.leg != inc.leg, timeout=10)
        assert dict(nxt.headers).get("X-Ringmaster-Call") == third_id
        await third.hangup(c)
        await crm.until("calls/events", lambda m: m.get("kind") == "callback" and m["event"] == "ended")
        steps = [m["event"] for m in crm.received("calls/events", lambda m: m.get("call_id") == cb_id)]
        assert steps == ["requested", "offered", "dialling", "answered", "ended"], steps
        # the caller's own call left the queue for the callback
        left = crm.received("calls/events", lambda m: m.get("call_id") == second_id and m["event"] == "ended")
        assert left and left[0]["reason"] == "callback" and left[0]["callback_id"] == cb_id
    finally:
        crm.close()
        for ph in (first, second, third, customer, alice):
            await ph.stop()
    waited, _ = read_wav(tmp_path / "third_waits.wav")
    assert has_tone(waited, OFFER, tol=TONES_TOL), dominant_frequencies(waited)
    heard, _ = read_wav(tmp_path / "confirm.wav")
    assert has_tone(heard, CONFIRM, tol=TONES_TOL), dominant_frequencies(heard)
    greeting, _ = read_wav(tmp_path / "greeting.wav")
    assert has_tone(greeting, GREETING, tol=TONES_TOL), dominant_frequencies(greeting)
    by_customer, _ = read_wav(tmp_path / "customer_heard.wav")
    by_agent, _ = read_wav(tmp_path / "agent_heard.wav")
    assert has_tone(by_customer, AGENT, tol=TONES_TOL), dominant_frequencies(by_customer)
    assert has_tone(by_agent, CUSTOMER, tol=TONES_TOL), dominant_frequencies(by_agent)
    # the whole story: the request under the caller's call, the callback's own events, its call row
    assert [e for e, _, _ in queue_log(d, second_id)] == ["ENTERQUEUE", "CALLBACKREQUEST"]
    (_, _, req), = [x for x in queue_log(d, second_id) if x[0] == "CALLBACKREQUEST"]
    assert req.split("|")[:4] == [cb_id, "4522222222", "2", "2"]
    assert [(e, ag) for e, ag, _ in queue_log(d, cb_id)] == [
        ("CALLBACKOFFER", "alice"), ("CALLBACKDIAL", "alice"), ("CALLBACKANSWER", "alice"), ("CONNECT", "alice"),
        ("COMPLETEAGENT", "alice")]
    until(lambda: any(r["call_id"] == f"{cb_id}-1" and r["disposition"] == "completed" for r in d.calls()))
    row = next(r for r in d.calls() if r["call_id"] == f"{cb_id}-1")
    assert row["caller"] == CALLER_ID and row["called"] == "4522222222" and row["agent"] == "alice"
    assert row["queue"] == "sales" and row["answered_at"] and row["talk_seconds"] >= 1.5
    mixed, _ = read_wav(Path(row["recording"]))
    assert has_tone(mixed, CUSTOMER, tol=TONES_TOL) and has_tone(mixed, AGENT, tol=TONES_TOL)
    con = sqlite3.connect(d.db_path)
    try:
        status, attempts, agent = con.execute("SELECT status, attempts, agent FROM callbacks WHERE callback_id=?",
                                              (cb_id,)).fetchone()
        steps = [r[0] for r in con.execute("SELECT event FROM call_events WHERE call_id=? ORDER BY id", (cb_id,))]
    finally:
        con.close()
    assert (status, attempts, agent) == ("completed", 1, "alice")
    assert steps == ["CALLBACK_REQUESTED", "CALLBACK_OFFERED", "CALLBACK_DIALLING", "CALLBACK_ANSWERED",
                     "CALLBACK_COMPLETED"]
    out = subprocess.run([sys.executable, "-m", "ringmaster.cli", "stats", "--format", "json", "-c", str(d.config_path)],
                         capture_output=True, text=True, timeout=20)
    assert out.returncode == 0, out.stderr
    sales = next(q for q in json.loads(out.stdout)["queues"] if q["queue"] == "sales")
    assert (sales["callbacks_requested"], sales["callbacks_completed"], sales["callbacks_failed"]) == (1, 1, 0)
    assert sales["avg_time_to_callback"] > 0


def _received(log: str) -> list[str]:
    return [m.group(1) for m in re.finditer(r"message received \[\d+\] bytes :\n\n(\w+ sip:[^\n]*\n(?:[^\n]+\n)*)", log)]


async def test_a_keyed_in_number_busy_is_retried_after_the_delay_then_the_callback_fails(daemon_factory,
                                                                                         tmp_path: Path):
    d = daemon_factory(workers=1, start=False)
    trunk_port = d.ports.caller(5)
    callback_config(d, trunk_port, attempts=2, retry_delay=3, number="ask", prefix="45", min_digits=8)
    d.start()
    carrier = subprocess.Popen(["sipp", "-sf", str(SCENARIOS / "uas_busy.xml"), "-i", "127.0.0.1", "-p", str(trunk_port),
                                "-m", "2", "-timeout", "40s", "-nostdin", "-trace_msg", "-fd", "1"],
                               cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    caller = await Phone("4566666666", d.ports.caller(2), d.ports.base + 96).start()
    alice = await Phone("alice", d.ports.caller(6), d.ports.base + 144).start()
    answered: list[float] = []
    try:
        b = await caller.call(f"sip:500@{d.edge}")
        await asyncio.sleep(0.5)
        await press_for_callback(caller, b, number="22222222#")  # keyed in: 45 is put before it
        cb_id = f"cb-{call_id_of(d, '4566666666')}"
        assert (await register(alice, d, "alice", "alice-secret")).registered
        seen: set[str] = set()
        for _ in range(2):  # she accepts each preview; the customer is busy each time
            inc = await alice.wait(p.Incoming, lambda m: m.leg not in seen, timeout=15)
            seen.add(inc.leg)
            alice.send(p.Answer(leg=inc.leg))
            answered.append(time.monotonic())
            await alice.wait(p.CallState, lambda m, leg=inc.leg: m.leg == leg and m.state == "disconnected", timeout=10)
        until(lambda: not callbacks_api(d), what="the callback is over")
        wait_agent(d, "alice", "available")
    finally:
        await caller.stop()
        await alice.stop()
    out, _ = carrier.communicate(timeout=60)
    assert carrier.returncode == 0, out[-2000:]
    assert answered[1] - answered[0] >= 3.0  # the retry delay
    invites = [r for r in _received(next(tmp_path.glob("*_messages.log")).read_text()) if r.startswith("INVITE ")]
    assert len(invites) == 2
    for inv in invites:
        assert inv.startswith("INVITE sip:4522222222@127.0.0.1:"), inv
        assert re.search(rf"^From:.*sip:{CALLER_ID}@", inv, re.MULTILINE | re.IGNORECASE), inv
    events = [(e, data) for e, _, data in queue_log(d, cb_id)]
    fails = [data for e, data in events if e == "CALLBACKFAIL"]
    assert fails == ["1|busy|retry", "2|busy|final"], events
    assert "CONNECT" not in [e for e, _ in events]
    con = sqlite3.connect(d.db_path)
    try:
        row = con.execute("SELECT status, attempts, reason FROM callbacks WHERE callback_id=?", (cb_id,)).fetchone()
        dials = con.execute("SELECT disposition, hangup_cause FROM calls WHERE call_id LIKE ? ORDER BY id",
                            (f"{cb_id}-%",)).fetchall()
    finally:
        con.close()
    assert row == ("failed", 2, "busy")
    assert dials == [("failed", "callback_busy"), ("failed", "callback_busy")]


async def test_a_keyed_in_callback_after_hours_waits_for_the_window_and_survives_a_restart_in_place(
        daemon_factory, tmp_path: Path):
    d = daemon_factory(workers=1, start=False)
    callback_config(d, d.ports.caller(5), schedule="office", prefix="45")
    d.config["schedules"] = {"office": {"timezone": "UTC", "hours": {"mon-sun": ["00:00-23:59"]}}}
    write_tone(d.dir / "prompts" / "enter-number.wav", 600, 0.4)
    write_tone(d.dir / "prompts" / "invalid.wav", 650, 0.3)
    d.config["flows"]["ask"] = [{"collect": {"var": "cbnum", "prompt": "enter-number", "min": 2, "max": 12,
                                             "timeout": 6, "max_attempts": 1}},
                                {"callback": {"queue": "sales", "number": "${cbnum}"}}, "hangup"]
    d.config["entry_points"].append({"number": "600", "flow": "ask"})
    d.start()
    sched = [sys.executable, "-m", "ringmaster.cli", "schedule", "office", "-c", str(d.config_path)]
    assert subprocess.run([*sched, "--closed"], capture_output=True, timeout=15).returncode == 0
    phone = await Phone("4599999999", d.ports.caller(2), d.ports.base + 96).start()
    try:
        for digits in ("12#", "33333333#", "44444444#"):  # 12: too short, refused and not stored
            leg = await phone.call(f"sip:600@{d.edge}")
            await asyncio.sleep(0.8)
            phone.send(p.SendDtmf(leg=leg, digits=digits))
            await phone.wait(p.CallState, lambda m, leg=leg: m.leg == leg and m.state == "disconnected", timeout=10)
    finally:
        await phone.stop()
    until(lambda: len(callbacks_api(d)) == 2, what="two callbacks stored")
    before = callbacks_api(d)
    assert [c["number"] for c in before] == ["4533333333", "4544444444"] and [c["position"] for c in before] == [1, 2]
    con = sqlite3.connect(d.db_path)
    refused = con.execute("SELECT data FROM call_events WHERE event='CALLBACK_REFUSED'").fetchall()
    con.close()
    assert len(refused) == 1 and "2 digits" in refused[0][0]
    assert d.stop() == 0
    d.start()  # the callbacks come back at their arrival times, in their places; still after hours
    after = callbacks_api(d)
    assert [(c["callback_id"], c["enqueued_at"], c["position"]) for c in after] == \
        [(c["callback_id"], c["enqueued_at"], c["position"]) for c in before]
    # cancelled by the API (an operator may not; an unknown id is 404)
    second = after[1]["callback_id"]
    assert http(d, "DELETE", f"/api/callbacks/{second}", "operator")[0] == 403
    assert http(d, "DELETE", "/api/callbacks/cb-nope", "supervisor")[0] == 404
    assert http(d, "DELETE", f"/api/callbacks/{second}", "supervisor")[0] == 200
    assert [c["number"] for c in callbacks_api(d)] == ["4533333333"]
    until(lambda: [e for e, _, _ in queue_log(d, second)][-1:] == ["CALLBACKCANCEL"], what="CALLBACKCANCEL stored")
    alice = await Phone("alice", d.ports.caller(6), d.ports.base + 144).start()
    try:
        assert (await register(alice, d, "alice", "alice-secret")).registered
        wait_agent(d, "alice", "available")
        await asyncio.sleep(1.5)
        assert not [m for m in alice.events if isinstance(m, p.Incoming)]  # closed: nothing is dialled
        assert subprocess.run([*sched, "--open"], capture_output=True, timeout=15).returncode == 0
        inc = await alice.wait(p.Incoming, timeout=10)
        assert dict(inc.headers)["X-Ringmaster-Callback-Number"] == "4533333333"  # the first in line
        alice.send(p.Hangup(leg=inc.leg, code=486))  # she declines: the next attempt comes later
    finally:
        await alice.stop()
    until(lambda: [c["state"] for c in callbacks_api(d)] == ["waiting"], what="declined: waiting again")
    con = sqlite3.connect(d.db_path)
    rows = con.execute("SELECT number, status FROM callbacks WHERE callback_id IS NOT NULL ORDER BY id").fetchall()
    con.close()
    assert rows == [("4533333333", "waiting"), ("4544444444", "cancelled")]


BASE = """\
sip:
  listen: 127.0.0.1:25060
  trunks:
    carrier:
      address: 127.0.0.1:25080
      allowed: ['\\+45[0-9]{8}']
agents:
  bob: {softphone: {username: bob, password: bob-secret}}
queues:
  sales:
    members: [bob]
    callback:
      route: carrier
      caller_id: "4570000000"
      allowed: ['\\+45[0-9]{8}']
flows:
  demo:
    - callback: {queue: sales}
    - hangup
entry_points:
  - {number: "100", flow: demo}
"""


@pytest.mark.parametrize("change, where, expected", [
    (("- callback: {queue: sales}", "- callback: {queue: nosuchqueue}"), "sip.yaml:18:", "unknown queue 'nosuchqueue'"),
    (("      route: carrier", "      route: carier"), "sip.yaml:13:", "callback route 'carier': not a trunk"),
    (("      allowed: ['\\+45[0-9]{8}']\nflows", "      allowed: ['\\+[0-9]+']\nflows"), "sip.yaml:15:",
     "[0-9]+' is not one route 'carrier' allows"),
])
def test_check_names_the_place_of_bad_callback_settings(tmp_path: Path, change: tuple[str, str], where: str,
                                                        expected: str):
    text = BASE.replace(*change)
    assert text != BASE
    (tmp_path / "prompts").mkdir()
    write_tone(tmp_path / "prompts" / "please-hold.wav", 440, 0.5)
    f = tmp_path / "sip.yaml"
    f.write_text(text)
    with pytest.raises(ConfigInvalid) as exc:
        load_config(f)
    errors = [str(e) for e in exc.value.errors]
    assert any(where in e and expected in e for e in errors), errors


def test_a_good_callback_config_loads_and_numbers_are_checked(tmp_path: Path):
    from ringmaster.callbacks import NumberRefused, callback_number

    (tmp_path / "prompts").mkdir()
    write_tone(tmp_path / "prompts" / "please-hold.wav", 440, 0.5)
    f = tmp_path / "sip.yaml"
    f.write_text(BASE)
    cfg = load_config(f)
    spec = cfg.queues["sales"].callback
    assert spec is not None
    trunk = cfg.sip.trunks["carrier"]
    assert callback_number(spec, trunk, "+4512345678") == "+4512345678"
    for bad, why in (("", "no number"), ("+45123", "digits, not"), ("+4512x45678", "not a number"),
                     ("+19005550100", "may call back"), ("4512345678", "may call back")):
        with pytest.raises(NumberRefused, match=why):
            callback_number(spec, trunk, bad)
    prefixed = spec.model_copy(update={"prefix": "+45", "min_digits": 8})
    assert callback_number(prefixed, trunk, "12345678") == "+4512345678"


async def test_a_worker_crash_while_the_customer_rings_puts_the_callback_back_uncounted(daemon_factory):
    d = daemon_factory(workers=2, start=False)
    callback_config(d, d.ports.caller(5))
    d.config["workers"]["per_process"] = 1  # the crash of the customer's worker alone
    d.start()
    caller = await Phone("4522222222", d.ports.caller(2), d.ports.base + 96).start()
    customer = await Phone("customer", d.ports.caller(5), d.ports.base + 128).start()
    alice = await Phone("alice", d.ports.caller(6), d.ports.base + 144).start()
    try:
        b = await caller.call(f"sip:500@{d.edge}")
        await asyncio.sleep(0.5)
        await press_for_callback(caller, b)
        cb_id = f"cb-{call_id_of(d, '4522222222')}"
        assert (await register(alice, d, "alice", "alice-secret")).registered
        inc = await alice.wait(p.Incoming, timeout=10)
        alice.send(p.Answer(leg=inc.leg))
        await customer.wait(p.Incoming, timeout=10)  # the customer's phone rings; nobody answers yet
        worker = d.wait_event("callback.offered")[0]["worker"]  # the customer is dialled from the same
        pid = next(w["pid"] for w in d.status()["workers"] if w["name"] == worker)
        os.kill(pid, signal.SIGKILL)
        # she is offered it again at once from a live worker, the attempt not counted
        again = await alice.wait(p.Incoming, lambda m: m.leg != inc.leg, timeout=15)
        assert dict(again.headers)["X-Ringmaster-Callback"] == cb_id
        assert dict(again.headers)["X-Ringmaster-Callback-Attempt"] == "1"
        alice.send(p.Hangup(leg=again.leg, code=486))
    finally:
        for ph in (caller, customer, alice):
            await ph.stop()
    events = [(e, data) for e, _, data in queue_log(d, cb_id)]
    assert ("CALLBACKFAIL", "0|worker-lost|retry") in events, events
    assert [e for e, _ in events].count("CALLBACKOFFER") == 2
    until(lambda: [c["state"] for c in callbacks_api(d)] == ["waiting"], what="still waiting, in place")
    assert callbacks_api(d)[0]["attempts"] == 0


async def test_a_reload_that_drains_the_queue_moves_its_callback_in_place_and_stores_it_there(daemon_factory):
    d = daemon_factory(workers=1, start=False)
    callback_config(d, d.ports.caller(5))
    d.config["queues"]["other"] = {**d.config["queues"]["sales"]}
    d.start()
    caller = await Phone("4522222222", d.ports.caller(2), d.ports.base + 96).start()
    try:
        b = await caller.call(f"sip:500@{d.edge}")
        await asyncio.sleep(0.5)
        await press_for_callback(caller, b)
    finally:
        await caller.stop()
    (before,) = callbacks_api(d)
    del d.config["queues"]["sales"]
    d.config["flows"]["main"] = [{"queue": "other"}, "hangup"]
    d.write_config()
    out = subprocess.run([sys.executable, "-m", "ringmaster.cli", "reload", "--drain", "sales=other",
                          "-c", str(d.config_path)], capture_output=True, text=True, timeout=20)
    assert out.returncode == 0, out.stdout + out.stderr
    (after,) = callbacks_api(d)
    assert (after["callback_id"], after["queue"], after["enqueued_at"]) == \
        (before["callback_id"], "other", before["enqueued_at"])

    def stored() -> str:
        con = sqlite3.connect(d.db_path)
        try:
            return con.execute("SELECT queue FROM callbacks WHERE callback_id=?", (after["callback_id"],)).fetchone()[0]
        finally:
            con.close()

    until(lambda: stored() == "other", what="the row names the queue it waits in")
    assert d.stop() == 0
    d.start()
    assert [(c["callback_id"], c["queue"]) for c in callbacks_api(d)] == [(after["callback_id"], "other")]


async def test_a_callback_through_a_trunk_that_challenges_gets_its_credentials(daemon_factory, tmp_path: Path):
    # the customer's leg leaves through the edge's OUTBOUND route, which answers the trunk's
    # 401 with the trunk's digest credentials (issue 12: callback, outbound and mobile legs)
    d = daemon_factory(workers=1, start=False)
    trunk_port = d.ports.caller(5)
    callback_config(d, trunk_port, number="ask", prefix="45", min_digits=8)
    d.config["sip"]["trunks"]["carrier"].update(username="acme", password="Tr0nk-secret")
    d.start()
    carrier = subprocess.Popen(["sipp", "-sf", str(SCENARIOS / "uas_trunk_auth.xml"), "-i", "127.0.0.1",
                                "-p", str(trunk_port), "-m", "1", "-timeout", "40s", "-nostdin", "-trace_msg",
                                "-fd", "1"],
                               cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    caller = await Phone("4566666667", d.ports.caller(2), d.ports.base + 96).start()
    alice = await Phone("alice", d.ports.caller(6), d.ports.base + 144).start()
    try:
        b = await caller.call(f"sip:500@{d.edge}")
        await asyncio.sleep(0.5)
        await press_for_callback(caller, b, number="33333333#")
        cb_id = f"cb-{call_id_of(d, '4566666667')}"
        assert (await register(alice, d, "alice", "alice-secret")).registered
        inc = await alice.wait(p.Incoming, timeout=15)
        alice.send(p.Answer(leg=inc.leg))
        await asyncio.to_thread(d.wait_event, "callback.answered", 1, 10.0)  # after the challenge
        alice.send(p.Hangup(leg=inc.leg))
        until(lambda: not callbacks_api(d), what="the callback is over")
    finally:
        await caller.stop()
        await alice.stop()
    out, _ = carrier.communicate(timeout=60)
    assert carrier.returncode == 0, out[-2000:]
    con = sqlite3.connect(d.db_path)
    try:
        status = con.execute("SELECT status FROM callbacks WHERE callback_id=?", (cb_id,)).fetchone()[0]
    finally:
        con.close()
    assert status == "completed"
    log = next(tmp_path.glob("*_messages.log")).read_text()
    assert "Authorization: Digest" in log and 'username="acme"' in log


async def test_a_customer_who_does_not_answer_is_retried_after_the_delay_then_the_callback_fails(
        daemon_factory, tmp_path: Path):
    # the customer's phone rings out (ring_timeout) at each attempt: CANCEL, retried after
    # retry_delay, failed after `attempts` (issue 12: "no answer -> retried ... then failed")
    d = daemon_factory(workers=1, start=False)
    trunk_port = d.ports.caller(5)
    callback_config(d, trunk_port, attempts=2, retry_delay=2, ring_timeout=5)
    d.start()
    carrier = subprocess.Popen(["sipp", "-sf", str(SCENARIOS / "uas_no_answer.xml"), "-i", "127.0.0.1",
                                "-p", str(trunk_port), "-m", "2", "-timeout", "40s", "-nostdin", "-trace_msg",
                                "-fd", "1"],
                               cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    caller = await Phone("4577777777", d.ports.caller(2), d.ports.base + 96).start()
    alice = await Phone("alice", d.ports.caller(6), d.ports.base + 144).start()
    answered: list[float] = []
    try:
        b = await caller.call(f"sip:500@{d.edge}")
        await asyncio.sleep(0.5)
        await press_for_callback(caller, b)  # on the caller ID
        cb_id = f"cb-{call_id_of(d, '4577777777')}"
        assert (await register(alice, d, "alice", "alice-secret")).registered
        seen: set[str] = set()
        for _ in range(2):
            inc = await alice.wait(p.Incoming, lambda m: m.leg not in seen, timeout=20)
            seen.add(inc.leg)
            alice.send(p.Answer(leg=inc.leg))
            answered.append(time.monotonic())
            await alice.wait(p.CallState, lambda m, leg=inc.leg: m.leg == leg and m.state == "disconnected", timeout=15)
        until(lambda: not callbacks_api(d), timeout=10, what="the callback is over")
    finally:
        await caller.stop()
        await alice.stop()
    out, _ = carrier.communicate(timeout=60)
    assert carrier.returncode == 0, out[-2000:]
    assert answered[1] - answered[0] >= 5.0 + 2.0  # rang out, then the retry delay
    fails = [data for e, _, data in queue_log(d, cb_id) if e == "CALLBACKFAIL"]
    assert [f.split("|")[1:] for f in fails] == [["noanswer", "retry"], ["noanswer", "final"]], fails
    con = sqlite3.connect(d.db_path)
    try:
        row = con.execute("SELECT status, attempts, reason FROM callbacks WHERE callback_id=?", (cb_id,)).fetchone()
    finally:
        con.close()
    assert row == ("failed", 2, "noanswer")
