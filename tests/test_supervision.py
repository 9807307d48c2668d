"""The daemon supervises every child: a dead Kamailio or mosquitto is noticed and restarted with
nothing of the old one left holding ports; SIGTERM ends everything it started; a daemon killed
with -9 takes its children with it; registrations outlive a restart of the edge (real Kamailio,
real mosquitto, pjsua2 phones, SIPp)."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import time
from pathlib import Path

from ringmaster import protocol as p
from tests.helpers.phone import Phone
from tests.helpers.sipp import run_sipp
from tests.test_acd_calls import acd_config, agents_up


def _ours(folder: Path) -> list[tuple[int, str]]:
    """Processes whose command line names this test's folder (its kamailio, mosquitto, workers)."""
    out = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmd = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        try:
            zombie = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
        except OSError:
            continue
        if str(folder) in cmd and int(entry.name) != os.getpid() and not zombie:
            out.append((int(entry.name), cmd))
    return out


def _group_alive(pgid: int) -> bool:
    from ringmaster.child import group_alive

    return group_alive(pgid)


def _wait(pred, timeout: float, what: str):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = pred()
        if got:
            return got
        time.sleep(0.1)
    raise AssertionError(f"not within {timeout}s: {what}")


def _embedded_mqtt(d) -> None:  # type: ignore[no-untyped-def]
    d.config["mqtt"] = {"embedded": True, "listen": f"127.0.0.1:{d.ports.base + 8}",
                        "clients": [{"username": "crm", "password": "crm-password-1"}]}


def test_killed_edge_is_restarted_without_leftovers_and_sigterm_ends_everything(daemon_factory, tmp_path: Path):
    d = daemon_factory(workers=1, start=False)
    _embedded_mqtt(d)
    d.start()
    old = d.status()["edge"]["pid"]
    os.kill(old, signal.SIGKILL)  # only Kamailio's main process: its 15 children live on
    st = _wait(lambda: (s := d.status()) and s["edge"]["pid"] not in (None, old) and s["edge"]["restarts"] == 1
               and all(w["edge"] == "active" for w in s["workers"]) and s, 15, "edge restarted")
    _wait(lambda: not _group_alive(old), 3, "the dead edge's processes still run (they hold its ports)")
    res = run_sipp("uac_prompt.xml", d.edge, d.ports.caller(0), tmp_path, service="100",
                   rtp_sink=d.ports.sink(), timeout=20)
    assert res.successful == 1, res.output
    assert st["edge"]["pid"] != old
    assert d.events("edge.died")
    # mosquitto too
    broker = next(pid for pid, cmd in _ours(d.dir) if "mosquitto" in cmd)
    os.kill(broker, signal.SIGKILL)
    _wait(lambda: any("mosquitto" in cmd and pid != broker for pid, cmd in _ours(d.dir)), 10, "broker restarted")
    started = time.monotonic()
    assert d.stop() == 0
    assert time.monotonic() - started < 12
    assert _ours(d.dir) == [], "left running after SIGTERM"


def test_a_daemon_killed_with_sigkill_takes_its_children_with_it(daemon_factory):
    d = daemon_factory(workers=2, start=False)
    _embedded_mqtt(d)
    d.start()
    children = _ours(d.dir)
    assert any("kamailio" in c for _, c in children) and any("mosquitto" in c for _, c in children)
    workers = [w["pid"] for w in d.status()["workers"]]
    assert d.proc is not None
    d.proc.kill()
    d.proc.wait()
    _wait(lambda: _ours(d.dir) == [], 10, f"children of the killed daemon still run: {_ours(d.dir)}")
    _wait(lambda: not any(Path(f"/proc/{pid}").exists() for pid in workers), 5, "workers outlived the daemon")
    # and a new start on the same folder finds its ports free
    d.start()
    assert all(w["alive"] for w in d.status()["workers"])


async def test_softphone_registrations_survive_a_restart_of_the_edge(daemon_factory):
    d = daemon_factory(workers=1, start=False)
    acd_config(d, {"strategy": "linear", "members": ["alice"]})
    d.start()
    (alice,) = await agents_up(d, ("alice",))
    caller = await Phone("4511223344", d.ports.caller(1), d.ports.base + 90).start()
    try:
        await asyncio.sleep(6)  # the edge writes registrations back every 5 s
        old = d.status()["edge"]["pid"]
        os.kill(old, signal.SIGKILL)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            st = d.status()
            if st and st["edge"]["pid"] not in (None, old) and all(w["edge"] == "active" for w in st["workers"]):
                break
            await asyncio.sleep(0.2)
        mark = len(alice.events)
        # alice's phone has not registered again (it would only in ~55 s): the edge still knows it
        a = await caller.call(f"sip:500@{d.edge}")
        inc = await alice.wait(p.Incoming, timeout=8, after=mark)
        alice.send(p.Answer(leg=inc.leg))
        await alice.wait(p.MediaReady, lambda m: m.leg == inc.leg)
        # alice's media is ready before her 200 OK reaches the worker: hanging up now raced the
        # connection (0.7 ms apart in a passing run) and left the call abandoned
        await asyncio.to_thread(d.wait_event, "acd.connected")
        regs = [m for m in alice.events[mark:] if isinstance(m, p.RegState)]
        assert regs == [], regs
        await caller.hangup(a)
    finally:
        await caller.stop()
        await alice.stop()
    row = d.wait_calls_ended(1)[0]
    assert row["agent"] == "alice"


def test_nothing_is_left_after_a_clean_stop(daemon_factory):
    d = daemon_factory(workers=2)
    assert d.stop() == 0
    leftovers = _ours(d.dir)
    assert leftovers == [], leftovers
    # the pid file of the edge is gone too (Kamailio removes it on SIGTERM)
    assert not (d.dir / "run" / "edge" / "kamailio.pid").exists()
    out = subprocess.run(["pgrep", "-f", str(d.dir)], capture_output=True, text=True)
    assert out.stdout.strip() == ""


async def test_softphone_registrations_survive_a_restart_of_the_daemon(daemon_factory):
    d = daemon_factory(workers=1, start=False)
    acd_config(d, {"strategy": "linear", "members": ["alice"]})
    d.start()
    (alice,) = await agents_up(d, ("alice",))
    caller = await Phone("4511223344", d.ports.caller(1), d.ports.base + 90).start()
    try:
        assert d.stop() == 0  # a clean stop writes the registrations back
        mark = len(alice.events)
        d.start()
        # the controller learns from the edge's table that alice is reachable, without a REGISTER
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and (d.status() or {}).get("agents", {}).get("alice") != "available":
            await asyncio.sleep(0.2)
        assert d.status()["agents"]["alice"] == "available"
        a = await caller.call(f"sip:500@{d.edge}")
        inc = await alice.wait(p.Incoming, timeout=8, after=mark)
        alice.send(p.Answer(leg=inc.leg))
        await alice.wait(p.MediaReady, lambda m: m.leg == inc.leg)
        assert [m for m in alice.events[mark:] if isinstance(m, p.RegState)] == []
        await caller.hangup(a)
    finally:
        await caller.stop()
        await alice.stop()
