"""Outbound trunks (issue 12 item 5): a carrier that challenges INVITEs gets the trunk's
digest credentials from the edge on the legs that leave through it (here a mobile agent's),
once per leg; the numbers a trunk carries are checked by `check`."""

from __future__ import annotations

import asyncio
import re
import subprocess
import time
from pathlib import Path

import pytest
import yaml

from ringmaster.config import load_config
from ringmaster.yamlsource import ConfigInvalid
from tests.helpers.audio import write_tone
from tests.helpers.phone import Phone
from tests.helpers.sipp import SCENARIOS
from tests.test_acd_calls import queue_log


def _mobile_queue(d, trunk_port: int, password: str) -> None:  # type: ignore[no-untyped-def]
    d.config["sip"]["trunks"] = {"carrier": {"address": f"127.0.0.1:{trunk_port}", "username": "acme",
                                             "password": password, "allowed": [r"\+45[0-9]{8}"]}}
    d.config["sip"]["mobile_trunk"] = "carrier"
    write_tone(d.dir / "prompts" / "hold.wav", 440, 3.0)
    d.config["agents"] = {"bob": {"mobile": "+4512345678"}}
    d.config["queues"] = {"sales": {"moh": "hold", "strategy": "linear", "members": ["bob"]}}
    d.config["flows"]["main"] = [{"queue": "sales"}, "hangup"]
    d.config["entry_points"].append({"number": "500", "flow": "main"})


