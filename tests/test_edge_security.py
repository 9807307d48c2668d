"""Edge security: scanners learn nothing, a flooding source is cut off and banned, and a
trusted trunk's calls keep working meanwhile (real Kamailio, sipvicious, SIPp)."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

from tests.helpers.rtp import RtpSink
from tests.helpers.sipp import run_sipp

BIN = Path(sys.executable).parent


def _scan(tool: str, *args: str) -> str:
    out = subprocess.run([str(BIN / tool), *args], capture_output=True, text=True, timeout=60)
    return out.stdout + out.stderr


def test_svmap_and_svwar_find_nothing_at_the_edge(daemon_factory):
    d = daemon_factory(workers=1)
    port = str(d.ports.edge)
    # the scanners' own socket in this test's port block, on loopback: by default they bind
    # 0.0.0.0:5060 and then report whatever else on the host sends a SIP message there (a
    # worker of a test running beside this one was reported once)
    own = ["-b", "127.0.0.1", "-P", str(d.ports.sink(9))]  # (not a trusted caller port)
    svmap = _scan("sipvicious_svmap", "127.0.0.1", "-p", port, "-t", "0.5", *own)
    assert "127.0.0.1:" + port not in svmap, svmap
    assert "found nothing" in svmap.lower(), svmap
    svwar = _scan("sipvicious_svwar", "-e100-120", "127.0.0.1", "-p", port, "-m", "INVITE", "-t", "0.5", *own)
    assert "found nothing" in svwar.lower() and "noauth" not in svwar and "reqauth" not in svwar, svwar
    # and the scan was seen and dropped, not answered
    assert d.events("edge.scanner_dropped"), d.log_text()[-2000:]


def _options(port: int, src: socket.socket, i: int) -> bytes:
    host, sport = src.getsockname()
    return (f"OPTIONS sip:100@127.0.0.1:{port} SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP {host}:{sport};branch=z9hG4bK{uuid.uuid4().hex}\r\n"
            f"From: <sip:probe@{host}>;tag={i}\r\nTo: <sip:100@127.0.0.1>\r\n"
            f"Call-ID: {uuid.uuid4().hex}\r\nCSeq: {i} OPTIONS\r\nMax-Forwards: 70\r\n"
            f"User-Agent: Polite/1.0\r\nContent-Length: 0\r\n\r\n").encode()


def _flood(edge_port: int, count: int, seconds: float) -> int:
    """Send count requests spread over seconds from one untrusted socket; return replies."""
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", 0))
    s.setblocking(False)
    replies = 0
    gap = seconds / count
    try:
        for i in range(count):
            s.sendto(_options(edge_port, s, i), ("127.0.0.1", edge_port))
            end = time.monotonic() + gap
            while time.monotonic() < end:
                try:
                    s.recv(4096)
                    replies += 1
                except BlockingIOError:
                    time.sleep(0.0005)
        end = time.monotonic() + 0.5
        while time.monotonic() < end:
            try:
                s.recv(4096)
                replies += 1
            except BlockingIOError:
                time.sleep(0.005)
    finally:
        s.close()
    return replies


def test_flood_from_untrusted_source_is_cut_off_while_trusted_caller_still_gets_through(daemon_factory, tmp_path: Path):
    d = daemon_factory(workers=1)
    # 500 requests/s for 1 s from one untrusted socket (the edge answers OPTIONS it lets in)
    replies = _flood(d.ports.edge, 500, 1.0)
    assert replies < 100, f"flood was not cut off: {replies} of 500 answered"
    assert d.events("edge.flood_ban"), d.log_text()[-2000:]
    # the ban holds for the whole IP's untrusted traffic: a fresh polite request gets nothing
    assert _flood(d.ports.edge, 3, 0.3) == 0
    # a trusted trunk on the same host is not affected
    sink = RtpSink(d.ports.sink())
    try:
        res = run_sipp("uac_prompt.xml", d.edge, d.ports.caller(0), tmp_path, service="100", rtp_sink=sink.port,
                       timeout=20)
    finally:
        sink.close()
    assert res.successful == 1, res.output


def test_malformed_sip_gets_400_and_edge_keeps_serving(daemon_factory, tmp_path: Path):
    d = daemon_factory(workers=1)
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", d.ports.caller(2)))
    s.settimeout(2)
    bad = (f"INVITE sip:100@127.0.0.1:{d.ports.edge} SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:{d.ports.caller(2)};branch=z9hG4bKx1\r\n"
           "From: <sip:a@127.0.0.1>;tag=1\r\nTo: <sip:100@127.0.0.1>\r\nCall-ID: bad1\r\nCSeq: abc INVITE\r\n"
           "Max-Forwards: 70\r\nContent-Length: 0\r\n\r\n").encode()
    s.sendto(bad, ("127.0.0.1", d.ports.edge))
    try:
        reply = s.recv(4096).decode(errors="replace")
    except TimeoutError:
        reply = ""
    s.close()
    assert reply.startswith("SIP/2.0 400"), reply or "no reply"
    res = run_sipp("uac_prompt.xml", d.edge, d.ports.caller(0), tmp_path, service="100",
                   rtp_sink=d.ports.sink(), timeout=20)
    assert res.successful == 1, res.output
