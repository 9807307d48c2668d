"""A mobile agent must press 1 to take a queue call (confirm_answer, issue 12 item 5): a carrier's
voicemail that answers and never presses a key is a ring nobody answered (RINGNOANSWER) and the
caller goes on to the next agent; a phone that sends 1 (RFC 4733, SIPp's pcap) is bridged.
Real daemon and edge, a SIPp UAS as the mobile carrier, pjsua2 phones for the caller and alice."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import struct
import subprocess
from pathlib import Path
from typing import Any

import pytest

from ringmaster import protocol as p
from tests.helpers.audio import write_tone
from tests.helpers.phone import Phone
from tests.test_acd_calls import agents_up, wait_agent
from tests.test_leg_slots import wait_slots_free
from tests.test_worker_defence import _stops_cleanly

SCENARIO = Path(__file__).parent / "sipp" / "uas_mobile_confirm.xml"
DTMF_1 = Path("/usr/share/sip-tester/dtmf_2833_1.pcap")
MOBILE = "+4510000001"


def _with_payload_type(src: Path, dst: Path, pt: int) -> Path:
    """SIPp's RFC 4733 pcap with its RTP payload type changed to `pt`: the worker offers
    telephone-event as 120 (pjsua's choice) and an answerer must send what the offer names
    (RFC 3264 6.1), while the pcap carries 101. Ethernet + IPv4 + UDP frames; the UDP checksum is
    zeroed (none, RFC 768), SIPp sends the payloads from its own socket anyway."""
    data = bytearray(src.read_bytes())
    assert struct.unpack("<I", data[:4])[0] == 0xA1B2C3D4 and struct.unpack("<I", data[20:24])[0] == 1
    off = 24
    while off < len(data):
        incl = struct.unpack("<I", data[off + 8:off + 12])[0]
        frame = off + 16
        data[frame + 40:frame + 42] = b"\0\0"
        data[frame + 43] = (data[frame + 43] & 0x80) | pt
        off = frame + incl
    dst.write_bytes(bytes(data))
    return dst


def _rows(d, sql: str, *args: Any) -> list[tuple[Any, ...]]:  # type: ignore[no-untyped-def]
    con = sqlite3.connect(d.db_path)
    try:
        return [tuple(r) for r in con.execute(sql, args)]
    finally:
        con.close()


@pytest.mark.parametrize("presses_1", [False, True])
async def test_mobile_agent_voicemail_is_no_answer_and_a_mobile_that_presses_1_is_bridged(
        daemon_factory, tmp_path: Path, presses_1: bool):
    d = daemon_factory(workers=1, start=False)
    trunk_port = d.ports.caller(5)
    d.config["sip"]["mobile_trunk"] = f"127.0.0.1:{trunk_port}"
    write_tone(d.dir / "prompts" / "hold.wav", 440.0, 3.0)
    write_tone(d.dir / "prompts" / "press-1.wav", 1000.0, 0.5)
    d.config["agents"] = {"m1": {"mobile": MOBILE, "confirm_answer": True},
                          "alice": {"softphone": {"username": "alice", "password": "alice-secret"}}}
    d.config["queues"] = {"sales": {"moh": "hold", "strategy": "linear", "members": ["m1", "alice"],
                                    "confirm_prompt": "press-1", "confirm_timeout": 2, "retry": 0.5}}
    d.config["flows"]["main"] = [{"queue": "sales"}, "hangup"]
    d.config["entry_points"].append({"number": "500", "flow": "main"})
    d.start()
    pcap = _with_payload_type(DTMF_1, tmp_path / "dtmf_1_pt120.pcap", 120)
    press_1 = f'<nop><action><exec play_pcap_audio="{pcap}"/></action></nop>'
    scenario = tmp_path / "uas.xml"
    scenario.write_text(SCENARIO.read_text().replace("[confirm]", (
        '<pause milliseconds="1200"/>' + press_1 + '<pause milliseconds="600"/>') if presses_1 else ""))
    # the mobile carrier: answers the one INVITE for m1
    uas = subprocess.Popen(["sipp", "-sf", str(scenario), "-i", "127.0.0.1", "-p", str(trunk_port),
                            "-mi", "127.0.0.1", "-mp", str(d.ports.base + 170), "-m", "1", "-timeout", "40s",
                            "-nostdin", "-trace_msg"],
                           cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    (alice,) = await agents_up(d, ("alice",))
    caller = await Phone("4511223344", d.ports.caller(1), d.ports.base + 90).start()
    try:
        await asyncio.sleep(0.3)
        a = await caller.call(f"sip:500@{d.edge}")
        if presses_1:
            await asyncio.to_thread(d.wait_event, "acd.connected", 1, 15.0)
            assert d.status()["agents"]["m1"] == "on-call"
            await asyncio.sleep(0.5)
            assert not [m for m in alice.events if isinstance(m, p.Incoming)], "alice rang"
        else:
            # m1's voicemail takes the INVITE and says nothing: after the prompt and 2 s, the
            # leg is hung up and the caller goes on to alice
            inc = await alice.wait(p.Incoming, timeout=15)
            alice.send(p.Answer(leg=inc.leg))
            await alice.wait(p.MediaReady, lambda m: m.leg == inc.leg)
            await asyncio.to_thread(d.wait_event, "acd.connected", 1, 10.0)
            await asyncio.sleep(0.3)
        await caller.hangup(a)
        if not presses_1:
            await alice.wait(p.CallState, lambda m: m.leg == inc.leg and m.state == "disconnected", timeout=5)
        wait_agent(d, "m1", "available", timeout=8)
    finally:
        await caller.stop()
        await alice.stop()
    out, _ = uas.communicate(timeout=45)
    assert uas.returncode == 0, out[-2000:]
    row = d.wait_calls_ended(1)[0]
    qlog = [(ag, ev) for ag, ev in _rows(d, "SELECT agent, event FROM queue_log WHERE call_id=? ORDER BY id",
                                         row["call_id"])]
    confirms = [json.loads(x) for (x,) in _rows(
        d, "SELECT data FROM call_events WHERE call_id=? AND event='CONFIRM' ORDER BY id", row["call_id"])]
    if presses_1:
        assert row["agent"] == "m1" and row["disposition"] == "completed", row
        assert qlog == [("NONE", "ENTERQUEUE"), ("m1", "CONNECT"), ("m1", "COMPLETECALLER")], qlog
        assert [c["result"] for c in confirms] == ["accepted"], confirms
    else:
        assert row["agent"] == "alice" and row["disposition"] == "completed", row
        assert qlog == [("NONE", "ENTERQUEUE"), ("m1", "RINGNOANSWER"), ("alice", "CONNECT"),
                        ("alice", "COMPLETECALLER")], qlog
        assert [(c["agent"], c["result"]) for c in confirms] == [("m1", "timeout")], confirms
    msgs = next(tmp_path.glob("*_messages.log")).read_text()
    assert f"INVITE sip:{MOBILE}@" in msgs and "BYE sip:" in msgs
    wait_slots_free(d, timeout=5)
    _stops_cleanly(d)