def _carrier(port: int, cwd: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(["sipp", "-sf", str(SCENARIOS / "uas_trunk_auth.xml"), "-i", "127.0.0.1", "-p", str(port),
                             "-m", "1", "-timeout", "25s", "-nostdin", "-trace_msg", "-fd", "1"],
                            cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _received(log: str) -> list[str]:
    """The requests the carrier received, as 'METHOD CSeq-number' plus their header block."""
    return [m.group(1) for m in re.finditer(r"message received \[\d+\] bytes :\n\n(\w+ sip:[^\n]*\n(?:[^\n]+\n)*)", log)]


def _cseq(msg: str) -> int:
    m = re.search(r"^CSeq:\s*(\d+)", msg, re.MULTILINE | re.IGNORECASE)
    assert m, msg
    return int(m.group(1))


async def test_a_challenging_trunk_gets_the_credentials_and_the_mobile_agent_is_connected(daemon_factory, tmp_path: Path):
    d = daemon_factory(workers=1, start=False)
    trunk_port = d.ports.caller(5)
    _mobile_queue(d, trunk_port, "Tr0nk-secret")
    d.start()
    carrier = _carrier(trunk_port, tmp_path)
    caller = await Phone("4511223344", d.ports.caller(1), d.ports.base + 90).start()
    try:
        await asyncio.sleep(0.3)
        a = await caller.call(f"sip:500@{d.edge}")
        deadline = time.monotonic() + 6
        while time.monotonic() < deadline and (d.status() or {}).get("agents", {}).get("bob") != "on-call":
            await asyncio.sleep(0.1)
        assert d.status()["agents"]["bob"] == "on-call"
        await asyncio.sleep(0.5)
        await caller.hangup(a)
    finally:
        await caller.stop()
    out, _ = carrier.communicate(timeout=40)
    assert carrier.returncode == 0, out[-2000:]
    reqs = _received(next(tmp_path.glob("*_messages.log")).read_text())
    invites = [r for r in reqs if r.startswith("INVITE ")]
    assert len(invites) == 2, reqs
    assert "Authorization:" not in invites[0]
    assert re.search(r'\nAuthorization: Digest username="acme", realm="carrier.example"', invites[1]), invites[1]
    assert "Tr0nk-secret" not in "".join(reqs)
    # the retried INVITE has CSeq + 1; the worker's later requests in the dialog are shifted to match
    bye = next(r for r in reqs if r.startswith("BYE "))
    assert _cseq(invites[1]) == _cseq(invites[0]) + 1 and _cseq(bye) > _cseq(invites[1])
    row = d.wait_calls_ended(1)[0]
    assert row["agent"] == "bob"
    assert [e for e, _, _ in queue_log(d, row["call_id"])] == ["ENTERQUEUE", "CONNECT", "COMPLETECALLER"]
    deadline = time.monotonic() + 12  # the controller reads the edge's counters every few seconds
    while time.monotonic() < deadline and d.status()["edge"]["counters"].get("trunk_auth") != 1:
        await asyncio.sleep(0.5)
    assert d.status()["edge"]["counters"]["trunk_auth"] == 1


async def test_wrong_trunk_credentials_are_tried_once_and_the_caller_keeps_waiting(daemon_factory, tmp_path: Path):
    d = daemon_factory(workers=1, start=False)
    trunk_port = d.ports.caller(5)
    _mobile_queue(d, trunk_port, "not-the-password")
    d.start()
    carrier = _carrier(trunk_port, tmp_path)
    caller = await Phone("4511223344", d.ports.caller(1), d.ports.base + 90).start()
    try:
        await asyncio.sleep(0.3)
        a = await caller.call(f"sip:500@{d.edge}")
        await asyncio.sleep(3.0)
        assert d.status()["calls"]["live"] == 1  # still waiting in the queue
        await caller.hangup(a)
    finally:
        await caller.stop()
    out, _ = carrier.communicate(timeout=40)
    reqs = _received(next(tmp_path.glob("*_messages.log")).read_text())
    first_call = re.search(r"^Call-ID:\s*(\S+)", reqs[0], re.MULTILINE | re.IGNORECASE)
    assert first_call
    same = [r for r in reqs if r.startswith("INVITE ") and first_call.group(1) in r]
    assert len(same) == 2, reqs  # the challenge answered once, the 403 not retried
    row = d.wait_calls_ended(1)[0]
    assert row["agent"] in (None, "")
    events = [e for e, _, _ in queue_log(d, row["call_id"])]
    assert events[0] == "ENTERQUEUE" and "CONNECT" not in events and events[-1] == "ABANDON"


BASE = """\
sip:
  listen: 127.0.0.1:25060
  trunks:
    carrier:
      address: 127.0.0.1:25080
      username: acme
      password: s3cret
      allowed: ['\\+45[0-9]{8}']
  mobile_trunk: carrier
agents:
  bob:
    mobile: "+4512345678"
flows:
  demo: [hangup]
entry_points:
  - {number: "100", flow: demo}
"""


@pytest.mark.parametrize("change, where, expected", [
    (("mobile_trunk: carrier", "mobile_trunk: carier"), "sip.yaml:9:", "not a trunk of sip.trunks (did you mean 'carrier'?)"),
    (('mobile: "+4512345678"', 'mobile: "+19005550100"'), "sip.yaml:12:", "+19005550100 is not a number trunk 'carrier' allows"),
    (("      password: s3cret\n", ""), "sip.yaml:5:", "give both username and password"),
    (("allowed: ['\\+45[0-9]{8}']", "allowed: ['(+45']"), "sip.yaml:8:", "pattern '(+45'"),
    (("flows:", "transfer_targets:\n  accounting: {number: '+4533445566', trunk: carier}\nflows:"), "sip.yaml:14:",
     "trunk 'carier' is not one of sip.trunks (did you mean 'carrier'?)"),
    (("flows:", "transfer_targets:\n  premium: {number: '+19005550100', trunk: carrier}\nflows:"), "sip.yaml:14:",
     "+19005550100 is not a number its trunk allows"),
    (("flows:", "transfer_targets:\n  bob: {number: '+4533445566'}\nflows:"), "sip.yaml:14:",
     "also the name of a queue, agent or flow"),
])
def test_check_names_the_place_of_a_bad_trunk(tmp_path: Path, change: tuple[str, str], where: str, expected: str):
    text = BASE.replace(*change)
    assert text != BASE
    (tmp_path / "prompts").mkdir()
    f = tmp_path / "sip.yaml"
    f.write_text(text)
    with pytest.raises(ConfigInvalid) as exc:
        load_config(f)
    errors = [str(e) for e in exc.value.errors]
    assert any(where in e and expected in e for e in errors), errors


def test_a_good_trunk_config_loads_and_the_edge_answers_only_the_trunks_challenge(tmp_path: Path):
    from ringmaster.edge import render

    (tmp_path / "prompts").mkdir()
    f = tmp_path / "sip.yaml"
    f.write_text(BASE)
    cfg = load_config(f)
    assert cfg.sip.mobile_route is not None and cfg.sip.mobile_route.username == "acme"
    text, _ = render(cfg, [])
    route = text.split("failure_route[TRUNKAUTH] {", 1)[1].split("\n}\n", 1)[0]
    assert '$T_rpl($si) != "127.0.0.1" || $T_rpl($sp) != 25080' in route and 'uac_auth()' in route
    assert yaml.safe_load(BASE)["sip"]["trunks"]["carrier"]["password"] in route


def test_check_warns_of_a_mobile_agent_without_trunk_and_of_ring_all_behind_a_challenging_trunk(tmp_path: Path):
    from ringmaster.config import trunk_warnings

    (tmp_path / "prompts").mkdir()
    write_tone(tmp_path / "prompts" / "please-hold.wav", 440, 1.0)
    f = tmp_path / "sip.yaml"
    f.write_text(BASE.replace("mobile_trunk: carrier", "mobile_trunk: ''"))
    assert trunk_warnings(load_config(f)) == [
        "agent 'bob' has a mobile number but no sip.mobile_trunk is set: offers to it fail"]
    f.write_text(BASE + "queues:\n  sales: {strategy: ring-all, members: [bob]}\n")
    (warning,) = trunk_warnings(load_config(f))
    assert "queue 'sales' rings all, with mobile agents" in warning
    f.write_text(BASE + "queues:\n  sales: {strategy: linear, members: [bob]}\n")
    assert trunk_warnings(load_config(f)) == []
