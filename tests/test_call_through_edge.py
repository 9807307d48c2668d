"""A caller through the Kamailio edge reaches a pjsua2 worker, hears the flow, and leaves a
complete call record (real SIPp, real Kamailio, real workers, real SQLite)."""

from __future__ import annotations

import re
import subprocess
import time
from pathlib import Path

import pytest

from tests.helpers.audio import TONES_TOL, dominant_frequencies, has_tone
from tests.helpers.daemon import TONES
from tests.helpers.rtp import RtpSink
from tests.helpers.sipp import refused_scenario, run_sipp, sipp_args


def test_sipp_caller_hears_welcome_prompt_then_gets_bye_and_call_row_is_complete(daemon_factory, tmp_path: Path):
    d = daemon_factory(workers=2)
    sink = RtpSink(d.ports.sink())
    try:
        t0 = time.time()
        res = run_sipp("uac_prompt.xml", d.edge, d.ports.caller(), tmp_path, service="100",
                       caller="4511223344", rtp_sink=sink.port, timeout=20)
    finally:
        sink.close()
    assert res.successful == 1 and res.failed == 0, res.output
    heard = sink.audio()
    assert len(heard) >= 8000, f"only {len(heard)} samples of audio received"
    assert has_tone(heard, TONES["welcome"], tol=TONES_TOL), dominant_frequencies(heard)
    assert not has_tone(heard, TONES["other"], tol=TONES_TOL)

    rows = d.wait_calls_ended(1)
    row = rows[0]
    assert row["caller"] == "4511223344"
    assert row["called"] == "100"
    assert row["flow"] == "demo"
    assert row["worker"] in ("w1", "w2")
    assert row["disposition"] == "completed"
    assert row["hangup_by"] == "ringmaster" and row["hangup_cause"] == "flow_end" or row["hangup_cause"] == "flow_hangup"
    assert t0 <= row["arrived_at"] <= row["answered_at"] <= row["ended_at"] <= time.time()
    assert row["ended_at"] - row["answered_at"] >= 1.4  # the 1.5 s prompt was played out
    assert row["sip_call_id"]


def test_call_to_unknown_number_is_refused_at_the_edge_with_404(daemon_factory, tmp_path: Path):
    # the edge knows the plan's entry points: a number no entry point routes never costs a
    # worker its media sockets (unknown_number.reject gives the code)
    d = daemon_factory(workers=1)
    res = run_sipp(refused_scenario(404, tmp_path), d.edge, d.ports.caller(), tmp_path, service="999", timeout=10)
    assert res.successful == 1, res.output
    assert "number=999" in d.wait_event("edge.unknown_number")[0]["detail"]
    time.sleep(0.3)
    assert d.calls() == [] and not d.events("call.no_route")


def test_untrusted_source_gets_403_and_reaches_no_worker(daemon_factory, tmp_path: Path):
    d = daemon_factory(workers=1)
    # port caller(20) is outside the trusted list the test config builds (caller(0..9))
    res = run_sipp(refused_scenario(403, tmp_path), d.edge, d.ports.caller(20), tmp_path, service="100", timeout=10)
    assert res.successful == 1, res.output
    time.sleep(0.3)
    assert d.calls() == []


def _tree(pid: int) -> set[int]:
    out = subprocess.run(["ps", "-e", "-o", "pid=,ppid="], capture_output=True, text=True).stdout
    children: dict[int, list[int]] = {}
    for line in out.splitlines():
        c, parent = (int(x) for x in line.split())
        children.setdefault(parent, []).append(c)
    seen, todo = set(), [pid]
    while todo:
        p = todo.pop()
        seen.add(p)
        todo += children.get(p, [])
    return seen


