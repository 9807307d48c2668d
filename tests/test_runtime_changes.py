"""Agents, queues and members changed while the daemon runs (real daemon, edge, workers, pjsua2
phones): members added and removed through the API and the CLI (AddQueueMember /
RemoveQueueMember) reach or stop reaching callers at once and come back after a restart; a
reload gives new callers a queue's new strategy and ring timeout while a caller already waiting
keeps the old; a queue with a caller waiting is not removed (unless drained to a named queue);
a broken file changes nothing and names file:line; new agents and MQTT users can log in."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import subprocess
import sys
import time
from typing import Any

from ringmaster import protocol as p
from tests.helpers.phone import Phone
from tests.test_acd_calls import acd_config, register, wait_agent
from tests.test_api import TOKENS, http

CLI = [sys.executable, "-m", "ringmaster.cli"]


async def _bridged(d, agent: str) -> None:  # type: ignore[no-untyped-def]
    """Wait for the worker's bridge of `agent`'s call (acd.connected): a caller who hangs up
    the moment the agent's phone says "confirmed" crosses the bridge, and such a call is
    rightly stored abandoned, not answered (docs/engine-findings.md 73)."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if any(e.get("agent") == agent for e in d.events("acd.connected")):
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"{agent}'s call was never bridged")


def cli(d, *args: str) -> subprocess.CompletedProcess[str]:  # type: ignore[no-untyped-def]
    return subprocess.run(CLI + [args[0], "-c", str(d.config_path), *args[1:]], capture_output=True, text=True,
                          timeout=30)


def with_api(d) -> None:  # type: ignore[no-untyped-def]
    d.config["http"] = {"listen": f"127.0.0.1:{d.ports.base + 6}",
                        "tokens": [{"name": r, "token": t, "role": r} for r, t in TOKENS.items()]}


def members(d, queue: str = "sales") -> list[dict[str, Any]]:  # type: ignore[no-untyped-def]
    st = d.status()
    assert st is not None
    return st["queues"][queue]["members"]


def queue_rows(d, event: str) -> list[tuple[str, str, str, str]]:  # type: ignore[no-untyped-def]
    """(call_id, queue, agent, data) of the queue_log rows of `event`, in order."""
    con = sqlite3.connect(d.db_path)
    try:
        return [tuple(r) for r in  # type: ignore[misc]
                con.execute("SELECT call_id, queue, agent, data FROM queue_log WHERE event=? ORDER BY id", (event,))]
    finally:
        con.close()


def ring_ends(d) -> list[tuple[str, str, int]]:  # type: ignore[no-untyped-def]
    """(call_id, agent, ring ms) of the RINGNOANSWER rows, in order."""
    return [(c, a, int(data)) for c, _, a, data in queue_rows(d, "RINGNOANSWER")]


def offered(d) -> list[tuple[str, list[str]]]:  # type: ignore[no-untyped-def]
    """(call_id, agents) of every offer (ring) made, in order."""
    con = sqlite3.connect(d.db_path)
    try:
        return [(r[0], json.loads(r[1])["agents"]) for r in
                con.execute("SELECT call_id, data FROM call_events WHERE event='OFFERED' ORDER BY id")]
    finally:
        con.close()


async def phone_up(d, name: str, i: int) -> Phone:  # type: ignore[no-untyped-def]
    ph = await Phone(name, d.ports.caller(2 + i), d.ports.base + 100 + 16 * i).start()
    assert (await register(ph, d, name, f"{name}-secret")).registered
    return ph


