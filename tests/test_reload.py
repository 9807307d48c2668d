"""Reloading the dial plan of a running daemon (real calls): a broken plan is rejected and
the old one keeps answering; a good plan changes the next call, while a caller already in
a menu finishes on the plan the call started with. SIGHUP and `ringmaster reload` agree."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys

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


async def test_reload_naming_a_queue_the_daemon_does_not_run_is_refused(daemon_factory):
    d = daemon_factory(workers=1, start=False)
    ivr_config(d, {"main": [{"play": "vip"}, "hangup"]})
    d.start()
    d.config["agents"] = {"alice": {"mobile": "+4511"}}
    d.config["queues"] = {"late": {"members": ["alice"], "moh": "vip"}}
    d.config["flows"] = {"main": [{"queue": "late"}, "hangup"]}
    d.write_config()
    out = reload_cli(d)
    assert out.returncode == 1 and "queue(s) late are new: restart" in out.stderr, out.stdout + out.stderr
    phone = await Phone("caller", d.ports.caller(0), d.ports.base + 80).start()
    try:
        heard = await call_and_listen(d, phone, [])
    finally:
        await phone.stop()
    assert heard == ["vip"], heard  # the old plan still answers
