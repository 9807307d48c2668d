"""Reloading the dial plan of a running daemon (real calls): a broken plan is rejected and
the old one keeps answering; a good plan changes the next call, while a caller already in
a menu finishes on the plan the call started with. SIGHUP and `ringmaster reload` agree."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys

from ringmaster import protocol as p
from tests.helpers.phone import Phone
from tests.test_ivr_calls import MAIN, call_and_listen, ivr_config

CLI = [sys.executable, "-m", "ringmaster.cli"]


def reload_cli(d) -> subprocess.CompletedProcess[str]:  # type: ignore[no-untyped-def]
    return subprocess.run(CLI + ["reload", "-c", str(d.config_path)], capture_output=True, text=True, timeout=30)


async def test_good_reload_changes_next_call_while_call_in_menu_finishes_on_old_plan(daemon_factory):
    d = daemon_factory(workers=1, start=False)
    ivr_config(d, MAIN)
    d.start()
    first = await Phone("first", d.ports.caller(0), d.ports.base + 80).start()
    second = await Phone("second", d.ports.caller(1), d.ports.base + 90).start()
    try:
        in_menu = asyncio.create_task(call_and_listen(d, first, [(3.0, "1")]))
        await asyncio.sleep(1.0)  # the first caller is hearing the old menu
        d.config["flows"] = {"main": [{"play": "vip"}, "hangup"]}
        d.write_config()
        out = reload_cli(d)
        assert out.returncode == 0 and "reloaded" in out.stdout, out.stdout + out.stderr
        heard_new = await call_and_listen(d, second, [])
        heard_old = await in_menu
    finally:
        await first.stop()
        await second.stop()
    assert heard_old == ["menu", "sales"], heard_old  # finished on the plan it started with
    assert heard_new == ["vip"], heard_new


async def test_broken_reload_is_rejected_with_positions_and_old_plan_keeps_answering(daemon_factory):
    d = daemon_factory(workers=1, start=False)
    ivr_config(d, {"main": [{"play": "vip"}, "hangup"]})
    d.start()
    good = d.config_path.read_text()
    d.config_path.write_text(good.replace("- hangup", "- hangpu").replace("play: vip", "play: nosuch"))
    out = reload_cli(d)
    assert out.returncode == 1
    assert f"{d.config_path}:" in out.stderr and "unknown step type 'hangpu'" in out.stderr, out.stderr
    assert "prompt file not found" in out.stderr and "previous plan stays live" in out.stderr
    assert d.events("reload.rejected") and any("hangpu" in e["error"] for e in d.events("reload.error"))
    # YAML that does not even parse: same answer
    d.config_path.write_text(good + "\nflows: [\n")
    assert reload_cli(d).returncode == 1
    phone = await Phone("caller", d.ports.caller(0), d.ports.base + 80).start()
    try:
        heard = await call_and_listen(d, phone, [])
    finally:
        await phone.stop()
    assert heard == ["vip"], heard
    assert d.proc.poll() is None


async def test_sighup_reloads_a_good_plan(daemon_factory):
    d = daemon_factory(workers=1, start=False)
    ivr_config(d, {"main": [{"play": "vip"}, "hangup"]})
    d.start()
    d.config["flows"] = {"main": [{"play": "bye"}, "hangup"]}
    d.write_config()
    d.proc.send_signal(signal.SIGHUP)
    d.wait_event("reload.applied")
    phone = await Phone("caller", d.ports.caller(0), d.ports.base + 80).start()
    try:
        heard = await call_and_listen(d, phone, [])
    finally:
        await phone.stop()
    assert heard == ["bye"], heard


async def test_reload_adding_queues_to_a_daemon_started_without_any_is_refused(daemon_factory):
    d = daemon_factory(workers=1, start=False)
    ivr_config(d, {"main": [{"play": "vip"}, "hangup"]})
    d.start()
    d.config["agents"] = {"alice": {"mobile": "+4511"}}
    d.config["queues"] = {"late": {"members": ["alice"], "moh": "vip"}}
    d.config["flows"] = {"main": [{"queue": "late"}, "hangup"]}
    d.write_config()
    out = reload_cli(d)
    # a daemon started without queues runs no ACD: its agents and queues come with a restart
    assert out.returncode == 1 and "started without queues: restart" in out.stderr, out.stdout + out.stderr
    phone = await Phone("caller", d.ports.caller(0), d.ports.base + 80).start()
    try:
        heard = await call_and_listen(d, phone, [])
    finally:
        await phone.stop()
    assert heard == ["vip"], heard  # the old plan still answers


async def test_reload_keeps_queued_callers_in_their_place(daemon_factory):
    from tests.test_acd_calls import acd_config, queue_log, register, wait_agent

    d = daemon_factory(workers=2, start=False)
    acd_config(d, {"strategy": "linear", "members": ["alice"]})
    d.start()
    first = await Phone("4500000001", d.ports.caller(1), d.ports.base + 80).start()
    second = await Phone("4500000002", d.ports.caller(2), d.ports.base + 96).start()
    agent = await Phone("alice", d.ports.caller(3), d.ports.base + 112).start()
    try:
        a1 = await first.call(f"sip:500@{d.edge}")   # nobody to answer yet: both wait in line
        await asyncio.sleep(0.2)
        a2 = await second.call(f"sip:500@{d.edge}")
        d.config["flows"]["demo"] = [{"play": "other"}, "hangup"]  # a change elsewhere in the plan
        d.write_config()
        out = reload_cli(d)
        assert out.returncode == 0, out.stderr
        assert d.status()["queues"]["sales"]["waiting"] == 2
        assert (await register(agent, d, "alice", "alice-secret")).registered
        inc = await agent.wait(p.Incoming, timeout=5)
        assert dict(inc.headers)["X-Ringmaster-Var-caller"] == "4500000001"  # the first in line first
        agent.send(p.Answer(leg=inc.leg))
        await agent.wait(p.CallState, lambda m: m.leg == inc.leg and m.state == "confirmed")
        wait_agent(d, "alice", "on-call")
        await first.hangup(a1)
        await second.hangup(a2)
    finally:
        for ph in (first, second, agent):
            await ph.stop()
    events = [e for e, _, _ in queue_log(d) if e in ("ENTERQUEUE", "CONNECT", "ABANDON")]
    assert events == ["ENTERQUEUE", "ENTERQUEUE", "CONNECT", "ABANDON"], events  # nobody re-entered