async def test_member_added_by_api_reaches_the_waiting_caller_and_is_kept_across_a_restart(daemon_factory):
    d = daemon_factory(workers=1, start=False)
    acd_config(d, {"strategy": "linear", "members": ["alice"]}, agents=("alice", "bob"))
    with_api(d)
    d.start()
    bob = await phone_up(d, "bob", 0)
    caller = await Phone("4511223344", d.ports.caller(1), d.ports.base + 90).start()
    try:
        wait_agent(d, "bob", "available")
        a = await caller.call(f"sip:500@{d.edge}")  # alice is not there: the caller waits
        await asyncio.sleep(1.0)
        assert not [m for m in bob.events if isinstance(m, p.Incoming)]  # bob is no member yet
        assert http(d, "POST", "/api/queues/sales/members", "operator", {"agent": "bob"})[0] == 403
        code, _, body = http(d, "POST", "/api/queues/sales/members", "supervisor", {"agent": "bob", "tier": 1})
        assert code == 200, body
        inc = await bob.wait(p.Incoming, timeout=5)  # no restart: the caller already waiting reaches bob
        bob.send(p.Answer(leg=inc.leg))
        await bob.wait(p.CallState, lambda m: m.leg == inc.leg and m.state == "confirmed")
        wait_agent(d, "bob", "on-call")
        code, _, body = http(d, "POST", "/api/queues/sales/members", "supervisor", {"agent": "bob"})
        assert code == 400 and b"already a member" in body
        code, _, body = http(d, "POST", "/api/queues/sales/members/bob", "supervisor", {"tier": 2})
        assert code == 200, body
        await caller.hangup(a)
    finally:
        await caller.stop()
        await bob.stop()
    assert members(d) == [{"agent": "alice", "tier": 1, "dynamic": False}, {"agent": "bob", "tier": 2, "dynamic": True}]
    code, _, body = http(d, "GET", "/api/queues/sales/members", "operator")
    assert code == 200 and json.loads(body)["members"][1] == {"agent": "bob", "tier": 2, "dynamic": True}
    assert d.stop() == 0
    d.start()  # the YAML still lists alice alone: the change comes back from the store
    assert members(d) == [{"agent": "alice", "tier": 1, "dynamic": False}, {"agent": "bob", "tier": 2, "dynamic": True}]
    out = cli(d, "queue", "members", "sales")
    assert out.returncode == 0 and "bob" in out.stdout and "dynamic" in out.stdout, out.stdout + out.stderr
    # bad requests are answered with the reason and change nothing
    for method, path, body, why in (
            ("POST", "/api/queues/sales/members", {"agent": "nosuch"}, b"unknown agent 'nosuch'"),
            ("POST", "/api/queues/nosuch/members", {"agent": "bob"}, b"unknown queue 'nosuch'"),
            ("POST", "/api/queues/sales/members", {"agent": "alice", "tier": 10}, b"tier: a whole number 1-9"),
            ("POST", "/api/queues/sales/members/bob", {"tier": 0}, b"tier: a whole number 1-9"),
            ("POST", "/api/queues/sales/members/bob", {"tier": True}, b"tier: a whole number 1-9"),
            ("POST", "/api/queues/sales/members/bob", {"tier": 3, "x": 1}, b"fields: tier"),
            ("POST", "/api/queues/sales/members", {"agent": ["bob"]}, b"agent:"),
            ("POST", "/api/queues/sales/members", b"[" * 5000, b"body:"),
            ("DELETE", "/api/queues/sales/members/carol", None, b"unknown agent 'carol'"),
            ("POST", "/api/reload", {"drain": "everything"}, b"drain:")):
        code, _, answer = http(d, method, path, "admin", body)
        assert code == 400 and why in answer, (path, body, code, answer)
    assert http(d, "DELETE", "/api/queues/sales/members/bob", None)[0] == 401
    out = cli(d, "queue", "add", "sales", "nosuch")
    assert out.returncode == 1 and "unknown agent 'nosuch'" in out.stderr, out.stderr
    assert members(d) == [{"agent": "alice", "tier": 1, "dynamic": False}, {"agent": "bob", "tier": 2, "dynamic": True}]
    assert d.proc.poll() is None


