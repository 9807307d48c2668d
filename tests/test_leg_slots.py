"""Call slots of a worker (4 pjsua2 legs per process) are freed whatever the far end does.

Agents are real SIPp UAS processes reached through the mobile trunk (tests/sipp/uas_agent.xml):
they answer after 0.5-1 s and echo RTP. SIPp's UAS, like some desk phones and mobile gateways,
does not copy Record-Route into its 200 OK; before the fix a single worker could not dial an
agent leg from the 3rd or 4th sequential call on (PJ_ETOOMANY) and never recovered.
"""

from __future__ import annotations

import subprocess
import time
from pathlib import Path
from typing import Any

from tests.helpers.daemon import Daemon
from tests.helpers.sipp import agent_scenario, run_sipp


def start_agents(d: Daemon, scenario: Path, port: int) -> subprocess.Popen[bytes]:
    """A SIPp UAS on `port` that plays every mobile agent (the trunk), echoing RTP."""
    log = open(d.dir / f"sipp-agents-{port}.log", "wb")
    return subprocess.Popen(["sipp", "-sf", str(scenario), "-i", "127.0.0.1", "-p", str(port),
                             "-mp", str(port + 2), "-rtp_echo", "-nostdin"],
                            cwd=d.dir, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)


def queue_config(d: Daemon, trunk_port: int, agents: int = 10) -> None:
    d.config["sip"]["mobile_trunk"] = f"127.0.0.1:{trunk_port}"
    d.config["agents"] = {f"ag{i}": {"mobile": f"+4570000{i:03d}"} for i in range(agents)}
    d.config["queues"] = {"sales": {"strategy": "round-robin", "members": list(d.config["agents"]),
                                    "moh": "long"}}
    d.config["flows"]["main"] = [{"queue": "sales"}, "hangup"]
    d.config["entry_points"].append({"number": "500", "flow": "main"})


def worker_legs(d: Daemon) -> list[dict[str, Any]]:
    st = d.status()
    assert st is not None
    return st["workers"]


def wait_slots_free(d: Daemon, timeout: float) -> float:
    """Seconds until every worker's pjsua holds no call slot (the status view of the worker's
    own count); fails after `timeout` with what was last seen."""
    t0 = time.monotonic()
    seen: list[dict[str, Any]] = []
    while time.monotonic() - t0 < timeout:
        seen = worker_legs(d)
        if all(w["slots_used"] == 0 for w in seen):
            return time.monotonic() - t0
        time.sleep(0.2)
    raise AssertionError(f"call slots still taken after {timeout} s: {seen}")


def test_ten_calls_in_a_row_reach_agents_that_omit_record_route(daemon_factory):
    d = daemon_factory(workers=1, start=False)
    trunk = d.ports.caller(20)
    queue_config(d, trunk)
    d.start()
    agents = start_agents(d, agent_scenario(d.dir, copy_record_route=False), trunk)
    try:
        for i in range(10):
            r = run_sipp("uac_hold.xml", d.edge, d.ports.caller(0), d.dir, service="500",
                         hold_ms=1500, timeout=20)
            assert (r.successful, r.failed) == (1, 0), f"call {i + 1}: {r.output}"
        rows = d.wait_calls_ended(10)
        assert [r["disposition"] for r in rows] == ["completed"] * 10
        assert all(r["agent"] for r in rows), [(r["id"], r["agent"]) for r in rows]
        wait_slots_free(d, timeout=5)
        log = d.log_text()
        assert "PJ_ETOOMANY" not in log and "no free call leg" not in log
        assert worker_legs(d)[0]["slots"] == 4
    finally:
        agents.kill()
        agents.wait()


def test_agent_that_never_answers_our_bye_frees_its_slot_within_seconds(daemon_factory):
    d = daemon_factory(workers=1, start=False)
    trunk = d.ports.caller(20)
    queue_config(d, trunk)
    d.start()
    agents = start_agents(d, agent_scenario(d.dir, copy_record_route=False, answer_bye=False), trunk)
    try:
        r = run_sipp("uac_hold.xml", d.edge, d.ports.caller(0), d.dir, service="500", hold_ms=1500, timeout=20)
        assert (r.successful, r.failed) == (1, 0), r.output
        rows = d.wait_calls_ended(1)
        assert rows[0]["agent"] == "ag0"
        # before: the BYE went past the edge to the agent and was retried for 32 s (Timer F)
        waited = wait_slots_free(d, timeout=8)
        assert waited < 8
    finally:
        agents.kill()
        agents.wait()


def test_caller_that_never_acks_our_200_frees_its_slot_within_seconds(daemon_factory):
    d = daemon_factory(workers=1)
    r = run_sipp("uac_no_ack.xml", d.edge, d.ports.caller(0), d.dir, service="200", timeout=15)
    # the caller gets our BYE once the worker gives up waiting for the ACK (RFC 3261 13.3.1.4:
    # after 64*T1 without ACK the UAS ends the dialog); before: 32 s, now SIP_TIMEOUT_MS
    assert (r.successful, r.failed) == (1, 0), r.output
    wait_slots_free(d, timeout=3)
    rows = d.wait_calls_ended(1)
    assert rows[0]["disposition"] != "in_progress"