def test_every_socket_of_the_daemon_binds_the_configured_loopback_address_during_a_call(daemon_factory, tmp_path: Path):
    d = daemon_factory(workers=2)
    held = subprocess.Popen(sipp_args("uac_hold.xml", d.edge, d.ports.caller(0), service="200", calls=2, rate=20,
                                      hold_ms=3000, rtp_sink=d.ports.sink(), timeout=20),
                            cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and (d.status() or {}).get("calls", {}).get("live") != 2:
            time.sleep(0.1)
        pids = _tree(d.proc.pid)
        sockets = []
        for line in subprocess.run(["ss", "-ntupaH"], capture_output=True, text=True).stdout.splitlines():
            owners = {int(m) for m in re.findall(r"pid=(\d+)", line)}
            if owners & pids:
                sockets.append(line.split()[4])  # local address:port
    finally:
        held.communicate(timeout=30)
    assert len(sockets) >= 2 + 2 + 2 * 2, sockets  # edge udp+tcp, 2 workers' SIP, RTP+RTCP per call
    assert all(s.startswith("127.0.0.1:") for s in sockets), sockets
    lo, hi = (int(x) for x in d.ports.rtp.split("-"))
    rtp = [int(s.rsplit(":", 1)[1]) for s in sockets if lo <= int(s.rsplit(":", 1)[1]) <= hi]
    assert len(rtp) >= 4, sockets  # media ports come from the configured range


def test_a_call_hung_up_before_the_callers_ack_gets_one_bye(daemon_factory, tmp_path: Path):
    """A flow that answers and hangs up at once asks for the BYE before the caller's ACK is in.
    pjsip holds that BYE until the ACK (its issue 1712) and pjsua, seeing the call confirmed
    while hanging up, sends another one (pjsua_call.c, the CANCEL/200 crossover case): two
    BYEs, the second answered 481 by real phones (finding 95). The worker waits for the ACK."""
    d = daemon_factory(workers=2, start=False)
    d.config["flows"]["quick"] = ["answer", "hangup"]
    d.config["entry_points"].append({"number": "109", "flow": "quick"})
    d.start()
    res = run_sipp("uac_bye_once.xml", d.edge, d.ports.caller(), tmp_path, service="109", calls=10, rate=20,
                   timeout=30)
    assert res.successful == 10 and res.failed == 0, res.output
    rows = d.wait_calls_ended(10)
    assert all(r["disposition"] == "completed" and r["hangup_cause"] == "flow_hangup" for r in rows), rows


@pytest.mark.parametrize("frame_ms", [40, 20])
def test_the_callers_rtp_keeps_20ms_packets_whatever_the_workers_mixing_frame(daemon_factory, tmp_path: Path, frame_ms: int):
    """workers.audio_frame_ptime sets how much audio the worker's conference bridge mixes per
    tick; the RTP a caller gets keeps the negotiated 20 ms ptime: 160-byte PCMU payloads whose
    timestamps step by 160, about 50 a second, and the prompt still sounds right."""
    d = daemon_factory(workers=1, start=False)
    d.config["workers"]["audio_frame_ptime"] = frame_ms
    d.start()
    sink = RtpSink(d.ports.sink())
    try:
        res = run_sipp("uac_prompt.xml", d.edge, d.ports.caller(), tmp_path, service="100",
                       rtp_sink=sink.port, timeout=20)
    finally:
        sink.close()
    assert res.successful == 1, res.output
    ssrc = max(sink.timing, key=lambda s: len(sink.timing[s]))
    packets = sink.timing[ssrc]
    assert len(packets) >= 60, len(packets)
    assert all(pk.payload == 160 for pk in packets), sorted({pk.payload for pk in packets})
    steps = [b.timestamp - a.timestamp for a, b in zip(packets, packets[1:], strict=False)]
    assert sum(step == 160 for step in steps) >= 0.95 * len(steps), sorted(set(steps))
    per_second = (len(packets) - 1) / (packets[-1].arrived - packets[0].arrived)
    assert 45 <= per_second <= 55, per_second
    heard = sink.audio(ssrc)
    assert has_tone(heard, TONES["welcome"], tol=TONES_TOL), dominant_frequencies(heard)