async def test_member_removed_on_a_call_keeps_it_and_is_offered_nothing_more_from_that_queue(daemon_factory):
    d = daemon_factory(workers=2, start=False)
    acd_config(d, {"strategy": "linear", "members": ["alice", "bob"]}, agents=("alice", "bob"))
    d.config["workers"]["rtp_ports"] = d.ports.rtp_spare  # the agent phones take base+100..
    d.start()
    alice = await phone_up(d, "alice", 0)
    bob = await phone_up(d, "bob", 1)
    first = await Phone("4500000001", d.ports.caller(5), d.ports.base + 80).start()
    second = await Phone("4500000002", d.ports.caller(6), d.ports.base + 88).start()
    try:
        wait_agent(d, "alice", "available")
        wait_agent(d, "bob", "available")
        a1 = await first.call(f"sip:500@{d.edge}")
        inc = await alice.wait(p.Incoming, timeout=5)  # linear: alice first
        alice.send(p.Answer(leg=inc.leg))
        await alice.wait(p.CallState, lambda m: m.leg == inc.leg and m.state == "confirmed")
        wait_agent(d, "alice", "on-call")
        out = cli(d, "queue", "remove", "sales", "alice")
        assert out.returncode == 0 and "bob" in out.stdout and "alice" not in out.stdout, out.stdout + out.stderr
        await asyncio.sleep(1.5)
        # she keeps the call in hand
        assert not [m for m in alice.events if isinstance(m, p.CallState) and m.leg == inc.leg
                    and m.state == "disconnected"]
        assert d.status()["agents"]["alice"] == "on-call"
        alice.send(p.Hangup(leg=inc.leg))
        await first.wait(p.CallState, lambda m: m.leg == a1 and m.state == "disconnected", timeout=5)
        wait_agent(d, "alice", "available")
        assert cli(d, "agent", "bob", "--pause", "meeting").returncode == 0
        a2 = await second.call(f"sip:500@{d.edge}")
        await asyncio.sleep(2.0)  # alice is free and logged in, but no longer serves sales
        assert len([m for m in alice.events if isinstance(m, p.Incoming)]) == 1
        assert cli(d, "agent", "bob", "--unpause").returncode == 0
        inc2 = await bob.wait(p.Incoming, timeout=5)
        bob.send(p.Answer(leg=inc2.leg))
        await bob.wait(p.CallState, lambda m: m.leg == inc2.leg and m.state == "confirmed")
        await _bridged(d, "bob")
        await second.hangup(a2)
    finally:
        for ph in (first, second, alice, bob):
            await ph.stop()
    rows = d.wait_calls_ended(2)
    assert [(r["agent"], r["disposition"]) for r in rows] == [("alice", "completed"), ("bob", "completed")]
    assert ("NONE", "sales", "alice", "") in queue_rows(d, "REMOVEMEMBER")


async def test_reload_gives_new_callers_the_new_strategy_and_timeout_while_a_waiting_caller_keeps_the_old(daemon_factory):
    d = daemon_factory(workers=2, start=False)
    acd_config(d, {"strategy": "linear", "ring_timeout": 3, "retry": 30, "members": ["alice", "bob", "carol"]},
               agents=("alice", "bob", "carol"))
    d.config["workers"]["rtp_ports"] = d.ports.rtp_spare
    d.start()
    phones = [await phone_up(d, n, i) for i, n in enumerate(("alice", "bob", "carol"))]
    first = await Phone("4500000001", d.ports.caller(6), d.ports.base + 80).start()
    second = await Phone("4500000002", d.ports.caller(7), d.ports.base + 88).start()
    try:
        for n in ("alice", "bob", "carol"):
            wait_agent(d, n, "available")
        a1 = await first.call(f"sip:500@{d.edge}")
        await phones[0].wait(p.Incoming, timeout=5)  # linear: alice alone rings, nobody answers
        d.config["queues"]["sales"].update({"strategy": "ring-all", "ring_timeout": 8})
        d.write_config()
        out = cli(d, "reload")
        assert out.returncode == 0 and "queues" in out.stdout, out.stdout + out.stderr
        a2 = await second.call(f"sip:500@{d.edge}")
        await phones[1].wait(p.Incoming, timeout=5)
        await phones[2].wait(p.Incoming, timeout=5)
        await asyncio.sleep(9.0)  # both rings run out, each on its own timeout
        await first.hangup(a1)
        await second.hangup(a2)
    finally:
        for ph in (first, second, *phones):
            await ph.stop()
    rows = d.wait_calls_ended(2)
    c1, c2 = rows[0]["call_id"], rows[1]["call_id"]
    assert offered(d)[:2] == [(c1, ["alice"]), (c2, ["bob", "carol"])], offered(d)
    ends = {(c, a): ms for c, a, ms in ring_ends(d)}
    assert 2500 <= ends[(c1, "alice")] <= 4000, ends  # the old caller: 3 s, as when it entered
    assert 7500 <= ends[(c2, "bob")] <= 9000 and 7500 <= ends[(c2, "carol")] <= 9000, ends


async def test_removing_a_queue_with_a_caller_waiting_is_refused_then_drained_to_a_named_queue(daemon_factory):
    d = daemon_factory(workers=1, start=False)
    acd_config(d, {"strategy": "linear", "members": ["alice"]}, agents=("alice",))
    d.config["queues"]["support"] = {"moh": "hold", "members": ["alice"]}
    d.config["flows"]["help"] = [{"queue": "support"}, "hangup"]
    d.config["entry_points"].append({"number": "600", "flow": "help"})
    d.start()
    caller = await Phone("4511223344", d.ports.caller(1), d.ports.base + 90).start()
    alice = None
    try:
        a = await caller.call(f"sip:600@{d.edge}")  # nobody logged in: the caller waits in support
        await asyncio.sleep(0.5)
        del d.config["queues"]["support"]
        d.config["flows"]["help"] = [{"queue": "sales"}, "hangup"]
        d.write_config()
        out = cli(d, "reload")
        assert out.returncode == 1, out.stdout + out.stderr
        assert "queue 'support' is removed but 1 caller wait in it" in out.stderr, out.stderr
        line = next(i for i, t in enumerate(d.config_path.read_text().splitlines(), 1) if t.startswith("queues:"))
        assert out.stderr.startswith(f"{d.config_path}:{line}:1: queues: "), out.stderr  # file:line of the section
        assert "nothing changed" in out.stderr
        st = d.status()
        assert st["queues"]["support"]["waiting"] == 1 and "support" in st["queues"]
        out = cli(d, "reload", "--drain", "support=nosuch")
        assert out.returncode == 1 and "'nosuch' is not a queue of the new config" in out.stderr, out.stderr
        out = cli(d, "reload", "--drain", "support=sales")
        assert out.returncode == 0 and "drained: the callers of queue support went to sales" in out.stdout, out.stdout
        st = d.status()
        assert "support" not in st["queues"] and st["queues"]["sales"]["waiting"] == 1
        alice = await phone_up(d, "alice", 0)
        inc = await alice.wait(p.Incoming, timeout=5)  # the drained caller reaches sales' agent
        alice.send(p.Answer(leg=inc.leg))
        await alice.wait(p.CallState, lambda m: m.leg == inc.leg and m.state == "confirmed")
        await _bridged(d, "alice")
        await caller.hangup(a)
    finally:
        await caller.stop()
        if alice is not None:
            await alice.stop()
    row = d.wait_calls_ended(1)[0]
    assert row["queue"] == "sales" and row["agent"] == "alice", row
    con = sqlite3.connect(d.db_path)
    events = [(r[0], r[1]) for r in con.execute("SELECT queue, event FROM queue_log WHERE call_id=? ORDER BY id",
                                                (row["call_id"],))]
    con.close()
    assert events[:4] == [("support", "ENTERQUEUE"), ("support", "TRANSFER"), ("sales", "ENTERQUEUE"),
                          ("sales", "CONNECT")], events


async def test_broken_reload_changes_no_agent_or_queue_and_names_file_and_line(daemon_factory):
    d = daemon_factory(workers=1, start=False)
    acd_config(d, {"strategy": "linear", "members": ["alice"]}, agents=("alice",))
    d.start()
    d.config["agents"]["bob"] = {"softphone": {"username": "bob", "password": "bob-secret"}}
    d.config["queues"]["sales"]["members"] = ["alice", "bob"]
    d.config["queues"]["sales"]["ring_timeout"] = 0  # out of range
    d.write_config()
    line = next(i for i, t in enumerate(d.config_path.read_text().splitlines(), 1) if "ring_timeout" in t)
    out = cli(d, "reload")
    assert out.returncode == 1, out.stdout + out.stderr
    assert f"{d.config_path}:{line}:" in out.stderr and "ring_timeout" in out.stderr, out.stderr
    st = d.status()
    assert set(st["agents"]) == {"alice"} and members(d) == [{"agent": "alice", "tier": 1, "dynamic": False}]
    bob = await Phone("bob", d.ports.caller(2), d.ports.base + 100).start()
    try:  # the edge does not know bob either: his phone cannot register
        assert not (await register(bob, d, "bob", "bob-secret")).registered
        alice = await phone_up(d, "alice", 1)
        wait_agent(d, "alice", "available")
        await alice.stop()
    finally:
        await bob.stop()
    assert d.proc.poll() is None


async def test_agent_and_mqtt_user_added_by_reload_can_log_in(daemon_factory):
    from tests.helpers.mqtt import Client

    d = daemon_factory(workers=1, start=False)
    acd_config(d, {"strategy": "linear", "members": ["alice"]}, agents=("alice",))
    d.config["mqtt"] = {"embedded": True, "listen": f"127.0.0.1:{d.ports.base + 8}"}
    d.start()
    try:
        Client(d.ports.base + 8, "crm", "crm-secret-1", client_id="crm-1").close()
        raise AssertionError("an MQTT user the config does not have connected")
    except RuntimeError:
        pass
    d.config["mqtt"]["clients"] = [{"username": "crm", "password": "crm-secret-1"}]
    d.config["agents"]["zed"] = {"softphone": {"username": "zed", "password": "zed-secret"},
                                 "mqtt_password": "zed-mqtt-pw"}
    d.config["queues"]["sales"]["members"] = ["alice", "zed"]
    d.write_config()
    out = cli(d, "reload")
    assert out.returncode == 0 and "agents" in out.stdout, out.stdout + out.stderr
    assert "mqtt" not in (out.stdout.split("restart")[-1] if "restart" in out.stdout else "")
    d.wait_event("mqtt.broker_users_reloaded")
    crm = Client(d.ports.base + 8, "crm", "crm-secret-1", client_id="crm-2")
    crm.subscribe("queues/+/stats")
    desk = Client(d.ports.base + 8, "zed", "zed-mqtt-pw", client_id="desk-zed")
    desk.subscribe("agents/zed/state")
    zed = await phone_up(d, "zed", 0)  # the edge learned the new softphone account
    caller = await Phone("4511223344", d.ports.caller(1), d.ports.base + 90).start()
    try:
        wait_agent(d, "zed", "available")
        await desk.until("agents/zed/state", lambda s: s["status"] == "available")
        a = await caller.call(f"sip:500@{d.edge}")
        inc = await zed.wait(p.Incoming, timeout=5)  # a member from the reload takes the call
        zed.send(p.Answer(leg=inc.leg))
        await zed.wait(p.CallState, lambda m: m.leg == inc.leg and m.state == "confirmed")
        await _bridged(d, "zed")
        await caller.hangup(a)
        await crm.until("queues/sales/stats")
    finally:
        crm.close()
        desk.close()
        await caller.stop()
        await zed.stop()
    assert d.status()["mqtt"]["connects"] == 1  # the broker's reload did not drop the controller's link
